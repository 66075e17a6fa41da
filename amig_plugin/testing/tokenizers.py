"""Offline tokenizers for tests: a word-level tokenizer over a small fixed vocabulary (plus, on
request, the words of the shipped facts), its ``<bos>`` and character-dropping variants, and a
byte-level BPE trained in code on a few sentences."""

from __future__ import annotations

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
