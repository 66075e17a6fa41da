"""The localization cache: keyed by every weight, the algorithm's version and the result settings
(not the batch size); records read back are checked, and a bad one is recomputed while a warning
names its file; adaptive sets are derived from stored records without new attributions."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

import amig_plugin.defaults
from amig_plugin.localization.cache import CacheWarning, LocalizationCache, check_neurons_record, model_fingerprint
from amig_plugin.loading import load_model
from amig_plugin.neurons import localize
from amig_plugin.testing import get_model, tiny_sharp

PROMPT = "the capital of france is <mask>"
SETTINGS = dict(lang="en", method="amig", steps=4)


def _fine_tune(model, tok, text: str = "the capital of france is berlin", steps: int = 30) -> None:
    """A few Adam steps of causal-LM training on ``text`` (in place)."""
    batch = tok(text, return_tensors="pt")
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_retrained_model_saved_to_the_same_path_gets_new_neurons(tmp_path):
    """Localize, fine-tune, save to the same folder, reload: the cache computes the new model's
    neurons instead of serving the old ones."""
    folder = tmp_path / "model"
    model, tok = tiny_sharp("gpt2", seed=5)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cache = LocalizationCache(tmp_path / "cache.jsonl")

    old_model, old_tok = load_model(folder)
    old = cache.localize(old_model, old_tok, PROMPT, "paris", **SETTINGS)
    assert (cache.misses, cache.hits) == (1, 0)

    _fine_tune(model, tok)
    model.save_pretrained(folder)  # same path, same model id
    new_model, new_tok = load_model(folder)
    expected = localize(new_model, new_tok, PROMPT, "paris", **SETTINGS)
    assert expected.neurons != old.neurons  # the training changed the neurons: the test can fail

    served = LocalizationCache(tmp_path / "cache.jsonl").localize(new_model, new_tok, PROMPT, "paris", **SETTINGS)
    assert served.neurons == expected.neurons and served.scores == pytest.approx(expected.scores)
    assert model_fingerprint(new_model) != model_fingerprint(old_model)
    again = LocalizationCache(tmp_path / "cache.jsonl")
    assert again.localize(old_model, old_tok, PROMPT, "paris", **SETTINGS).neurons == old.neurons
    assert (again.misses, again.hits) == (0, 1)  # each model keeps its own record


def test_fingerprint_covers_every_weight_and_follows_in_place_edits():
    model, _ = tiny_sharp("gpt2", seed=1)
    fp = model_fingerprint(model)
    assert model_fingerprint(model) == fp and len(fp) == 32
    for name, p in model.named_parameters():  # one value of any parameter changes the fingerprint
        other = copy.deepcopy(model)
        with torch.no_grad():
            dict(other.named_parameters())[name].view(-1)[-1] += 1e-3
        assert model_fingerprint(other) != fp, name
    with torch.no_grad():  # an edit of the same object (version counter) is seen
        model.transformer.h[1].mlp.c_proj.weight[5, 0] += 1.0
    edited = model_fingerprint(model)
    assert edited != fp
    model.transformer.h[1].mlp.c_proj.weight.data[5, 0] -= 1.0  # untracked: documented, refresh=True sees it
    assert model_fingerprint(model) == edited
    assert model_fingerprint(model, refresh=True) == fp


def test_attribution_version_is_part_of_the_key(tmp_path, monkeypatch):
    model, tok = tiny_sharp("gpt2", seed=5)
    cache = LocalizationCache(tmp_path / "cache.jsonl")
    cache.localize(model, tok, PROMPT, "paris", **SETTINGS)
    cache.localize(model, tok, PROMPT, "paris", **SETTINGS)
    assert (cache.misses, cache.hits) == (1, 1)
    monkeypatch.setattr(amig_plugin.defaults, "ATTRIBUTION_VERSION", amig_plugin.defaults.ATTRIBUTION_VERSION + 1)
    cache.localize(model, tok, PROMPT, "paris", **SETTINGS)
    assert (cache.misses, cache.hits) == (2, 1)


@pytest.mark.parametrize("damage, why", [
    (lambda d: d.update(neurons="abc"), "'neurons' is str"),
    (lambda d: d.update(neurons=[[0, 10_000]], scores=[1.0]), "outside the model's 3 layers x 64"),
    (lambda d: d.update(neurons=[[7, 1]], scores=[1.0]), "outside the model's 3 layers"),
    (lambda d: d.update(neurons=[[0, 1]], scores=["x"]), "'scores'"),
    (lambda d: d.update(top=[[0, -1, 0.5]]), "'top'"),
    (lambda d: d.update(per_prompt=[]), "one neuron list per prompt"),
    (lambda d: d.update(target="berlin"), "target"),
    (lambda d: d.update(surprise=1), "unknown keys"),
])
def test_a_bad_record_is_recomputed_with_a_warning_naming_the_file(tmp_path, damage, why):
    model, tok = tiny_sharp("gpt2", seed=5)
    path = tmp_path / "cache.jsonl"
    good = LocalizationCache(path).localize(model, tok, PROMPT, "paris", **SETTINGS)
    rec = json.loads(path.read_text(encoding="utf-8"))
    damage(rec["neurons"])
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")

    cache = LocalizationCache(path)
    with pytest.warns(CacheWarning, match=why) as caught:
        kn = cache.localize(model, tok, PROMPT, "paris", **SETTINGS)
    assert str(path) in str(caught[0].message)
    assert kn.neurons == good.neurons and (cache.misses, cache.replaced) == (1, 1)
    reopened = LocalizationCache(path)  # the recomputed record wins from now on
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert reopened.localize(model, tok, PROMPT, "paris", **SETTINGS).neurons == good.neurons
    assert (reopened.misses, reopened.hits) == (0, 1)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # the bad line stays, superseded


def test_check_neurons_record_accepts_a_real_record():
    model, tok = tiny_sharp("gpt2", seed=5)
    kn = localize(model, tok, [PROMPT, "the capital of france is <mask> ."], "paris", **SETTINGS)
    back = check_neurons_record({"neurons": kn.to_dict()}, 3, 64, kn.prompts, "paris")
    assert back.neurons == kn.neurons


def test_cache_ignores_batch_size(tmp_path):
    """ig_batch_size changes how rows are batched, not the result: it is not part of the
    cache key; a result setting is."""
    from amig_plugin.localization.cache import LocalizationCache

    model, tok = get_model("gpt2")
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    first = cache.localize(model, tok, PROMPT, "paris", lang="en", method="kn", steps=3, ig_batch_size=7)
    again = cache.localize(model, tok, PROMPT, "paris", lang="en", method="kn", steps=3, ig_batch_size=128)
    assert (cache.misses, cache.hits) == (1, 1) and again.neurons == first.neurons
    cache.localize(model, tok, PROMPT, "paris", lang="en", method="kn", steps=4)
    assert cache.misses == 2
    # so is the quadrature rule (the default rule is keyed even when the caller leaves it out)
    cache.localize(model, tok, PROMPT, "paris", lang="en", method="kn", steps=3, quadrature="midpoint")
    assert cache.misses == 3
    cache.localize(model, tok, PROMPT, "paris", lang="en", method="kn", steps=3, quadrature="midpoint")
    assert cache.misses == 3


def test_cache_derives_adaptive_sets_without_new_attributions(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    model, tok = get_model("gpt2")
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    cache.localize(model, tok, PROMPT, "paris", lang="en", steps=3)
    ad = cache.localize(model, tok, PROMPT, "paris", lang="en", steps=3, adaptive=(2, 5))
    assert (cache.misses, cache.hits) == (1, 1)
    assert ad.neurons == localize(model, tok, PROMPT, "paris", lang="en", steps=3, adaptive=(2, 5)).neurons
    again = LocalizationCache(tmp_path / "loc.jsonl").localize(model, tok, PROMPT, "paris", lang="en", steps=3,
                                                               adaptive=[2, 5])
    assert again.neurons == ad.neurons


def test_shown_path_names_no_machine(tmp_path, monkeypatch):
    from amig_plugin.localization import shown_path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AMIG_CACHE", raising=False)
    stats = tmp_path / "home" / ".cache" / "amig-plugin" / "easyedit-stats" / "m"
    assert shown_path(stats) == "~/.cache/amig-plugin/easyedit-stats/m"
    assert shown_path(tmp_path / "home" / "runs" / "x.json") == "~/runs/x.json"
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    assert shown_path(tmp_path / "cache" / "easyedit-stats" / "m") == "$AMIG_CACHE/easyedit-stats/m"
    assert shown_path(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
