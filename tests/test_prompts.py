"""Prompt rules of the data layer, the intervention position, and atomic value edits (the
query encoding's own rules are tested in test_models.py).

- causal prompts: ``causal_cloze``; text after a mid-sentence mask dropped in cut mode with a
  warning, once per prompt;
- suppress/enhance/scale_neurons act where the caller says (the query's target position);
- ``likn.apply_value_edit`` is all or nothing.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from amig_plugin.data import PromptTextDropped, causal_cloze, causal_prompt_and_target
from amig_plugin.errors import UsageError
from amig_plugin.intervene import enhance_neurons, scale_neurons, suppress_neurons, target_position
from amig_plugin.models import get_family
from amig_plugin.testing import BERT_PROMPT, get_model
from amig_plugin.testing import same_weights as _same
from amig_plugin.testing import weights_copy as _state


pytestmark = pytest.mark.usefixtures("fresh_prompt_warnings")


# ------------------------------------------------------------------ causal prompt rules


def test_causal_cloze_rule():
    assert causal_cloze("The capital of France is") == "The capital of France is <mask>"
    assert causal_cloze("The capital of France is ") == "The capital of France is <mask>"
    assert causal_cloze("法国的首都是") == "法国的首都是<mask>"
    assert causal_cloze("東京は日本の首都で、") == "東京は日本の首都で、<mask>"
    assert causal_cloze("It is <mask>.") == "It is <mask>."  # a mask: unchanged


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


# ------------------------------------------------------------------ NFC


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
