"""benchmarks/ig_accuracy.py: the default rule is judged case by case, and a point count that
passes only between failing neighbours is not chosen."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ig_accuracy import CANDIDATES, select_default  # noqa: E402


def _case(errors: dict[str, float], costs: dict[str, float] | None = None) -> dict:
    rows = {f"{rule}/{m}": dict(err=1.0, converged=True, cost=m / 20) for rule, m in CANDIDATES}
    for key, err in errors.items():
        rows[key]["err"] = err
    for key, cost in (costs or {}).items():
        rows[key]["cost"] = cost
    return dict(model="m", method="amig", rows=rows)


def test_non_monotone_pass_is_not_the_default():
    # midpoint 20: 1e-2; gauss 9 passes, 10 fails, 12 and 16 pass: the default is gauss/12
    case = _case({"midpoint/20": 1e-2, "gauss/4": 5e-2, "gauss/8": 5e-2, "gauss/9": 7e-3, "gauss/10": 2e-2,
                  "gauss/12": 6e-3, "gauss/16": 1e-3})
    assert select_default([case]) == ("gauss", 12)


def test_judged_case_by_case_not_worst_against_worst():
    # worst-against-worst would accept gauss/8 (worst 5e-3 <= midpoint's worst 1e-2) although it
    # is worse than midpoint on the second case
    a = _case({"midpoint/20": 1e-2, "gauss/8": 5e-3, "gauss/9": 5e-3, "gauss/10": 5e-3, "gauss/12": 1e-3,
               "gauss/16": 1e-3})
    b = _case({"midpoint/20": 1e-4, "gauss/8": 1e-3, "gauss/9": 1e-5, "gauss/10": 1e-5, "gauss/12": 1e-5,
               "gauss/16": 1e-5})
    assert select_default([a, b]) == ("gauss", 9)


def test_errors_below_float_rounding_count_as_equal():
    case = _case({"midpoint/20": 1e-7, **{f"gauss/{m}": 5e-6 for m in (4, 8, 9, 10, 12, 16)}})
    assert select_default([case]) == ("gauss", 4)


def test_midpoint_itself_is_the_fallback():
    assert select_default([_case({"midpoint/20": 1e-3})]) == ("midpoint", 20)


def test_cost_is_the_points_actually_spent():
    """The adaptive rule costs what it refined: gauss-adaptive/8 that refines to 0.65x on one case and
    stays at 0.40x on the other (mean 0.525) beats gauss/12 (0.60), and loses to it when its
    refinements cost more on average."""
    errors = {"midpoint/20": 1e-2, "gauss/12": 1e-3, "gauss/16": 1e-3, **{f"gauss-adaptive/{m}": 1e-3 for m in (6, 8)}}
    cheap = {"gauss-adaptive/6": 0.9, "gauss-adaptive/8": 0.65}
    assert select_default([_case(errors, cheap), _case(errors, {"gauss-adaptive/6": 0.9})]) == ("gauss-adaptive", 8)
    dear = {"gauss-adaptive/6": 0.9, "gauss-adaptive/8": 0.9}
    assert select_default([_case(errors, dear), _case(errors, dear)]) == ("gauss", 12)
