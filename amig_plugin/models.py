"""Model families: where the knowledge neurons are, which position is attributed, how a
target is encoded and scored.

A *knowledge neuron* is one unit of an FFN's hidden vector at one position: the vector that
the FFN's output projection consumes.

==================  ==========================================  ==========================
family              neuron vector = input of                    attributed position
==================  ==========================================  ==========================
BERT / m-BERT       ``bert.encoder.layer[l].output.dense``       the (first) ``[MASK]``
GPT-2 / mGPT        ``transformer.h[l].mlp.c_proj``              last prompt token
gated-MLP decoders  ``model.layers[l].mlp.down_proj``            last prompt token
(Llama, Qwen2/3, Gemma/2/3, Mistral)  i.e. ``act(gate(h)) * up(h)``
==================  ==========================================  ==========================

Families are found from the loaded model's class (``isinstance``), never from name
substrings. An unsupported class raises :class:`UnsupportedModelError` naming it and the
supported ones.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from .data import MASK_PLACEHOLDER, causal_cloze, causal_prompt_and_target, normalize_text, split_prompt_at_mask
from .scoring import LMHead
from .errors import AmigError

NeuronSite = Literal["ffn_hidden", "ffn_pre_activation"]


class UnsupportedModelError(AmigError, TypeError):
    """The model's architecture has no knowledge-neuron adapter."""


class QueryError(AmigError, ValueError):
    """A prompt/target pair cannot be turned into a query (no mask, empty target, ...)."""


class PromptTooLongError(QueryError):
    """A query with more tokens than the model has positions."""


@dataclass
class EncodedQuery:
    """One prompt + target, tokenized for one model.

    input_ids:        LongTensor [n] — what the model reads (causal: prompt + target[:-1],
                      teacher-forced; masked: prompt with one ``[MASK]`` per target token).
    target_position:  index in ``input_ids`` whose FFN neuron vector is attributed/edited.
    target_ids:       LongTensor [T] — gold target tokens.
    score_positions:  LongTensor [T] — position whose logits predict ``target_ids[k]``.
    baseline_positions: LongTensor [n'] — prompt tokens that AMIG replaces one at a time
                      by the baseline token (special tokens and the masks excluded).
    """

    input_ids: torch.Tensor
    target_position: int
    target_ids: torch.Tensor
    score_positions: torch.Tensor
    baseline_positions: torch.Tensor
    prompt: str = ""
    target: str = ""

    @property
    def num_target_tokens(self) -> int:
        return int(self.target_ids.numel())


def causal_prefix_and_target(prompt: str, target: str) -> tuple[str, str]:
    """(prefix, target text) for a causal LM: a prompt with ``<mask>`` is cut there
    (:func:`amig_plugin.data.causal_prompt_and_target`); one without is continued by the
    target as if it ended in ``" <mask>"`` (:func:`amig_plugin.data.causal_cloze`: one space
    before the target, none after Chinese/Japanese text or existing whitespace)."""
    return causal_prompt_and_target(causal_cloze(prompt), target)


def _check_target(target: str) -> None:
    if not isinstance(target, str) or not target.strip():
        raise QueryError(f"target {target!r} is empty; give the object as a non-empty string, e.g. 'Paris'")


