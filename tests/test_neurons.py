"""Neuron selection (τ·max threshold, sharing across prompts), KnowledgeNeurons JSON, localize."""

from __future__ import annotations

import json

import pytest
import torch

from amig_plugin.neurons import KnowledgeNeurons, default_tau, localize, shared_neurons, threshold_neurons
from amig_plugin.testing import FAMILIES, get_model

PROMPT = "the capital of france is <mask>"


# ----------------------------------------------------------------------------------------
# threshold_neurons


def test_threshold_neurons_hand_made():
    A = torch.tensor([
        [0.10, 0.50, -1.00, 0.31],   # layer 2
        [1.00, 0.29, 0.45, 0.00],    # layer 5
    ])
    # τ = 0.3: keep > 0.3 · max = 0.3 (max over ALL layers), best first, rows named by layers
    assert threshold_neurons(A, [2, 5], 0.3) == [((5, 0), 1.0), ((2, 1), 0.5), ((5, 2), pytest.approx(0.45)),
                                                   ((2, 3), pytest.approx(0.31))]
    assert [n for n, _ in threshold_neurons(A, [2, 5], 0.46)] == [(5, 0), (2, 1)]
    assert [n for n, _ in threshold_neurons(A, [2, 5], 1.0)] == []  # strict: nothing exceeds the max
    assert [n for n, _ in threshold_neurons(A, [2, 5], 0.99)] == [(5, 0)]
    # the max is global: a layer whose own max is small gets nothing
    B = torch.tensor([[0.05, 0.04], [1.0, 0.2]])
    assert [n for n, _ in threshold_neurons(B, [0, 1], 0.1)] == [(1, 0), (1, 1)]


def test_threshold_neurons_nothing_when_no_positive_attribution():
    assert threshold_neurons(torch.zeros(2, 3), [0, 1], 0.3) == []
    assert threshold_neurons(-torch.rand(2, 3) - 0.1, [0, 1], 0.3) == []
    assert threshold_neurons(torch.tensor([[-1.0, 0.0], [-0.5, -2.0]]), [0, 1], 0.2) == []


@pytest.mark.parametrize("tau", [0, 0.0, 1.5, -0.1])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"tau must lie in \(0, 1\]"):
        threshold_neurons(torch.ones(1, 2), [0], tau)
    model, tok = get_model("gpt2")
    with pytest.raises(ValueError, match=r"tau must lie in \(0, 1\]"):
        localize(model, tok, PROMPT, "paris", tau=tau, steps=1, layers=[0])


def test_threshold_shape_mismatch():
    with pytest.raises(ValueError, match="len\\(layers\\)"):
        threshold_neurons(torch.ones(2, 3), [0], 0.3)


# ----------------------------------------------------------------------------------------
# shared_neurons


def test_shared_neurons():
    per_prompt = [
        [(0, 1), (1, 2), (2, 3)],
        [(0, 1), (1, 2), (3, 3)],
        [(0, 1), (4, 4), (4, 4)],  # a duplicate within one prompt counts once
    ]
    assert shared_neurons(per_prompt, 0.7) == [(0, 1)]                 # in all 3 (> 2.1)
    assert shared_neurons(per_prompt, 0.5) == [(0, 1), (1, 2)]         # in >= 2 (> 1.5)
    assert shared_neurons(per_prompt, 0.0) == [(0, 1), (1, 2), (2, 3), (3, 3), (4, 4)]
    assert shared_neurons([[(4, 4), (4, 4)], [], []], 0.5) == []
    with pytest.raises(ValueError, match="share_p"):
        shared_neurons(per_prompt, 1.0)


# ----------------------------------------------------------------------------------------
# KnowledgeNeurons


def _record():
    return KnowledgeNeurons(
        neurons=[(2, 17), (0, 3)], scores=[0.9, 0.4], target="巴黎", prompts=["法国的首都是<mask>。"], lang="zh",
        fact_id="P36-fr", method="amig", model_id="tiny", settings={"tau": 0.2, "steps": 20, "layers": [0, 1, 2]},
        per_prompt=[[(2, 17), (0, 3)]], completeness_residuals=[1e-4], clean_scores=[0.5],
    )


def test_knowledge_neurons_round_trip(tmp_path):
    kn = _record()
    path = tmp_path / "sub" / "kn.json"
    kn.save(path)
    loaded = KnowledgeNeurons.load(path)
    assert loaded == kn
    assert loaded.neurons == [(2, 17), (0, 3)]
    assert all(type(n) is tuple for n in loaded.neurons)
    assert all(type(n) is tuple for ns in loaded.per_prompt for n in ns)
    assert "巴黎" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert not list(path.parent.glob("*.tmp"))  # atomic write left no temp file
    assert KnowledgeNeurons.from_dict(json.loads(json.dumps(kn.to_dict()))) == kn


