"""benchmarks/attribution.py, EasyEdit mode at equal accuracy: the rule selection, the
high-precision reference (256 vs 128 Gauss-Legendre points) and the final line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from attribution import (easyedit_convention, fastest_per_prompt, final_line, reference_attributions,  # noqa: E402
                         rel_l2, select_equal_accuracy)

from amig_plugin.attribution import neuron_attributions  # noqa: E402
from amig_plugin.testing import get_model, prompt_for  # noqa: E402

COST = {"gauss/4": 4, "gauss/6": 6, "gauss/8": 8, "gauss/12": 12}


def test_selection_takes_the_cheapest_rule_at_least_as_accurate_on_every_prompt():
    errors = {"gauss/4": [1e-2, 3e-3], "gauss/6": [4e-3, 2e-3], "gauss/8": [1e-4, 1e-4], "gauss/12": [1e-6, 1e-6]}
    # gauss/4 fails the first prompt; gauss/6 meets both (ties count as equal accuracy)
    assert select_equal_accuracy(errors, [5e-3, 2e-3], COST) == "gauss/6"
    # gauss/4's worst error (1e-2) is within the worst bound, but not on the first prompt itself
    assert select_equal_accuracy(errors, [9e-3, 2e-2], COST) == "gauss/6"
    assert select_equal_accuracy(errors, [1e-1, 1e-1], COST) == "gauss/4"
    assert select_equal_accuracy(errors, [1e-5, 1e-5], COST) == "gauss/12"
    assert select_equal_accuracy(errors, [1e-7, 1e-2], COST) is None
    # cost decides, not the order of the mapping
    shuffled = dict(reversed(list(errors.items())))
    assert select_equal_accuracy(shuffled, [1e-1, 1e-1], COST) == "gauss/4"


def test_rel_l2_is_over_the_whole_matrix():
    import torch

    ref = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert rel_l2(ref, ref) == 0.0
    assert rel_l2(ref + torch.tensor([[0.0, 0.5], [0.0, 0.0]]), ref) == pytest.approx(0.1)


@pytest.mark.parametrize("kind, family", [("causal", "gpt2"), ("masked", "bert")])
def test_reference_at_256_points_agrees_with_128_far_below_easyedits_error(kind, family):
    model, tok = get_model(family)
    prompt = prompt_for(family)
    ref = reference_attributions(model, tok, prompt, "paris", kind, 256)
    coarse = reference_attributions(model, tok, prompt, "paris", kind, 128)
    check = rel_l2(coarse, ref)
    easyedit_rule = neuron_attributions(model, tok, prompt, "paris", **easyedit_convention(kind, 20, "linspace"))
    easyedit_err = rel_l2(easyedit_rule.attributions, ref)
    assert check < 1e-5
    assert easyedit_err > 100 * check  # the reference resolves errors of EasyEdit's size
    # and Gauss-Legendre converges towards it: 16 points are far closer than 4
    g4, g16 = (rel_l2(neuron_attributions(model, tok, prompt, "paris", **easyedit_convention(kind, m, "gauss")).attributions,
                      ref) for m in (4, 16))
    assert g16 < g4 and g16 < easyedit_err


def _result(speedup, eq_speedup, rule="gauss/6"):
    return dict(speedup=speedup, max_rel_diff=1e-6, eq_speedup=eq_speedup, eq_rule=rule, eq_err=2e-3, ee_err=5e-3,
                ref_check=1e-8)


def test_final_line_keeps_the_old_fields_first_and_adds_equal_accuracy_and_runs():
    one = [{"causal": _result(10.2, 31.0), "masked": _result(2.4, 7.5)}]
    line = final_line(one, ["causal", "masked"], "easyedit_kn")
    assert line.startswith("speedup_vs_easyedit_kn: causal=10.2 masked=2.4 max_rel_diff=1.0e-06 ")
    assert "equal_accuracy_causal=31.0 (gauss/6 err 2.0e-03 vs easyedit err 5.0e-03)" in line
    assert "equal_accuracy_masked=7.5" in line and "runs=" not in line
    three = one + [{"causal": _result(9.2, 28.0), "masked": _result(2.3, 7.0)},
                   {"causal": _result(10.5, 33.0), "masked": _result(2.6, 8.0)}]
    line = final_line(three, ["causal", "masked"], "easyedit_kn")
    assert line.startswith("speedup_vs_easyedit_kn: causal=10.2 masked=2.4 ")  # medians
    assert "runs=3 min_causal=9.2 min_equal_accuracy_causal=28.0 min_masked=2.3 min_equal_accuracy_masked=7.0" in line
    captum = final_line([{"causal": dict(speedup=12.0, max_rel_diff=2e-7)}], ["causal"], "captum")
    assert captum == "speedup_vs_captum: causal=12.0 max_rel_diff=2.0e-07"


def _pass(times, rss=100.0, queries=(("a", "b"), ("c", "d"), ("e", "f"))):
    return dict(times=list(times), queries=[list(q) for q in queries], scores=[[0.0]] * len(times),
                peak_rss_mb=rss, extra_rss_mb=rss / 10)


def test_fastest_per_prompt_drops_a_burst_that_the_fastest_whole_pass_would_keep():
    # pass 1 has a burst on prompt 0, pass 2 on prompt 2: the fastest whole pass (pass 2, 3.4 s)
    # keeps its burst; each prompt's fastest time sums to 3.0 s
    passes = [_pass([2.0, 1.0, 1.0], rss=120.0), _pass([1.0, 1.0, 1.4])]
    best = fastest_per_prompt(passes)
    assert best["times"] == [1.0, 1.0, 1.0]
    assert best["peak_rss_mb"] == 120.0 and best["extra_rss_mb"] == 12.0
    assert best["scores"] == passes[0]["scores"] and best["queries"] == passes[0]["queries"]
    assert passes[0]["times"] == [2.0, 1.0, 1.0]  # the passes themselves are untouched
    assert fastest_per_prompt([passes[1]])["times"] == [1.0, 1.0, 1.4]


def test_fastest_per_prompt_refuses_passes_over_different_prompts():
    with pytest.raises(RuntimeError, match="different prompts"):
        fastest_per_prompt([_pass([1.0, 1.0, 1.0]), _pass([1.0, 1.0, 1.0], queries=(("a", "b"), ("c", "d"), ("x", "y")))])
    with pytest.raises(ValueError, match="no timed pass"):
        fastest_per_prompt([])
