"""Tiny random models of the real transformers classes (GPT-2, BERT, Llama, Qwen2, Gemma-3),
built in code with the word tokenizer of :mod:`amig_plugin.testing.tokenizers`; ``sharpen``
gives their norms gains ~1 so single neurons move P(target)."""

from __future__ import annotations

from pathlib import Path

import torch

from amig_plugin.testing.tokenizers import fact_words as _fact_words
from amig_plugin.testing.tokenizers import word_tokenizer


def _init(model, seed):
    torch.manual_seed(seed)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def tiny_gpt2(vocab_size: int, seed: int = 0, layers: int = 3, width: int = 32, ffn: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=width, n_layer=layers, n_head=2,
                     n_inner=ffn, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return _init(GPT2LMHeadModel(cfg), seed)


def tiny_bert(vocab_size: int, seed: int = 0, layers: int = 3, width: int = 32, ffn: int = 64):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=ffn, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return _init(BertForMaskedLM(cfg), seed)


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 3, width: int = 32, ffn: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return _init(LlamaForCausalLM(cfg), seed)


def tiny_qwen2(vocab_size: int, seed: int = 0, layers: int = 3, width: int = 32, ffn: int = 64):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return _init(Qwen2ForCausalLM(cfg), seed)


def tiny_gemma3(vocab_size: int, seed: int = 0, layers: int = 3, width: int = 32, ffn: int = 64):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                           sliding_window=4, query_pre_attn_scalar=16)
    return _init(Gemma3ForCausalLM(cfg), seed)


BUILDERS = {"gpt2": tiny_gpt2, "bert": tiny_bert, "llama": tiny_llama, "qwen2": tiny_qwen2, "gemma3": tiny_gemma3}


def tiny(kind: str, seed: int = 0, fact_words: bool = False, **kw):
    """(model, tokenizer) of a tiny random model of the real class ``kind``; ``fact_words``:
    the vocabulary also holds the shipped facts' objects (for runs over the shipped facts)."""
    tok = word_tokenizer(causal=kind != "bert", extra=_fact_words() if fact_words else ())
    return BUILDERS[kind](len(tok), seed=seed, **kw), tok


def sharpen(model, seed: int = 0):
    """Give LayerNorm/RMSNorm gains ~1 (the tiny init draws them ~N(0, 0.05), which makes the
    model an almost uniform predictor whose single neurons barely move P). Gemma's norms use
    (1 + weight) and are already ~1: left alone. In place; returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            name = type(m).__name__
            if (name.endswith("LayerNorm") or name.endswith("RMSNorm")) and not name.startswith("Gemma"):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(1.0 + 0.05 * torch.randn(m.weight.shape, generator=g))
    return model


def tiny_sharp(kind: str, seed: int = 0, **kw):
    """:func:`tiny` with :func:`sharpen` applied."""
    model, tok = tiny(kind, seed=seed, **kw)
    return sharpen(model, seed=seed), tok


def save_tiny(folder: Path, kind: str = "gpt2", seed: int = 0, **kw) -> Path:
    """:func:`tiny_sharp` saved with ``save_pretrained`` (model and tokenizer) into ``folder``,
    loadable by :func:`amig_plugin.loading.load_model` and the ``--model`` option. Returns ``folder``."""
    model, tok = tiny_sharp(kind, seed=seed, **kw)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def weights_copy(model) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state dict (to check later that nothing changed)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    """Two :func:`weights_copy` results hold the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