def test_knowledge_neurons_unknown_key():
    d = _record().to_dict()
    d["bogus_field"] = 1
    with pytest.raises(ValueError, match="bogus_field"):
        KnowledgeNeurons.from_dict(d)


# ----------------------------------------------------------------------------------------
# localize


def test_default_tau():
    assert default_tau("en") == 0.3
    assert default_tau("zh") == 0.2
    assert default_tau("fr") == 0.2
    assert default_tau(None) == 0.2


@pytest.mark.parametrize("lang,method,tau", [("en", "amig", 0.3), ("en", "kn", 0.2), ("zh", "kn", 0.2),
                                             ("fr", "amig", 0.2), (None, "kn", 0.2)])
def test_localize_records_settings_and_default_tau(lang, method, tau):
    model, tok = get_model("gpt2")
    kn, results = localize(model, tok, PROMPT, "paris", lang=lang, method=method, steps=3, layers=[2, 0],
                           return_attributions=True)
    assert kn.settings["tau"] == tau
    assert kn.settings["steps"] == 3
    assert kn.settings["layers"] == [2, 0]
    assert kn.method == method
    assert kn.lang == lang
    assert kn.target == "paris" and kn.prompts == [PROMPT]
    # one prompt: the kept neurons are exactly the thresholded ones, scores = attributions
    expected = threshold_neurons(results[0].attributions, [2, 0], tau)
    assert kn.neurons == [n for n, _ in expected]
    assert kn.scores == pytest.approx([s for _, s in expected])
    assert kn.clean_scores == [pytest.approx(results[0].score)]
    explicit = localize(model, tok, PROMPT, "paris", lang="en", tau=0.5, method="kn", steps=3, layers=[0])
    assert explicit.settings["tau"] == 0.5


def test_localize_shares_across_prompts():
    model, tok = get_model("llama")
    prompts = ["the capital of france is <mask>", "france capital is <mask>", "the capital city of france is <mask>"]
    kn, results = localize(model, tok, prompts, "paris", method="amig", steps=3, tau=0.2, share_p=0.5,
                           return_attributions=True)
    per_prompt = [[n for n, _ in threshold_neurons(r.attributions, r.layers, 0.2)] for r in results]
    assert kn.per_prompt == per_prompt
    assert sorted(kn.neurons) == shared_neurons(per_prompt, 0.5)
    assert len(kn.neurons) > 0
    mean = torch.stack([r.attributions for r in results]).mean(0)
    for (layer, index), score in zip(kn.neurons, kn.scores):
        assert score == pytest.approx(float(mean[layer, index]), rel=1e-6)
    assert kn.scores == sorted(kn.scores, reverse=True)
    strict = localize(model, tok, prompts, "paris", method="amig", steps=3, tau=0.2, share_p=0.7)
    assert sorted(strict.neurons) == shared_neurons(per_prompt, 0.7)
    assert set(strict.neurons) <= set(kn.neurons)


