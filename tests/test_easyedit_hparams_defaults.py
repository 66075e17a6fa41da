"""EasyEdit hparams fall back to the engine's and the study's defaults (amig_plugin/defaults.py):
tau per method and language, steps and quadrature; the shipped YAMLs pin none of them, and a
localization through the LIKN hparams hits the same cache entry as ``amig likn`` with the same
settings."""

from __future__ import annotations

import copy
import glob
import os

import pytest

from amig_plugin import defaults
from amig_plugin.easyedit.methods.amig import AMIGHyperParams, HParamsError
from amig_plugin.easyedit.methods.likn import LIKNHyperParams

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = sorted(glob.glob(os.path.join(REPO, "hparams", "AMIG", "*.yaml"))) + [
    os.path.join(REPO, "hparams", "LIKN", "gemma-3-270m.yaml")]


def test_kn_hparams_without_tau_use_dais_tau_in_every_language():
    h = AMIGHyperParams.from_dict({"alg_name": "AMIG", "model_name": "gpt2", "method": "kn"})
    assert h.tau is None and h.tau_by_lang is None
    assert (h.tau_for("en"), h.tau_for("zh"), h.tau_for("de")) == (0.2, 0.2, 0.2)
    assert h.tau_for("en") == defaults.default_tau("en", "kn") == defaults.KN_TAU


def test_amig_hparams_without_tau_use_the_papers_per_language():
    h = AMIGHyperParams.from_dict({"alg_name": "AMIG", "model_name": "gpt2"})
    assert (h.tau_for("en"), h.tau_for("zh"), h.tau_for("de"), h.tau_for("en-US")) == (0.3, 0.2, 0.2, 0.3)
    for lang in ("en", "zh", "fr"):
        assert h.tau_for(lang) == defaults.default_tau(lang, "amig")


def test_explicit_tau_and_tau_by_lang_override_the_default():
    kn = dict(alg_name="AMIG", model_name="gpt2", method="kn")
    assert AMIGHyperParams.from_dict({**kn, "tau": 0.5}).tau_for("en") == 0.5
    h = AMIGHyperParams.from_dict({**kn, "tau_by_lang": {"en": 0.35}})
    assert (h.tau_for("en"), h.tau_for("zh")) == (0.35, 0.2)  # languages it does not name: the default
    with pytest.raises(HParamsError, match="tau_by_lang"):
        AMIGHyperParams.from_dict({**kn, "tau_by_lang": {"en": 1.5}})
    with pytest.raises(HParamsError, match="tau_by_lang"):
        AMIGHyperParams.from_dict({**kn, "tau_by_lang": [0.3]})


def test_yaml_without_steps_or_quadrature_resolves_to_the_engine_default(tmp_path):
    path = tmp_path / "kn.yaml"
    path.write_text("alg_name: AMIG\nmodel_name: gpt2\nmethod: kn\n")
    h = AMIGHyperParams.from_hparams(str(path))
    assert (h.steps, h.quadrature, h.ig_batch_size) == (defaults.DEFAULT_STEPS, defaults.DEFAULT_QUADRATURE,
                                                        defaults.DEFAULT_IG_BATCH_SIZE)
    assert h.tau_for("en") == 0.2


@pytest.mark.parametrize("path", OURS, ids=os.path.basename)
def test_shipped_yamls_pin_no_study_default(path):
    """Our YAMLs leave steps, quadrature and tau to defaults.py (a change there reaches them)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    assert not {"steps", "quadrature", "tau", "tau_by_lang"} & set(raw), path
    assert raw.get("ig_batch_size", None) != defaults.DEFAULT_IG_BATCH_SIZE  # either absent or a real choice
    cls = LIKNHyperParams if raw["alg_name"] == "LIKN" else AMIGHyperParams
    h = cls.from_hparams(path)
    assert (h.steps, h.quadrature) == (defaults.DEFAULT_STEPS, defaults.DEFAULT_QUADRATURE)
    assert h.tau_for("en") == defaults.default_tau("en", h.method)


def test_likn_hparams_and_the_cli_share_the_cache_entry(models, tmp_path, monkeypatch):
    """A LIKN edit from the shipped YAML (cache: true, method kn) and ``amig likn --method kn``
    with its default settings compute the same localization key: the second is a cache hit."""
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.cli import build_parser
    from amig_plugin.easyedit.methods.likn import apply_likn_to_model
    from amig_plugin.localization import DEFAULT_SETTINGS

    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    base, tok = models("gpt2")
    h = LIKNHyperParams.from_hparams(os.path.join(REPO, "hparams", "LIKN", "gemma-3-270m.yaml"))
    h = LIKNHyperParams.from_dict({**h.to_dict(), "model_name": "tiny", "device": "cpu", "method": "kn",
                                   "cache": True})
    request = {"prompt": "the capital of france is", "ground_truth": "paris", "target_new": "rome",
               "subject": "france", "lang": "en", "locality": {}, "portability": {},
               "multilingual": {"zh": {"prompt": "法国 的 首都 是", "ground_truth": "巴黎", "target_new": "rome"}}}
    apply_likn_to_model(copy.deepcopy(base), tok, [request], h, copy=False, return_orig_weights=False,
                        keep_original_weight=False, train_ds=None)
    args = build_parser().parse_args(["likn", "--method", "kn"])
    cli = dict(steps=args.steps, objective=args.objective, quadrature=args.quadrature,
               ig_batch_size=args.ig_batch_size, share_p=args.share_p, tau=args.tau)  # as commands/likn.py
    cache = LocalizationCache.for_model(base)
    for lang, prompt, target in (("en", "the capital of france is <mask>", "paris"), ("zh", "法国 的 首都 是<mask>", "巴黎")):
        cache.localize(base, tok, [prompt], target, lang=lang, method="kn", **{**DEFAULT_SETTINGS.localize_kwargs(), **cli})
    assert (cache.hits, cache.misses) == (2, 0)
