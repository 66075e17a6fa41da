"""Quadrature rules, the engine under every rule, and the convergence guard.

Every rule is nodes and weights on [0, 1]; Gauss-Legendre must be exact on polynomials up to
degree 2m − 1, the graded ``steep`` rule must catch a jump next to α = 0 that Riemann sums
miss, and the engine must equal the naive per-layer reference whatever the rule.
"""

from __future__ import annotations

import math

import pytest
import torch

from amig_plugin.attribution import (QUADRATURES, attribute_query, gauss_legendre, layer_relative_residuals,
                                     neuron_attributions, quadrature_rule, refine_unconverged, steep_rule)
from amig_plugin.defaults import DEFAULT_RESIDUAL_TOLERANCE, RESIDUAL_FLOOR
from amig_plugin.models import get_family
from conftest import FAMILIES, get_model
from test_attribution import TARGET2, prompt_of, ref_ig, rel_diff

GEMMA_PROMPT = "the capital of france is <mask>"


def _integrate(rule: tuple[torch.Tensor, torch.Tensor], degree: int) -> float:
    alphas, weights = rule
    return float((weights * alphas ** degree).sum())


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 12, 16, 20, 64])
def test_gauss_legendre_exact_up_to_degree_2m_minus_1(m):
    alphas, weights = gauss_legendre(m)
    assert alphas.dtype == torch.float64 and alphas.shape == weights.shape == (m,)
    assert bool((alphas > 0).all() and (alphas < 1).all() and (weights > 0).all())
    assert bool((alphas[1:] > alphas[:-1]).all())
    for degree in range(2 * m):
        assert _integrate((alphas, weights), degree) == pytest.approx(1 / (degree + 1), rel=1e-12, abs=1e-14), degree
    if m <= 8:  # and no better: degree 2m is not integrated exactly
        assert abs(_integrate((alphas, weights), 2 * m) - 1 / (2 * m + 1)) > 1e-11