@pytest.mark.parametrize("method", ["kn", "amig"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_localize_finds_planted_neuron(kind, method, planted):
    p = planted(kind)
    kn, results = localize(p.model, p.tok, p.prompt, p.target, lang="en", method=method, steps=20,
                           return_attributions=True)
    assert kn.neurons[0] == p.neuron
    assert p.neuron in [n for n, _ in threshold_neurons(results[0].attributions, results[0].layers, 0.3)]
    assert len(kn.neurons) < 20  # a localization, not a flood


@pytest.mark.parametrize("kwargs,message", [(dict(share_p=1.5), r"share_p must lie in \[0, 1\)"),
                                            (dict(share_p=-0.1), "share_p"), (dict(steps=1), "steps must be an integer >= 2"),
                                            (dict(method="ig"), "unknown method")])
def test_localize_checks_options_before_any_ig_even_with_one_prompt(kwargs, message, monkeypatch):
    import amig_plugin.neurons as N

    def no_ig(*a, **k):
        raise AssertionError("IG ran before the options were checked")

    monkeypatch.setattr(N, "attribute_query", no_ig)
    model, tok = get_model("gpt2")
    with pytest.raises(ValueError, match=message):
        localize(model, tok, PROMPT, "paris", **kwargs)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_a_prompt_longer_than_the_model_is_a_clear_query_error(kind):
    from amig_plugin.models import PromptTooLongError, QueryError, get_family

    model, tok = get_model(kind)
    long_prompt = "the capital " * 40 + "of france is <mask> ."
    with pytest.raises(PromptTooLongError, match=r"needs \d+ tokens, more than the 64 positions.*shorten") as info:
        localize(model, tok, long_prompt, "paris", lang="en", steps=2)
    assert isinstance(info.value, QueryError) and "\n" not in str(info.value)
    fits = "the capital " * 25 + "of france is <mask> ."  # 50 words + specials: within 64
    assert get_family(model).encode(tok, fits, "paris").input_ids.numel() <= 64


# ----------------------------------------------------------------------------------------
# KN's τ, adaptive selection, the reason for an empty set


def test_kn_default_tau_is_dais_and_amig_keeps_the_papers():
    from amig_plugin.neurons import default_tau
    assert default_tau("en", "kn") == 0.2 and default_tau("zh", "kn") == 0.2
    assert default_tau("en", "amig") == 0.3 and default_tau("zh") == 0.2 and default_tau("fr") == 0.2


def _attr(values):
    import torch
    return torch.tensor([values], dtype=torch.float32)


def test_adaptive_selection_lands_in_range():
    from amig_plugin.neurons import adaptive_select, select_neurons
    a = _attr([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.33, 0.31])
    _, fixed = select_neurons([a], [0], 0.3, 0.7)
    assert len(fixed) == 10  # every value > 0.3
    tau, _, kept = adaptive_select([a], [0], 0.3, 0.7, (2, 5))
    assert 2 <= len(kept) <= 5 and tau > 0.3
    assert sorted(kept) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]  # τ = 0.5 keeps > 0.5
    assert tau == pytest.approx(0.5)
    # too few: τ moves down
    b = _attr([1.0, 0.25, 0.24, 0.1, 0.0])
    tau, _, kept = adaptive_select([b], [0], 0.3, 0.7, (3, 5))
    assert len(kept) == 3 and tau == pytest.approx(0.2)
    with pytest.raises(ValueError):
        adaptive_select([b], [0], 0.3, 0.7, (5, 2))


def test_empty_set_says_why():
    from amig_plugin.neurons import empty_reason, select_neurons
    a, b = _attr([1.0, 0.0, 0.0]), _attr([0.0, 1.0, 0.0])
    per_prompt, kept = select_neurons([a, b], [0], 0.3, 0.7)
    assert kept == []
    why = empty_reason(per_prompt, 0.7, 0.3, True)
    assert "no neuron is shared by > p=0.7 of 2 prompts" in why and "adaptive" in why
    assert "positive" in empty_reason([[]], 0.7, 0.3, False)


def test_localize_records_empty_reason_and_adaptive():
    from amig_plugin.neurons import KnowledgeNeurons, localize
    model, tok = get_model("gpt2")
    prompts = [PROMPT, "the capital city of france is <mask>"]
    # tau = 1: only the maximum of each prompt passes; two different maxima share nothing
    kn = localize(model, tok, prompts, "paris", lang="en", tau=1.0, steps=2)
    assert len(kn) == 0 or len(set(map(tuple, kn.per_prompt[0])) & set(map(tuple, kn.per_prompt[1]))) == 1
    if not len(kn):
        assert kn.empty_reason.startswith("no neuron")
    ad = localize(model, tok, prompts, "paris", lang="en", steps=2, share_p=0.0, adaptive=(2, 5))
    assert ad.settings["adaptive"] == [2, 5] and ad.settings["tau_start"] == 0.3
    assert 2 <= len(ad) <= 5 or ad.settings["tau"] in (0.05, 1.0)
    assert ad.empty_reason == ""
    assert KnowledgeNeurons.from_dict(ad.to_dict()).settings == ad.settings


@pytest.mark.parametrize("size_range", [(2, 5), (1, 1), (8, 12)])
def test_adaptive_from_a_one_prompt_record_equals_direct_selection(size_range):
    from amig_plugin.neurons import adaptive_from_record
    model, tok = get_model("gpt2")
    plain = localize(model, tok, PROMPT, "paris", lang="en", steps=3)
    direct = localize(model, tok, PROMPT, "paris", lang="en", steps=3, adaptive=size_range)
    derived = adaptive_from_record(plain, size_range)
    assert derived is not None
    assert derived.neurons == direct.neurons and derived.settings["tau"] == direct.settings["tau"]
    assert derived.scores == pytest.approx(direct.scores)
    assert adaptive_from_record(plain, (2, 60)) is None  # more than the recorded top neurons: cannot answer


