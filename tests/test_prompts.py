"""Prompt rules at the query boundary, the intervention position, and atomic value edits.

- causal prompts: no ``<mask>`` = the target after one space (none after CJK text); text
  after a mid-sentence mask dropped in cut mode with a warning; unknown-only targets refused;
- NFC: NFD and NFC spellings give the same query and the same attributions, bit for bit;
- suppress/enhance/scale_neurons act where the caller says (the query's target position);
- ``likn.apply_value_edit`` is all or nothing.
"""

from __future__ import annotations

import copy
import unicodedata
import warnings

import pytest
import torch

from amig_plugin import data as D
from amig_plugin.attribution import neuron_attributions
from amig_plugin.data import PromptTextDropped, causal_cloze, causal_prompt_and_target
from amig_plugin.errors import AmigError, UsageError
from amig_plugin.intervene import enhance_neurons, scale_neurons, suppress_neurons, target_position
from amig_plugin.models import QueryError, get_family
from amig_plugin.testing import BERT_PROMPT, get_model
from amig_plugin.testing import bpe_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, word_tokenizer

CAUSAL = {"gpt2": tiny_gpt2, "llama": tiny_llama}


@pytest.fixture(autouse=True)
def fresh_warnings():
    D._warned.clear()
    yield
    D._warned.clear()


def _bpe_model(kind: str):
    tok = bpe_tokenizer()
    return CAUSAL[kind](len(tok), seed=1), tok


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------ causal prompt rules


def test_causal_cloze_rule():
    assert causal_cloze("The capital of France is") == "The capital of France is <mask>"
    assert causal_cloze("The capital of France is ") == "The capital of France is <mask>"
    assert causal_cloze("法国的首都是") == "法国的首都是<mask>"
    assert causal_cloze("東京は日本の首都で、") == "東京は日本の首都で、<mask>"
    assert causal_cloze("It is <mask>.") == "It is <mask>."  # a mask: unchanged


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


def test_cut_mode_warns_once_naming_the_dropped_words():
    with pytest.warns(PromptTextDropped, match=r"drops the 3 word\(s\) after <mask> \('since 1944 AD\.'\)"):
        prefix, target = causal_prompt_and_target("Paris is the capital of <mask> since 1944 AD.", "France")
    assert (prefix, target) == ("Paris is the capital of", " France")
    with pytest.warns(PromptTextDropped, match=r"drops the 3 word\(s\)"):
        causal_prompt_and_target("巴黎是<mask>的首都。", "法国")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        causal_prompt_and_target("Paris is the capital of <mask> since 1944 AD.", "Spain")  # the same prompt: once
        causal_prompt_and_target("The capital of France is <mask>.", "Paris")  # punctuation only: nothing lost
        causal_prompt_and_target("法国的首都是<mask>。", "巴黎")
        causal_prompt_and_target("巴黎是<mask>的首都。", "法国", mode="sentence")  # sentence mode keeps it
    assert [w for w in seen if issubclass(w.category, PromptTextDropped)] == []


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


# ------------------------------------------------------------------ NFC


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


# ------------------------------------------------------------------ intervention position


def test_bert_suppression_acts_at_the_mask_given_the_query():
    model, tok = get_model("bert")
    family = get_family(model)
    q = family.encode(tok, BERT_PROMPT, "paris")
    assert int(q.input_ids[q.target_position]) == tok.mask_token_id
    assert target_position(model, tok, BERT_PROMPT, "paris") == q.target_position
    assert int(q.input_ids[-1]) == tok.sep_token_id  # what position=-1 would hit
    neurons = [(1, 5), (1, 40), (2, 7)]
    ids = q.input_ids[None]
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with suppress_neurons(model, neurons, position=q):
            by_query = model(input_ids=ids).logits
        with suppress_neurons(model, neurons, position=q.target_position):
            explicit = model(input_ids=ids).logits
        with suppress_neurons(model, neurons, position=-1):
            at_sep = model(input_ids=ids).logits
    assert torch.equal(by_query, explicit)
    m = q.target_position
    assert not torch.equal(by_query[0, m], clean[0, m])
    assert not torch.equal(by_query[0, m], at_sep[0, m])


@pytest.mark.parametrize("ctx", [lambda m: suppress_neurons(m, [(0, 1)]), lambda m: enhance_neurons(m, [(0, 1)]),
                                 lambda m: scale_neurons(m, [(0, 1)], 0.5)])
def test_position_is_required(ctx):
    model, _ = get_model("gpt2")
    with pytest.raises(UsageError, match=r"give position=.*target_position"):
        with ctx(model):
            pass
    with pytest.raises(UsageError, match="position must be"):
        with scale_neurons(model, [(0, 1)], 0.5, position="last"):
            pass


# ------------------------------------------------------------------ atomic value edit


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_apply_value_edit_is_all_or_nothing(monkeypatch):
    from amig_plugin.intervene import edit_value_vectors
    from amig_plugin.likn import edits as likn_edits
    from amig_plugin.likn import Edit, apply_value_edit

    base, tok = get_model("gpt2")
    model = copy.deepcopy(base)
    family = get_family(model)
    original = _state(model)
    edit = Edit("Seq-KN", (("en", ((0, 1), (1, 2))), ("zh", ((2, 3),))))
    old = {"en": "paris", "zh": "巴黎"}
    # 1) a later step fails (no new object for zh): the en step is undone, bit for bit
    with pytest.raises(KeyError):
        apply_value_edit(family, tok, edit, old, {"en": "rome"})
    assert _same(_state(model), original)
    # 2) an injected failure inside the second step, with the caller's backup of an earlier edit
    earlier = edit_value_vectors(family, tok, [(0, 9)], old_target="paris", new_target="berlin")
    after_earlier = _state(model)
    assert not _same(after_earlier, original)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return edit_value_vectors(*args, **kwargs)

    monkeypatch.setattr(likn_edits, "edit_value_vectors", failing)
    keys = set(earlier.originals)
    with pytest.raises(RuntimeError, match="injected"):
        apply_value_edit(family, tok, edit, old, {"en": "rome", "zh": "berlin"}, backup=earlier)
    assert len(calls) == 2
    assert _same(_state(model), after_earlier)  # the earlier edit stays, this call's steps are gone
    assert set(earlier.originals) == keys
    earlier.restore()
    assert _same(_state(model), original)
    # 3) success: every step applied, and the returned backup undoes them bit for bit
    monkeypatch.setattr(likn_edits, "edit_value_vectors", edit_value_vectors)
    backup = apply_value_edit(family, tok, edit, old, {"en": "rome", "zh": "berlin"})
    assert not _same(_state(model), original)
    backup.restore()
    assert _same(_state(model), original)
