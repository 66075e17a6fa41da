"""The adapters per architecture: BERT (masked LM), GPT-2, and the gated-MLP decoders (Llama,
Qwen2/3, Gemma/2/3, Mistral); each says where its neurons are and how a query is encoded."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..data import MASK_PLACEHOLDER, split_prompt_at_mask
from ..scoring import LMHead
from .base import FFNJoin, ModelFamily, _identity
from .queries import EncodedQuery, QueryError, _check_target, _tokenize_target, causal_prefix_and_target


class MaskedLMFamily(ModelFamily):
    """BERT / m-BERT (``BertForMaskedLM``)."""

    name = "bert"
    kind = "masked"

    def blocks(self) -> nn.ModuleList:
        return self.model.bert.encoder.layer

    def output_projection(self, layer: int) -> nn.Module:
        return self.blocks()[layer].output.dense

    def mlm_transform_and_head(self) -> tuple[nn.Module, LMHead] | None:
        """(the MLM head's transform, its decoder) when the MLM logits are exactly
        ``decoder(transform(h))`` (transformers' ``BertOnlyMLMHead``), so the engine can fold the
        decoder into the score; None for anything else."""
        from transformers.models.bert.modeling_bert import BertLMPredictionHead, BertOnlyMLMHead

        cls = getattr(self.model, "cls", None)
        if type(cls) is not BertOnlyMLMHead or type(cls.predictions) is not BertLMPredictionHead:
            return None
        head = _linear_head(cls.predictions.decoder)
        return (cls.predictions.transform, head) if head is not None else None

    def baseline_token_id(self, tokenizer) -> int:
        if tokenizer.mask_token_id is None:
            raise QueryError(f"tokenizer {type(tokenizer).__name__} has no mask token; a masked LM needs one")
        return int(tokenizer.mask_token_id)

    def _encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        """``[CLS] left [MASK]*T right [SEP]``; target tokens without special tokens, case kept."""
        target_ids = _tokenize_target(tokenizer, target)
        mask_token = tokenizer.mask_token
        if MASK_PLACEHOLDER in prompt:
            left, right = split_prompt_at_mask(prompt)
        elif mask_token and prompt.count(mask_token) == 1:
            left, right = prompt.split(mask_token)
        else:
            raise QueryError(
                f"masked-LM prompt {prompt!r} has no single mask; put '{MASK_PLACEHOLDER}' "
                f"(or '{mask_token}') exactly once where the target goes"
            )
        mask_id = self.baseline_token_id(tokenizer)
        left_ids = tokenizer(left.rstrip(), add_special_tokens=False)["input_ids"] if left.strip() else []
        right_ids = tokenizer(right.lstrip(), add_special_tokens=False)["input_ids"] if right.strip() else []
        cls_id = tokenizer.cls_token_id
        sep_id = tokenizer.sep_token_id
        head = [cls_id] if cls_id is not None else []
        tail = [sep_id] if sep_id is not None else []
        ids = head + list(left_ids) + [mask_id] * len(target_ids) + list(right_ids) + tail
        first_mask = len(head) + len(left_ids)
        score_positions = list(range(first_mask, first_mask + len(target_ids)))
        prompt_positions = [i for i in range(len(head), len(ids) - len(tail)) if i not in score_positions]
        return self._fits(EncodedQuery(
            input_ids=torch.tensor(ids, dtype=torch.long),
            target_position=first_mask,
            target_ids=torch.tensor(target_ids, dtype=torch.long),
            score_positions=torch.tensor(score_positions, dtype=torch.long),
            baseline_positions=torch.tensor(prompt_positions, dtype=torch.long),
            prompt=prompt,
            target=target,
        ))


class CausalLMFamily(ModelFamily):
    """Shared encoding for auto-regressive models."""

    kind = "causal"

    def baseline_token_id(self, tokenizer) -> int:
        if tokenizer.eos_token_id is None:
            raise QueryError(f"tokenizer {type(tokenizer).__name__} has no EOS token; AMIG's causal baseline needs one")
        eos = tokenizer.eos_token_id
        return int(eos[0] if isinstance(eos, (list, tuple)) else eos)

    def _encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        """prompt (with the tokenizer's BOS if it adds one) + target[:-1], teacher-forced.

        The prompt/target rules (:func:`causal_prefix_and_target`): cut at ``<mask>``, a space
        before the mask moves to the target, no ``<mask>`` = the target after one space
        (none after Chinese/Japanese text), text after the mask dropped with a warning.

        target_position = last prompt token (it predicts target[0]); score_positions =
        target_position + k for k < T.
        """
        _check_target(target)
        prefix, target = causal_prefix_and_target(prompt, target)
        target_ids = _tokenize_target(tokenizer, target)
        prompt_ids = list(tokenizer(prefix, add_special_tokens=True)["input_ids"])
        plain_ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        if not plain_ids:
            raise QueryError(f"prompt {prompt!r} tokenizes to no tokens; give a non-empty prompt")
        # tokens the tokenizer added (BOS, ...) are not part of the prompt: AMIG never masks them
        lead = next((k for k in range(len(prompt_ids) - len(plain_ids) + 1)
                     if prompt_ids[k:k + len(plain_ids)] == plain_ids), 0)
        ids = prompt_ids + target_ids[:-1]
        tp = len(prompt_ids) - 1
        baseline_positions = list(range(lead, lead + len(plain_ids)))
        return self._fits(EncodedQuery(
            input_ids=torch.tensor(ids, dtype=torch.long),
            target_position=tp,
            target_ids=torch.tensor(target_ids, dtype=torch.long),
            score_positions=torch.arange(tp, tp + len(target_ids), dtype=torch.long),
            baseline_positions=torch.tensor(baseline_positions, dtype=torch.long),
            prompt=prompt,
            target=target,
        ))


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


def _linear_head(module) -> LMHead | None:
    return LMHead(module.weight, module.bias) if isinstance(module, nn.Linear) else None


class GPT2Family(CausalLMFamily):
    """GPT-2 / mGPT (``GPT2LMHeadModel``). Neuron = input of ``mlp.c_proj`` (after GELU).

    ``neuron_site="ffn_pre_activation"`` uses the output of ``mlp.c_fc`` (before GELU), the
    hook point of EasyEdit's / EleutherAI's KN, only for comparisons with them.
    """

    name = "gpt2"

    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.h

    def output_projection(self, layer: int) -> nn.Module:
        return self.blocks()[layer].mlp.c_proj

    def neuron_hook_module(self, layer: int):
        if self.neuron_site == "ffn_pre_activation":
            return self.blocks()[layer].mlp.c_fc, "output"
        return self.output_projection(layer), "input"

    def body_and_head(self):
        head = _linear_head(self.model.lm_head)  # GPT2LMHeadModel: logits = lm_head(transformer(...)[0])
        return (self.model.transformer, head) if head is not None else None

    def ffn_join(self, layer: int) -> FFNJoin:
        block = self.blocks()[layer]  # out = r + mlp(ln_2(r))
        return FFNJoin(ffn=block.mlp, residual_input_of=block.ln_2, tail=_identity)

    @contextmanager
    def fused_activations(self) -> Iterator[None]:
        """GPT-2's default ``gelu_new`` (transformers' ``NewGELUActivation``) is
        0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) spelled as six tensor ops forward and more
        backward; ``F.gelu(x, approximate="tanh")`` is the same formula in one kernel."""
        patched = []
        try:
            for block in self.blocks():
                act = getattr(block.mlp, "act", None)
                if type(act).__name__ == "NewGELUActivation" and "forward" not in vars(act):
                    act.forward = _tanh_gelu  # instance attribute: the module's hooks still run
                    patched.append(act)
            yield
        finally:
            for act in patched:
                del act.forward


class GatedMLPFamily(CausalLMFamily):
    """Llama, Qwen2/3, Gemma/2/3, Mistral: neuron = input of ``mlp.down_proj`` = act(gate(h)) * up(h)."""

    name = "gated-mlp"

    def blocks(self) -> nn.ModuleList:
        return self.model.model.layers

    def output_projection(self, layer: int) -> nn.Module:
        return self.blocks()[layer].mlp.down_proj

    def ffn_join(self, layer: int) -> FFNJoin:
        block = self.blocks()[layer]
        # Llama/Qwen/Mistral/Gemma: out = r + mlp(post_attention_layernorm(r));
        # Gemma-2/3 (sandwich norms): out = r + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(r)))
        norm = getattr(block, "pre_feedforward_layernorm", None)
        if norm is None:
            norm = block.post_attention_layernorm
        tail = getattr(block, "post_feedforward_layernorm", None)
        return FFNJoin(ffn=block.mlp, residual_input_of=norm, tail=_identity if tail is None else tail)

    def body_and_head(self):
        config = self.model.config
        if any(getattr(config, name, None) not in (None, 1, 1.0)
               for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
            return None  # Gemma-2's soft-capping and the like: keep the model's own logits
        head = _linear_head(self.model.lm_head)
        return (self.model.model, head) if head is not None else None
