"""amig_plugin.models: family detection and the query encoding every method shares.

- causal prompts without ``<mask>``: the target after one space (none after CJK text), the same
  query as with `` <mask>``; a mid-sentence mask warns; unknown-only targets are refused;
- NFC: NFD and NFC spellings give the same query and the same attributions, bit for bit;
- bad queries (no single mask, two masks, empty or token-less targets, an empty causal prefix)
  and unsupported architectures are refused with errors naming the problem.
"""

from __future__ import annotations

import unicodedata

import pytest
import torch
from torch import nn

from amig_plugin.attribution import neuron_attributions
from amig_plugin.data import PromptTextDropped
from amig_plugin.errors import AmigError
from amig_plugin.models import QueryError, UnsupportedModelError, get_family
from amig_plugin.testing import (BERT_PROMPT, bpe_tokenizer, dropping_word_tokenizer, get_model, tiny_bert, tiny_gpt2,
                                 tiny_llama, word_tokenizer)

pytestmark = pytest.mark.usefixtures("fresh_prompt_warnings")

CAUSAL = {"gpt2": tiny_gpt2, "llama": tiny_llama}
LONG_CAUSAL = "the language spoken in the capital of france is <mask>"  # 9 tokens > Gemma3's window 4
BERT_2MASK = "the capital of france is <mask> ."


def prompt_of(kind):
    return BERT_2MASK if kind == "bert" else LONG_CAUSAL


def _bpe_model(kind: str):
    tok = bpe_tokenizer()
    return CAUSAL[kind](len(tok), seed=1), tok


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_prompt_without_mask_scores_the_word_initial_token(kind):
    model, tok = _bpe_model(kind)
    family = get_family(model)
    assert _ids(tok, " Paris") != _ids(tok, "Paris")  # the test means something: two tokens
    plain = family.encode(tok, "The capital of France is", "Paris")
    masked = family.encode(tok, "The capital of France is <mask>", "Paris")
    assert plain.target_ids.tolist() == _ids(tok, " Paris")
    assert torch.equal(plain.input_ids, masked.input_ids) and torch.equal(plain.target_ids, masked.target_ids)
    assert plain.target_position == masked.target_position
    # trailing whitespace = the same rule; a target given with its space is not doubled
    assert torch.equal(family.encode(tok, "The capital of France is ", "Paris").input_ids, plain.input_ids)
    assert family.encode(tok, "The capital of France is", " Paris").target_ids.tolist() == _ids(tok, " Paris")
    # Chinese: nothing added
    zh = family.encode(tok, "法国的首都是", "巴黎")
    assert zh.target_ids.tolist() == _ids(tok, "巴黎") != _ids(tok, " 巴黎")
    # attributions follow: a prompt without a mask is the same query as with " <mask>"
    a = neuron_attributions(model, tok, "The capital of France is", "Paris", steps=4)
    b = neuron_attributions(model, tok, "The capital of France is <mask>", "Paris", steps=4)
    assert torch.equal(a.attributions, b.attributions)


def test_encode_warns_for_a_mid_sentence_mask():
    model, tok = _bpe_model("gpt2")
    with pytest.warns(PromptTextDropped, match=r"drops the 2 word\(s\) after <mask> \(.is Paris\..\)"):
        q = get_family(model).encode(tok, "The capital of <mask> is Paris.", "France")
    assert q.target_ids.tolist() == _ids(tok, " France")


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_unknown_only_target_is_refused(kind):
    model, tok = get_model(kind)
    family = get_family(model)
    prompt = BERT_PROMPT if kind == "bert" else "the capital of france is <mask>"
    assert set(_ids(tok, "Molière Zürich")) == {tok.unk_token_id}
    with pytest.raises(QueryError, match=r"only unknown tokens \(\[UNK\]\).*vocabulary") as info:
        family.encode(tok, prompt, "Molière Zürich")
    assert isinstance(info.value, AmigError) and isinstance(info.value, ValueError)
    q = family.encode(tok, prompt, "paris Molière")  # one known token: a usable, if odd, target
    assert q.target_ids.tolist()[0] != tok.unk_token_id