def test_gauss_legendre_known_nodes():
    alphas, weights = gauss_legendre(2)
    torch.testing.assert_close(alphas, torch.tensor([0.5 - 0.5 / math.sqrt(3), 0.5 + 0.5 / math.sqrt(3)], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    alphas, weights = gauss_legendre(256)  # the benchmarks' reference rule
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-13)
    assert _integrate((alphas, weights), 511) == pytest.approx(1 / 512, rel=1e-9)


@pytest.mark.parametrize("quadrature", QUADRATURES)
@pytest.mark.parametrize("m", [1, 5, 7, 13, 24, 42])
def test_every_rule_weights_sum_to_one_on_ascending_nodes(quadrature, m):
    alphas, weights = quadrature_rule(m, quadrature)
    assert alphas.shape == weights.shape == (m,)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((alphas >= 0).all() and (alphas <= 1).all())
    assert bool((alphas[1:] >= alphas[:-1]).all())


def test_steep_rule_panels():
    alphas, weights = steep_rule(24)  # 4 panels of 6 points: [0, 1e-3], [1e-3, 1e-2], [1e-2, 0.1], [0.1, 1]
    assert alphas.shape == (24,)
    assert float(alphas.min()) < 1e-4 and int((alphas < 1e-3).sum()) == 6 and int((alphas > 0.1).sum()) == 6
    # composite 6-point Gauss-Legendre: exact for polynomials of degree <= 11
    for degree in range(12):
        assert _integrate((alphas, weights), degree) == pytest.approx(1 / (degree + 1), rel=1e-12)


def _step_like(c: float):
    """g = d/dα [α / sqrt(α² + c²)]: a path that is flat except a jump of width c at α = 0."""
    return (lambda a: c * c / (a * a + c * c) ** 1.5), 1 / math.sqrt(1 + c * c)


@pytest.mark.parametrize("c", [1e-2, 1e-3, 1e-4, 1e-5])
def test_steep_rule_catches_a_jump_at_zero_that_riemann_sums_miss(c):
    g, exact = _step_like(c)

    def rel_err(rule):
        alphas, weights = rule
        return abs(float((weights * g(alphas)).sum()) - exact) / exact

    assert rel_err(quadrature_rule(20, "midpoint")) > DEFAULT_RESIDUAL_TOLERANCE
    assert rel_err(quadrature_rule(42, "steep")) < 1e-3
    assert rel_err(quadrature_rule(1024, "gauss")) < 1e-6 or c < 1e-3  # (Gauss-Legendre gets there only slowly)


# ----------------------------------------------------------------------------------------
# the engine under every rule


@pytest.mark.parametrize("kind", FAMILIES)
def test_engine_matches_naive_reference_under_every_rule(kind):
    model, tok = get_model(kind)
    prompt = prompt_of(kind)
    for quadrature, steps in (("midpoint", 3), ("left", 3), ("right", 3), ("linspace", 3), ("gauss", 4), ("steep", 13)):
        for method in ("kn", "amig"):
            R, _, _, clean, base_scores = ref_ig(model, tok, kind, prompt, TARGET2, method=method, objective="prob",
                                                 steps=steps, quadrature=quadrature)
            res = neuron_attributions(model, tok, prompt, TARGET2, method=method, steps=steps, quadrature=quadrature,
                                      ig_batch_size=5)  # batches mix layers
            d = rel_diff(res.attributions, R)
            assert d < 1e-4, f"{quadrature}/{steps} {method}: max rel diff {d:.3g}"
            assert res.quadrature == quadrature and res.steps == steps
            torch.testing.assert_close(res.baseline_scores, base_scores, rtol=1e-4, atol=1e-9)


# ----------------------------------------------------------------------------------------
# the convergence guard


def test_layer_relative_residuals_use_each_layers_own_delta_with_a_floor():
    residual = torch.tensor([0.01, 0.01, 1e-6])
    delta = torch.tensor([1.0, 0.1, 1e-9])  # the last layer's ΔF is ~0: judged against the floor
    rel = layer_relative_residuals(residual, delta)
    torch.testing.assert_close(rel, torch.tensor([0.01, 0.1, 1e-6 / RESIDUAL_FLOOR]))
    # ΔF within the float32 noise of the scores (under 1e-4 · F) is judged against that instead
    noisy = layer_relative_residuals(torch.tensor([1e-9, 2e-9]), torch.tensor([1e-9, 1e-9]), score=1e-3)
    torch.testing.assert_close(noisy, torch.tensor([1e-9 / 1e-7, 2e-9 / 1e-7]))
    # the random-weight BERT-tiny case of benchmarks/ig_accuracy.py: attributions exact to 3e-7,
    # yet a float32 "residual" of 7 % of its ΔF ~ 1e-8 (P = 3.6e-4); not flagged against 1e-4 · F
    bert_tiny = layer_relative_residuals(torch.tensor([7.4e-10, 0.0]), torch.tensor([1e-8, 1.2e-8]), score=3.6e-4)
    assert float(bert_tiny[0]) == pytest.approx(7.4e-10 / 3.6e-8, rel=1e-4) and float(bert_tiny[0]) < 0.05
    # a layer that matters (ΔF = 0.2 F) is still judged against its own ΔF
    real = layer_relative_residuals(torch.tensor([0.1 * 0.2 * 3.6e-4]), torch.tensor([0.2 * 3.6e-4]), score=3.6e-4)
    assert float(real[0]) == pytest.approx(0.1, rel=1e-4)


def test_guard_flags_unconverged_zero_baseline_and_passes_converged():
    """Gemma-3's zero baseline at midpoint m = 20 misses the jump at α ≈ 0: every layer is flagged;
    AMIG's path is smooth and converged; the steep rule converges the zero baseline."""
    model, tok = get_model("gemma3")
    kn = neuron_attributions(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="midpoint")
    assert not kn.converged and kn.unconverged_layers == kn.layers
    assert bool((kn.layer_relative_residuals > 0.5).all())
    assert kn.relative_residual == pytest.approx(float(kn.layer_relative_residuals.max()))
    amig = neuron_attributions(model, tok, GEMMA_PROMPT, "paris", method="amig", steps=20, quadrature="midpoint")
    assert amig.converged and amig.unconverged_layers == [] and amig.relative_residual < 1e-2
    steep = neuron_attributions(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=24, quadrature="steep")
    assert steep.converged and steep.relative_residual < 1e-2


def test_worst_layer_is_not_hidden_by_the_largest_delta():
    model, tok = get_model("gemma3")
    kn = neuron_attributions(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20)
    delta = (kn.score - kn.baseline_scores).abs()
    old_style = float(kn.completeness_residual.abs().max() / delta.max())
    assert kn.relative_residual >= old_style - 1e-6


def test_refine_unconverged_reruns_only_the_bad_layers():
    model, tok = get_model("gemma3")
    family = get_family(model)
    query = family.encode(tok, GEMMA_PROMPT, "paris")
    kn = attribute_query(family, query, tok, method="kn", steps=20, quadrature="midpoint")
    assert not kn.converged
    fixed = refine_unconverged(family, query, kn, tok, max_steps=48)
    assert fixed.converged and set(fixed.refined) == set(kn.unconverged_layers)
    assert set(fixed.refined.values()) == {"steep/40"}  # from max(2m, 24) = 40 points
    assert fixed.points_per_layer == pytest.approx(20 + 40 * len(fixed.refined) / len(fixed.layers))
    direct = attribute_query(family, query, tok, method="kn", steps=40, quadrature="steep")
    torch.testing.assert_close(fixed.attributions, direct.attributions, rtol=1e-4, atol=1e-7)
    amig = attribute_query(family, query, tok, method="amig", steps=20)
    assert refine_unconverged(family, query, amig, tok) is amig  # converged: untouched


def test_localize_warns_refuses_or_refines_unconverged_results(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.commands.demo import unconverged_warning
    from amig_plugin.neurons import KnowledgeNeurons, UnconvergedError, localize
    from amig_plugin.report import unconverged_lines

    model, tok = get_model("gemma3")
    flagged = localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="midpoint")
    assert flagged.converged is False and flagged.unconverged_layers == [0, 1, 2]
    assert len(flagged.layer_relative_residuals) == 1 and len(flagged.layer_relative_residuals[0]) == 3
    again = KnowledgeNeurons.from_dict(flagged.to_dict())  # the record keeps the guard
    assert again.converged is False and again.relative_residual == flagged.relative_residual
    assert "KN IG is unconverged for 1 of 1 facts" in unconverged_warning([flagged], "kn")
    assert unconverged_warning([localize(model, tok, GEMMA_PROMPT, "paris", method="amig")], "amig") is None
    with pytest.raises(UnconvergedError, match="unconverged"):
        localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="gauss", on_unconverged="refuse")
    refined = localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="gauss", on_unconverged="refine")
    assert refined.converged is True and refined.settings["on_unconverged"] == "refine"
    # the cache: refusal also applies to a cached unconverged record; 'refine' is a different key
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    cache.localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="gauss")
    with pytest.raises(UnconvergedError):
        cache.localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="gauss", on_unconverged="refuse")
    assert cache.hits == 1
    assert cache.localize(model, tok, GEMMA_PROMPT, "paris", method="kn", steps=20, quadrature="gauss", on_unconverged="refine").converged
    assert cache.misses == 2
    rows = [dict(method="kn", lang="en", facts=3, unconverged=2, max_rel_residual=0.9), dict(method="amig", unconverged=0)]
    lines = unconverged_lines(rows)
    assert len([l for l in lines if "WARNING" in l]) == 1 and "2 of 3 KN" in lines[0]


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_captum_layer_integrated_gradients_agrees(kind):
    """Captum's LayerIntegratedGradients at our neuron site (benchmarks/attribution.py) gives the
    same KN attributions under the midpoint and Gauss-Legendre rules (a second anchor)."""
    pytest.importorskip("captum", reason="captum is not installed (it comes with the 'test' and 'bench' extras)")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from attribution import captum_kn

    model, tok = get_model(kind)
    prompt = {"gpt2": GEMMA_PROMPT, "bert": "france capital <mask> ."}[kind]
    for quadrature, rule, steps in (("midpoint", "riemann_middle", 7), ("gauss", "gausslegendre", 5)):
        ours = neuron_attributions(model, tok, prompt, "paris", method="kn", steps=steps, quadrature=quadrature)
        theirs = captum_kn(model, tok, steps, rule, 256)(prompt, "paris")
        assert rel_diff(ours.attributions, theirs) < 1e-5


