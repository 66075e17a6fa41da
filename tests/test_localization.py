"""The localization service: one settings object, one key, one entry point."""

from __future__ import annotations

import hashlib
import json

import pytest

from amig_plugin import defaults
from amig_plugin.data import Fact
from amig_plugin.localization import LocalizationCache, LocalizationSettings, localize_fact
from amig_plugin.testing import get_model

PROMPT = "the capital of france is <mask>"


def _old_key(settings: dict, lang: str, method: str) -> str:
    """The key formula records in existing caches were written under."""
    blob = json.dumps([defaults.ATTRIBUTION_VERSION, "m#fp", [PROMPT], " Paris", lang, method, sorted(settings.items())],
                      ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("lang,method,tau", [("en", "amig", 0.3), ("zh", "amig", 0.2), ("en", "kn", 0.2)])
def test_key_is_the_one_existing_caches_hold(lang, method, tau):
    base = dict(tau=tau, share_p=0.7, steps=defaults.DEFAULT_STEPS, objective="prob",
                quadrature=defaults.DEFAULT_QUADRATURE, amig_mode="mean", layers=None, top_k=50)
    if defaults.DEFAULT_QUADRATURE == "gauss-adaptive":  # its refinement constants are part of the result
        base["gauss_adaptive"] = [defaults.ADAPTIVE_TOLERANCE, defaults.ADAPTIVE_MAX_STEPS, defaults.ADAPTIVE_MIN_GAIN]
        base["residual_floors"] = [defaults.RESIDUAL_FLOOR, defaults.FLOAT_NOISE]
    assert LocalizationSettings().key("m#fp", [PROMPT], " Paris", lang, method) == _old_key(base, lang, method)
    refine = LocalizationSettings(on_unconverged="refine", adaptive=(2, 5))
    assert refine.key("m#fp", [PROMPT], " Paris", lang, method) == _old_key(
        {**base, "on_unconverged": "refine", "adaptive": [2, 5],
         "residual_floors": [defaults.RESIDUAL_FLOOR, defaults.FLOAT_NOISE]}, lang, method)


def test_execution_fields_and_warn_or_refuse_leave_the_key_alone():
    key = LocalizationSettings().key("m#fp", [PROMPT], " Paris", "en", "amig")
    same = [LocalizationSettings(ig_batch_size=7), LocalizationSettings(progress=True),
            LocalizationSettings(on_unconverged="refuse"), LocalizationSettings(tau=0.3)]
    assert all(s.key("m#fp", [PROMPT], " Paris", "en", "amig") == key for s in same)
    other = [LocalizationSettings(steps=20), LocalizationSettings(tau=0.25), LocalizationSettings(layers=[1]),
             LocalizationSettings(on_unconverged="refine")]
    assert all(s.key("m#fp", [PROMPT], " Paris", "en", "amig") != key for s in other)


def test_adaptive_rule_constants_are_part_of_the_key(monkeypatch):
    """A cached gauss-adaptive (or refined) result made under another refinement tolerance, or
    another way of measuring the residual it refines on, is never served; a plain rule's key
    holds neither."""
    settings = LocalizationSettings(quadrature="gauss-adaptive", steps=6)
    refined = LocalizationSettings(quadrature="gauss", steps=12, on_unconverged="refine")
    key = settings.key("m#fp", [PROMPT], " Paris", "en", "amig")
    refined_key = refined.key("m#fp", [PROMPT], " Paris", "en", "amig")
    monkeypatch.setattr(defaults, "ADAPTIVE_TOLERANCE", defaults.ADAPTIVE_TOLERANCE / 2)
    assert settings.key("m#fp", [PROMPT], " Paris", "en", "amig") != key
    key = settings.key("m#fp", [PROMPT], " Paris", "en", "amig")
    monkeypatch.setattr(defaults, "FLOAT_NOISE", defaults.FLOAT_NOISE / 10)
    assert settings.key("m#fp", [PROMPT], " Paris", "en", "amig") != key
    assert refined.key("m#fp", [PROMPT], " Paris", "en", "amig") != refined_key
    gauss = LocalizationSettings(quadrature="gauss", steps=12)
    assert "gauss_adaptive" not in gauss.result_settings() and "residual_floors" not in gauss.result_settings()


def test_unknown_setting_is_named():
    with pytest.raises(TypeError, match="unknown localization setting.*'stpes'"):
        LocalizationSettings.of({"stpes": 4})


def test_every_caller_shape_hits_the_same_cache_entry(tmp_path):
    """A settings object, a mapping and keyword overrides are one request: one IG, then hits."""
    model, tok = get_model("gpt2")
    fact = Fact(id="f", relation="capital", subject={"en": "france"}, object={"en": "paris"}, prompts={"en": [PROMPT]})
    cache = LocalizationCache(tmp_path / "c.jsonl")
    a = localize_fact(model, tok, fact, "en", settings=LocalizationSettings(steps=4), cache=cache)
    b = localize_fact(model, tok, fact, "en", settings={"steps": 4, "ig_batch_size": 3}, cache=cache)
    c = localize_fact(model, tok, fact, "en", steps=4, cache=cache)
    assert (cache.misses, cache.hits) == (1, 2)
    assert a.neurons == b.neurons == c.neurons
    fresh = localize_fact(model, tok, fact, "en", steps=4)  # no cache: the same neurons
    assert fresh.neurons == a.neurons
