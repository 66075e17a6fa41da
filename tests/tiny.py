"""Tiny models of the real transformers classes and an offline word-level tokenizer."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eos>", "<bos>"]
WORDS = (
    "the capital of france is paris germany berlin japan tokyo italy rome spain madrid "
    "was born in language spoken a city country located on continent europe asia "
    "apple makes iphone microsoft windows who what . , 首都 法国 巴黎 的 是 。"
).split()


def fact_words() -> list[str]:
    """Words of the shipped facts' objects and candidates that WORDS lacks. The query refuses
    a target made only of unknown tokens, so tests that run the shipped facts need them
    (``tiny(kind, fact_words=True)``)."""
    import re

    from amig_plugin.data import shipped_facts

    seen = set(WORDS) | set(SPECIALS)
    out = set()
    for fact in shipped_facts():
        for texts in [list(fact.object.values()), *[list(c) for c in fact.candidates.values()]]:
            for text in texts:
                out.update(w for w in re.findall(r"\w+|[^\w\s]+", text) if w not in seen)
    return sorted(out)


def word_tokenizer(causal: bool = False, extra: tuple[str, ...] | list[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over SPECIALS + WORDS (+ ``extra`` words appended at the end)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)) + [w for w in extra if w not in WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", eos_token="<eos>", bos_token="<bos>",
    )
    if not causal:
        from tokenizers.processors import TemplateProcessing

        backend.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        tok = PreTrainedTokenizerFast(
            tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", eos_token="<eos>", bos_token="<bos>",
        )
    return tok


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
    tok = word_tokenizer(causal=kind != "bert", extra=globals()["fact_words"]() if fact_words else ())
    return BUILDERS[kind](len(tok), seed=seed, **kw), tok


# ---------------------------------------------------------------------------------------
# helpers for the attribution / neuron / intervention tests


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


def bos_word_tokenizer() -> PreTrainedTokenizerFast:
    """The causal word tokenizer, but prepending ``<bos>`` when add_special_tokens=True."""
    from tokenizers.processors import TemplateProcessing

    tok = word_tokenizer(causal=True)
    vocab = tok.get_vocab()
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return tok


def dropping_word_tokenizer(chars: str = "~", causal: bool = True) -> PreTrainedTokenizerFast:
    """The word tokenizer with a normalizer that deletes ``chars`` (so "~" tokenizes to [])."""
    from tokenizers import normalizers

    tok = word_tokenizer(causal=causal)
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(c, "") for c in chars])
    return tok


BPE_SENTENCES = [
    "The capital of France is Paris.", "Paris is the capital of France.", "The capital of Germany is Berlin.",
    "Berlin is in Germany.", "The café in Paris is open.", "A café sells coffee.", "法国的首都是巴黎。",
    "巴黎是法国的首都。", "Molière was born in Paris.",
]


def bpe_tokenizer(sentences=BPE_SENTENCES) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style: ``" Paris"`` and ``"Paris"`` are different
    tokens; NFD text is other bytes than NFC) trained offline on ``sentences``."""
    from tokenizers import decoders, trainers

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(list(sentences) * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