# ----------------------------------------------------------------------------------------
# the adaptive rule


def _check_refinement(family, query, tok, method, first, adaptive, rule_name):
    """Each refined layer equals a direct run of the rule it kept; the others the first pass."""
    for i, layer in enumerate(adaptive.layers):
        rule = adaptive.refined.get(layer)
        if rule is None:
            torch.testing.assert_close(adaptive.attributions[i], first.attributions[i], rtol=0, atol=0)
            continue
        name, m = rule.split("/")
        assert name == rule_name
        direct = attribute_query(family, query, tok, method=method, steps=int(m), quadrature=name, layers=[layer])
        torch.testing.assert_close(adaptive.attributions[i], direct.attributions[0], rtol=1e-5, atol=1e-8)


def test_adaptive_rule_refines_only_layers_above_tolerance_with_gauss(monkeypatch):
    """AMIG: the layers above the tolerance (here set below every layer's residual but one's
    floor) get Gauss-Legendre at doubling points, each equal to a direct run of its rule."""
    import amig_plugin.attribution.ig as ig
    from amig_plugin.defaults import ADAPTIVE_MAX_STEPS

    model, tok = get_model("gemma3")
    family = get_family(model)
    query = family.encode(tok, GEMMA_PROMPT, "paris")
    first = attribute_query(family, query, tok, method="amig", steps=2, quadrature="gauss")
    rel = first.layer_relative_residuals
    tolerance = float(rel.sort().values[len(rel) // 2])  # about half the layers above it
    monkeypatch.setattr(ig, "ADAPTIVE_TOLERANCE", tolerance)
    above = [l for l, r in zip(first.layers, rel.tolist()) if r > tolerance]
    assert above and len(above) < len(first.layers)
    adaptive = attribute_query(family, query, tok, method="amig", steps=2, quadrature="gauss-adaptive")
    assert set(adaptive.refined) == set(above)
    assert all(4 <= int(r.split("/")[1]) <= ADAPTIVE_MAX_STEPS for r in adaptive.refined.values())
    assert adaptive.relative_residual <= first.relative_residual
    _check_refinement(family, query, tok, "amig", first, adaptive, "gauss")
    assert adaptive.points_per_layer > 2


def test_adaptive_rule_refines_the_zero_baseline_with_the_steep_rule_to_the_guard():
    """KN on the tiny Gemma-3 jumps next to α = 0: Gauss-Legendre leaves residuals far above the
    guard's tolerance; the adaptive rule takes the steep rule there (24 points first) and
    converges every layer."""
    model, tok = get_model("gemma3")
    family = get_family(model)
    query = family.encode(tok, GEMMA_PROMPT, "paris")
    first = attribute_query(family, query, tok, method="kn", steps=4, quadrature="gauss")
    assert not first.converged
    adaptive = attribute_query(family, query, tok, method="kn", steps=4, quadrature="gauss-adaptive")
    assert set(adaptive.refined) == set(first.unconverged_layers)
    assert adaptive.converged
    _check_refinement(family, query, tok, "kn", first, adaptive, "steep")


def test_adaptive_rule_leaves_a_converged_result_alone():
    model, tok = get_model("gpt2")
    prompt = prompt_of("gpt2")
    gauss = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=8, quadrature="gauss")
    adaptive = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=8, quadrature="gauss-adaptive")
    from amig_plugin.defaults import ADAPTIVE_TOLERANCE

    assert gauss.relative_residual <= ADAPTIVE_TOLERANCE
    assert adaptive.refined == {} and adaptive.points_per_layer == 8
    torch.testing.assert_close(adaptive.attributions, gauss.attributions, rtol=0, atol=0)