def test_nfd_and_nfc_give_the_same_causal_query_and_attributions():
    model, tok = _bpe_model("gpt2")
    nfc_prompt, nfc_target = "Molière was born in <mask>", "café"
    nfd_prompt, nfd_target = (unicodedata.normalize("NFD", t) for t in (nfc_prompt, nfc_target))
    assert nfd_target != nfc_target and _ids(tok, nfd_target) != _ids(tok, nfc_target)  # different bytes, tokens
    family = get_family(model)
    a, b = family.encode(tok, nfc_prompt, nfc_target), family.encode(tok, nfd_prompt, nfd_target)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.target_ids, b.target_ids)
    ra = neuron_attributions(model, tok, nfc_prompt, nfc_target, steps=4)
    rb = neuron_attributions(model, tok, nfd_prompt, nfd_target, steps=4)
    assert torch.equal(ra.attributions, rb.attributions) and ra.score == rb.score


def test_nfd_and_nfc_give_the_same_masked_lm_attributions():
    tok = word_tokenizer(causal=False, extra=["café", "molière"])
    model = tiny_bert(len(tok), seed=2)
    nfd = unicodedata.normalize("NFD", "café")
    assert tok.unk_token_id in _ids(tok, nfd) and _ids(tok, "café") != _ids(tok, nfd)
    ra = neuron_attributions(model, tok, "molière likes the <mask> .", "café", steps=4)
    rb = neuron_attributions(model, tok, unicodedata.normalize("NFD", "molière likes the <mask> ."), nfd, steps=4)
    assert torch.equal(ra.attributions, rb.attributions)


def test_masked_prompt_without_mask(bert):
    model, tok = bert
    with pytest.raises(QueryError, match="no single mask"):
        neuron_attributions(model, tok, "the capital of france is paris", "paris", steps=1)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_prompt_with_two_masks(kind):
    model, tok = get_model(kind)
    with pytest.raises(ValueError, match="has 2 '?<mask>'? placeholders"):
        neuron_attributions(model, tok, "the capital of <mask> is <mask>", "paris", steps=1)


def test_bert_prompt_with_two_tokenizer_masks(bert):
    model, tok = bert
    with pytest.raises(QueryError, match="no single mask"):
        neuron_attributions(model, tok, "the capital of [MASK] is [MASK]", "paris", steps=1)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
@pytest.mark.parametrize("target", ["", "   "])
def test_empty_target(kind, target):
    model, tok = get_model(kind)
    with pytest.raises(QueryError, match="is empty"):
        neuron_attributions(model, tok, prompt_of(kind), target, steps=1)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_target_without_tokens(kind):
    model, _ = get_model(kind)
    tok = dropping_word_tokenizer("~", causal=kind != "bert")
    assert tok("~", add_special_tokens=False)["input_ids"] == []
    with pytest.raises(QueryError, match="tokenizes to no tokens"):
        neuron_attributions(model, tok, prompt_of(kind), "~", steps=1)


def _tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2)
    return T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("make", [lambda: nn.Linear(4, 4), _tiny_t5], ids=["Linear", "T5ForConditionalGeneration"])
def test_unsupported_model(make, gpt2):
    model = make()
    _, tok = gpt2
    with pytest.raises(UnsupportedModelError) as info:
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=1)
    msg = str(info.value)
    assert type(model).__name__ in msg
    for supported in ("BertForMaskedLM", "GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM"):
        assert supported in msg


def test_causal_prompt_starting_with_mask(gpt2):
    model, tok = gpt2
    with pytest.raises(ValueError, match="empty prefix"):
        neuron_attributions(model, tok, "<mask> is the capital of france", "paris", steps=1)