@dataclass(frozen=True)
class FFNJoin:
    """How block ``l`` ends, for rows that join it at its neuron site: the block's output is

        out = r + tail(ffn(·))      r = the residual stream entering the FFN's norm

    ``ffn`` is the FFN module (its output before ``tail``), ``residual_input_of`` the module
    whose input is ``r``. The engine checks this identity on the clean pass before using it."""

    ffn: nn.Module
    residual_input_of: nn.Module
    tail: Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class ModelFamily:
    """Adapter base class. Subclasses set ``name``, ``kind`` and implement the hooks."""

    name: str = "base"
    kind: Literal["masked", "causal"] = "causal"

    def __init__(self, model: nn.Module, neuron_site: NeuronSite = "ffn_hidden"):
        self.model = model
        if neuron_site not in ("ffn_hidden", "ffn_pre_activation"):
            raise ValueError(f"unknown neuron_site {neuron_site!r}; use 'ffn_hidden' (default) or 'ffn_pre_activation'")
        self.neuron_site = neuron_site

    # -- structure -----------------------------------------------------------------------
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.blocks())

    @property
    def ffn_width(self) -> int:
        proj = self.output_projection(0)
        weight = proj.weight
        # nn.Linear: [out, in]; GPT-2 Conv1D: [in, out]
        return int(weight.shape[0] if type(proj).__name__ == "Conv1D" else weight.shape[1])

    def output_projection(self, layer: int) -> nn.Module:
        """The FFN output projection whose input is the neuron vector of ``layer``."""
        raise NotImplementedError

    def neuron_hook_module(self, layer: int) -> tuple[nn.Module, Literal["input", "output"]]:
        """Module and side where the neuron vector is read/replaced."""
        if self.neuron_site != "ffn_hidden":
            raise ValueError(f"neuron_site {self.neuron_site!r} is not available for {self.name}")
        return self.output_projection(layer), "input"

    def value_vectors(self, layer: int) -> torch.Tensor:
        """View [ffn_width, hidden] of the output-projection weights: row i = value vector of neuron i."""
        proj = self.output_projection(layer)
        if type(proj).__name__ == "Conv1D":
            return proj.weight  # [in=ffn, out=hidden]
        return proj.weight.T  # nn.Linear weight is [hidden, ffn]

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def body_and_head(self) -> tuple[nn.Module, LMHead] | None:
        """(the network below the LM head, whose output's ``last_hidden_state`` is the final
        normed hidden state; the head) when the logits are exactly a linear map of it, so the
        engine can fold the head into the score (:func:`amig_plugin.scoring.head_scores`);
        None where something else happens to the logits (soft-capping, scaling)."""
        return None

    def ffn_join(self, layer: int) -> FFNJoin | None:
        """Where block ``layer``'s FFN output meets the residual stream (see :class:`FFNJoin`);
        None where the family does not say (the engine then runs whole blocks)."""
        return None

    @contextmanager
    def fused_activations(self) -> Iterator[None]:
        """Inside the ``with``: activation functions written as several elementwise torch ops run
        as one fused kernel computing the same formula (equal to float rounding, ~1e-7
        relative); module hooks still run. Nothing to do for most families."""
        yield

    def check_layer(self, layer: int) -> int:
        try:
            layer = operator.index(layer)  # ints, numpy and torch integers
        except TypeError:
            raise ValueError(f"layer must be an integer, got {layer!r} ({type(layer).__name__})") from None
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer!r} out of range: {self.name} model has layers 0..{self.num_layers - 1}")
        return layer

    # -- queries -------------------------------------------------------------------------
    @property
    def max_positions(self) -> int | None:
        """How many tokens the model can read (its config's ``max_position_embeddings`` or
        ``n_positions``); None when the config names no limit."""
        config = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def _fits(self, query: EncodedQuery) -> EncodedQuery:
        """``query``, or :class:`PromptTooLongError` when it has more tokens than the model has positions."""
        limit, n = self.max_positions, int(query.input_ids.numel())
        if limit is not None and n > limit:
            shown = query.prompt if len(query.prompt) <= 60 else query.prompt[:57] + "..."
            raise PromptTooLongError(f"prompt {shown!r} with target {query.target!r} needs {n} tokens, more than the "
                                     f"{limit} positions of {type(self.model).__name__}; shorten the prompt")
        return query

    def baseline_token_id(self, tokenizer) -> int:
        raise NotImplementedError

    def encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        """The query of ``prompt`` and ``target`` for this model. Both are normalised to
        Unicode NFC first (:func:`amig_plugin.data.normalize_text`): the one place where text
        becomes tokens, so NFC and NFD spellings give the same query bit for bit."""
        return self._encode(tokenizer, normalize_text(prompt), normalize_text(target))

    def _encode(self, tokenizer, prompt: str, target: str) -> EncodedQuery:
        raise NotImplementedError

    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _tokenize_target(tokenizer, target: str) -> list[int]:
    """Token ids of ``target`` (NFC-normalised, no special tokens). Refuses a target that is
    empty or made only of the tokenizer's unknown token: its probability would be that of
    ``[UNK]``, the same for every word the vocabulary lacks."""
    _check_target(target)
    target = normalize_text(target)
    ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if len(ids) == 0:
        raise QueryError(f"target {target!r} tokenizes to no tokens with {type(tokenizer).__name__}; use a different target string")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and all(i == unk for i in ids):
        raise QueryError(f"target {target.strip()!r} is only unknown tokens ({tokenizer.unk_token}) for "
                         f"{type(tokenizer).__name__}: the model cannot tell it from any other unknown word; "
                         "use a target spelled with the model's vocabulary")
    return ids


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