def test_adaptive_rule_stops_where_more_points_do_not_help(monkeypatch):
    """A residual that does not halve under twice the points is not quadrature error: the layer
    is refined once, not to the cap."""
    import amig_plugin.attribution.ig as ig

    model, tok = get_model("gemma3")
    family = get_family(model)
    query = family.encode(tok, GEMMA_PROMPT, "paris")
    calls = []
    real = ig._integrate

    def stubborn(runner, layers, activations, per_baseline, alphas, weights, batch, progress=False, **kw):
        attributions, scores, clean = real(runner, layers, activations, per_baseline, alphas, weights, batch, progress,
                                           **kw)
        if calls is not None and len(alphas) > 4:  # refinements: give back the first pass's error
            calls.append(len(alphas))
            attributions = first.attributions[[first.layers.index(l) for l in layers]].clone()
        return attributions, scores, clean

    first = attribute_query(family, query, tok, method="kn", steps=4, quadrature="gauss")
    monkeypatch.setattr(ig, "_integrate", stubborn)
    adaptive = attribute_query(family, query, tok, method="kn", steps=4, quadrature="gauss-adaptive")
    assert calls == [24] and set(adaptive.refined.values()) == {"steep/24"}
    assert adaptive.points_per_layer == pytest.approx(4 + 24 * len(adaptive.refined) / len(adaptive.layers))


def test_points_per_layer_counts_every_refinement():
    from dataclasses import replace

    model, tok = get_model("gpt2")
    base = neuron_attributions(model, tok, prompt_of("gpt2"), TARGET2, method="amig", steps=8, quadrature="gauss-adaptive")
    L = len(base.layers)
    assert replace(base, refined={0: "gauss/32"}, refined_points=16 + 32).points_per_layer == pytest.approx(8 + (16 + 32) / L)
    assert replace(base, steps=20, quadrature="midpoint", refined={0: "steep/80"}, refined_points=40 + 80).points_per_layer == \
        pytest.approx(20 + (40 + 80) / L)
