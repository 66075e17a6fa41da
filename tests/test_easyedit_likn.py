"""LIKN inside EasyEdit: hyper-parameters, the apply function (edits exactly the
intersection, restores bit for bit), registration, the cross-lingual evaluator."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os

import pytest
import torch

from amig_plugin.defaults import DEFAULT_QUADRATURE, DEFAULT_STEPS
from amig_plugin.easyedit.methods.amig import HParamsError
from amig_plugin.easyedit.methods.likn import LIKNHyperParams, request_languages
from amig_plugin.testing import same_weights as same
from amig_plugin.testing import weights_copy as state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_EASYEDITOR = importlib.util.find_spec("easyeditor") is not None
needs_easyeditor = pytest.mark.skipif(not HAS_EASYEDITOR, reason="easyeditor is not installed")


def hp(**kw) -> LIKNHyperParams:
    base = dict(alg_name="LIKN", model_name="tiny", device="cpu", steps=4, ig_batch_size=64)
    base.update(kw)
    return LIKNHyperParams(**base)


def likn_request(**extra):
    r = {"prompt": "the capital of france is", "ground_truth": "paris", "target_new": "rome", "subject": "france",
         "lang": "en", "locality": {}, "portability": {},
         "multilingual": {"zh": {"prompt": "法国 的 首都 是", "ground_truth": "巴黎", "target_new": "rome"}}}
    r.update(extra)
    return r


def test_hparams_yaml_and_validation(tmp_path):
    h = LIKNHyperParams.from_hparams(os.path.join(REPO, "hparams", "LIKN", "gemma-3-270m"))
    assert h.alg_name == "LIKN" and h.steps == DEFAULT_STEPS and h.quadrature == DEFAULT_QUADRATURE and h.signed and h.empty_likn == "skip" and h.languages is None
    with pytest.raises(HParamsError, match="alg_name"):
        LIKNHyperParams.from_dict({"alg_name": "AMIG", "model_name": "x"})
    with pytest.raises(HParamsError, match="did you mean 'signed'.*empty_likn"):
        LIKNHyperParams.from_dict({"alg_name": "LIKN", "model_name": "x", "signd": True})
    with pytest.raises(HParamsError, match="languages"):
        LIKNHyperParams.from_dict({"alg_name": "LIKN", "model_name": "x", "languages": ["en"]})
    with pytest.raises(HParamsError, match="unknown language code"):
        LIKNHyperParams.from_dict({"alg_name": "LIKN", "model_name": "x", "languages": ["en", "chinese"]})
    with pytest.raises(HParamsError, match="sequential"):
        hp(sequential=True)
    with pytest.raises(HParamsError, match="steps"):
        hp(steps=1)
    with pytest.raises(HParamsError, match="empty_likn"):
        hp(empty_likn="drop")


def test_request_languages():
    langs = request_languages(likn_request(), hp())
    assert list(langs) == ["en", "zh"] and langs["zh"]["ground_truth"] == "巴黎"
    detected = request_languages({"prompt": "法国的首都是", "ground_truth": "巴黎",
                                  "multilingual": {"en": {"prompt": "x is", "ground_truth": "y"}}})
    assert list(detected) == ["zh", "en"]
    with pytest.raises(ValueError, match="at least 2 languages"):
        request_languages({"prompt": "a", "ground_truth": "b", "target_new": "c"})
    with pytest.raises(ValueError, match="lacks the languages"):
        request_languages(likn_request(), hp(languages=["en", "de"]))
    with pytest.raises(ValueError, match="unknown language code"):
        request_languages(likn_request(multilingual={"chinese": {"prompt": "p", "ground_truth": "g"}}))


def test_apply_edits_exactly_the_intersection_and_restores(models):
    from amig_plugin.easyedit.methods.likn import apply_likn_to_model
    from amig_plugin.models import get_family
    from amig_plugin.neurons import localize

    base, tok = models("gpt2")
    model = copy.deepcopy(base)
    family = get_family(model)
    original = state(model)
    hparams = hp(max_neurons=None)
    edited, weights_copy = apply_likn_to_model(model, tok, [likn_request()], hparams, copy=False,
                                               return_orig_weights=True, keep_original_weight=False, train_ds=None)
    edit = weights_copy.edits[0]
    en = localize(base, tok, ["the capital of france is <mask>"], "paris", lang="en", steps=4)
    zh = localize(base, tok, ["法国 的 首都 是<mask>"], "巴黎", lang="zh", steps=4)
    shared = set(en.neurons) & set(zh.neurons)
    assert shared, "the test needs a non-empty intersection"
    assert {tuple(n) for n in edit["per_language"]["en"]} == set(en.neurons)
    assert {tuple(n) for n in edit["neurons"]} == shared and edit["empty"] == (not shared)
    # exactly the intersection's value vectors changed
    for layer in range(family.num_layers):
        changed = (family.value_vectors(layer) != get_family(base).value_vectors(layer)).any(dim=1)
        assert {(layer, int(i)) for i in torch.nonzero(changed).flatten()} == {n for n in shared if n[0] == layer}
    assert all(k.endswith("c_proj.weight") for k in weights_copy)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights_copy.items():
            params[k].copy_(v)
    assert same(original, state(model))


def test_empty_intersection_skips_or_raises(models, monkeypatch):
    import amig_plugin.neurons as neurons_mod
    from amig_plugin.easyedit.methods.likn import apply_likn_to_model

    base, tok = models("gpt2")
    real = neurons_mod.localize

    def disjoint(model, tok_, prompts, target, *, lang=None, **kw):
        kn = real(model, tok_, prompts, target, lang=lang, **kw)
        kn.neurons = [(0, 1)] if lang == "en" else [(0, 2)]
        kn.scores = [1.0]
        return kn

    monkeypatch.setattr(neurons_mod, "localize", disjoint)
    model = copy.deepcopy(base)
    original = state(model)
    _, wc = apply_likn_to_model(model, tok, likn_request(), hp())
    assert wc.edits[0]["empty"] and wc.edits[0]["neurons"] == [] and dict(wc) == {}
    assert same(original, state(model))
    with pytest.raises(ValueError, match="no language-independent neuron"):
        apply_likn_to_model(model, tok, likn_request(), hp(empty_likn="error"))


@pytest.mark.parametrize("blank", ["", "  ", None])
def test_no_ground_truth_in_one_language_edits_nothing_or_raises(models, blank):
    """The model's own continuation in the other language can be blank (no ground truth to
    localize there): with empty_likn: skip nothing is edited, weights stay bit-identical and
    the edit records which language had none; with error it raises, naming the language."""
    from amig_plugin.easyedit.methods.likn import apply_likn_to_model

    base, tok = models("gpt2")
    request = likn_request()
    request["multilingual"]["zh"]["ground_truth"] = blank
    model = copy.deepcopy(base)
    original = state(model)
    with pytest.warns(UserWarning, match="no ground truth in zh"):
        _, wc = apply_likn_to_model(model, tok, request, hp())
    edit = wc.edits[0]
    assert edit["empty"] and edit["neurons"] == [] and edit["no_ground_truth"] == ["zh"] and dict(wc) == {}
    assert edit["languages"] == ["en", "zh"] and edit["per_language"] == {"en": [], "zh": []}
    assert same(original, state(model))
    with pytest.raises(ValueError, match="request language 'zh' has none.*empty_likn: skip"):
        apply_likn_to_model(model, tok, request, hp(empty_likn="error"))


def test_compare_note_counts_pairs_without_a_ground_truth():
    from amig_plugin.easyedit.compare import method_note

    records = [{"amig_edit": {"neurons": [[0, 1], [1, 2]], "no_ground_truth": []}},
               {"amig_edit": {"neurons": [], "no_ground_truth": []}},
               {"amig_edit": {"neurons": [], "no_ground_truth": ["zh"]}}]
    note = method_note("LIKN", hp(), records)
    assert "0.7 shared neurons/edit, 2 of 3 empty (nothing edited; 1 of them with no ground truth in L" in note


def test_cross_lingual_quality_no_space_for_chinese(models):
    from amig_plugin.easyedit.methods.likn import cross_lingual_quality
    from amig_plugin.easyedit.evaluate import teacher_forced_predictions

    model, tok = models("gpt2")
    q = cross_lingual_quality(model, tok, likn_request())
    assert set(q) == {"en", "zh"} and set(q["zh"]) == {"rewrite_acc", "ground_truth_acc", "new_prob", "old_prob",
                                                      "new_beats_old"}
    # the Chinese score is that of prompt + target with nothing in between (the word
    # tokenizer splits on whitespace, so a ' ' join would give the same ids here; the
    # engine's encoding is checked in test_data / test_attribution)
    preds, gold = teacher_forced_predictions(model, tok, "法国 的 首都 是", "巴黎")
    assert q["zh"]["ground_truth_acc"] == float(sum(p == g for p, g in zip(preds, gold)) / len(gold))


@needs_easyeditor
def test_registered_in_easyedit_and_cross_lingual_metrics(models, tmp_path, monkeypatch):
    from amig_plugin.easyedit import compat
    from amig_plugin.easyedit.editor import load_likn_editor
    from amig_plugin.easyedit.methods.likn import apply_likn_to_model, edit_cross_lingual, summarize_cross_lingual
    from amig_plugin.easyedit.registration import is_likn_registered, register_likn, unregister_likn

    base, tok = models("gpt2")
    model = copy.deepcopy(base)
    monkeypatch.chdir(tmp_path)
    assert register_likn()["alg_name"] == "LIKN"
    assert register_likn()["registered_now"] is False  # idempotent
    assert is_likn_registered() and compat.alg_dict()["LIKN"] is apply_likn_to_model
    editor = load_likn_editor(hp(), model=model, tokenizer=tok)
    assert editor.apply_algo is apply_likn_to_model
    original = state(editor.model)
    metrics, _, weights_copy = edit_cross_lingual(editor, [likn_request()], verbose=False)
    m = metrics[0]
    assert set(m["pre"]["cross_lingual"]) == set(m["post"]["cross_lingual"]) == {"en", "zh"}
    assert "rewrite_acc" in m["post"]
    assert same(original, state(editor.model))  # EasyEdit reset the edit
    summary = summarize_cross_lingual(metrics)
    assert set(summary["post"]) == {"en", "zh"} and "new_prob" in summary["post"]["zh"]
    edit = weights_copy.edits[0]
    assert edit["languages"] == ["en", "zh"]
    assert unregister_likn() and not is_likn_registered()