# (transformers class name, family); looked up lazily so older transformers still work.
_SUPPORTED: list[tuple[str, type[ModelFamily]]] = [
    ("BertForMaskedLM", MaskedLMFamily),
    ("GPT2LMHeadModel", GPT2Family),
    ("LlamaForCausalLM", GatedMLPFamily),
    ("MistralForCausalLM", GatedMLPFamily),
    ("Qwen2ForCausalLM", GatedMLPFamily),
    ("Qwen3ForCausalLM", GatedMLPFamily),
    ("GemmaForCausalLM", GatedMLPFamily),
    ("Gemma2ForCausalLM", GatedMLPFamily),
    ("Gemma3ForCausalLM", GatedMLPFamily),
]


def supported_architectures() -> list[str]:
    return [name for name, _ in _SUPPORTED]


def get_family(model: nn.Module, neuron_site: NeuronSite = "ffn_hidden") -> ModelFamily:
    """The adapter for ``model``, chosen by ``isinstance`` against transformers classes."""
    if isinstance(model, ModelFamily):
        return model
    import transformers

    for class_name, family_cls in _SUPPORTED:
        cls = getattr(transformers, class_name, None)
        if cls is not None and isinstance(model, cls):
            family = family_cls(model, neuron_site=neuron_site)
            if family_cls is GatedMLPFamily:
                mlp = family.blocks()[0].mlp
                if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
                    raise UnsupportedModelError(f"{type(model).__name__}'s MLP has no gate_proj/up_proj/down_proj")
            if neuron_site == "ffn_pre_activation" and family_cls is not GPT2Family:
                raise ValueError("neuron_site='ffn_pre_activation' exists only for GPT-2 (EasyEdit-KN comparison)")
            return family
    raise UnsupportedModelError(
        f"unsupported model class {type(model).__name__}; amig-plugin supports: "
        + ", ".join(supported_architectures())
        + ". Load one of these (e.g. AutoModelForMaskedLM for BERT, AutoModelForCausalLM for decoders)."
    )


@dataclass
class _NeuronPatch:
    """Replace/transform the neuron vector at one position of selected batch rows."""

    rows: torch.Tensor | slice
    position: int
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class NeuronHooks:
    """Context manager: install forward (pre-)hooks that edit neuron vectors.

    ``patches[layer]`` is a list of ``_NeuronPatch``; the activation [B, S, W] at that
    layer's neuron site gets ``act[rows, position] = fn(act[rows, position])``. Hooks are
    removed on exit (weights are never touched).
    """

    family: ModelFamily
    patches: dict[int, list[_NeuronPatch]] = field(default_factory=dict)
    capture: dict[int, list[torch.Tensor]] | None = None

    def __enter__(self) -> "NeuronHooks":
        self._handles = []
        layers = set(self.patches) | (set(self.capture) if self.capture is not None else set())
        for layer in sorted(layers):
            module, side = self.family.neuron_hook_module(layer)
            if side == "input":
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(layer)))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _apply(self, layer: int, act: torch.Tensor) -> torch.Tensor:
        if self.capture is not None and layer in self.capture:
            self.capture[layer].append(act)
        patches = self.patches.get(layer)
        if not patches:
            return act
        act = act.clone()
        for patch in patches:
            act[patch.rows, patch.position] = patch.fn(act[patch.rows, patch.position]).to(act.dtype)
        return act

    def _pre_hook(self, layer: int):
        def hook(module, args):
            new = self._apply(layer, args[0])
            return (new,) + tuple(args[1:])

        return hook

    def _post_hook(self, layer: int):
        def hook(module, args, output):
            return self._apply(layer, output)

        return hook
