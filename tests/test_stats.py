"""Statistics on hand-made data with known answers (reference values from printed t tables)."""

import math
import statistics

import pytest

from amig_plugin import stats


@pytest.mark.parametrize("df,expected", [(1, 12.706205), (3, 3.182446), (4, 2.776445), (10, 2.228139),
                                         (30, 2.042272), (120, 1.979930)])
def test_t_quantile_matches_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)


def test_t_quantile_symmetry_and_other_levels():
    assert stats.t_quantile(0.025, 5) == pytest.approx(-stats.t_quantile(0.975, 5), abs=1e-10)
    assert stats.t_quantile(0.95, 10) == pytest.approx(1.812461, abs=2e-6)
    assert stats.t_quantile(0.995, 20) == pytest.approx(2.845340, abs=2e-6)
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)


def test_t_cdf_cauchy_closed_form():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi
    for t in (-3.0, -0.5, 0.0, 0.7, 5.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)


def test_betainc_closed_forms():
    assert stats.betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert stats.betainc(2.0, 1.0, 0.3) == pytest.approx(0.09)   # x^a for b = 1
    assert stats.betainc(1.0, 3.0, 0.4) == pytest.approx(1 - 0.6 ** 3)


def test_mean_ci_uses_student_t():
    vals = [1.0, 2.0, 3.0, 6.0]
    mean, half = stats.mean_ci(vals)
    assert mean == 3.0
    assert half == pytest.approx(3.182446 * statistics.stdev(vals) / 2.0, rel=1e-6)
    # the old z = 1.96 interval was ~38% narrower for n = 4
    assert half / (1.96 * statistics.stdev(vals) / 2.0) == pytest.approx(1.6237, abs=1e-3)
    assert math.isnan(stats.mean_ci([5.0])[1])
    assert stats.mean_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_intervene_mean_ci_is_the_t_interval():
    from amig_plugin.stats import mean_ci
    assert mean_ci([1.0, 2.0, 3.0, 6.0]) == stats.mean_ci([1.0, 2.0, 3.0, 6.0])


def test_trimmed_mean_and_median_resist_an_outlier():
    vals = [1.0] * 9 + [1000.0]
    assert stats.trimmed_mean(vals, 0.1) == 1.0
    assert stats.median(vals) == 1.0
    assert statistics.fmean(vals) == pytest.approx(100.9)


def test_bootstrap_is_seeded_and_covers_the_mean():
    vals = [float(i) for i in range(20)]
    a = stats.bootstrap_ci(vals, seed=3)
    b = stats.bootstrap_ci(vals, seed=3)
    assert a == b
    point, lo, hi = a
    assert point == 9.5 and lo < 9.5 < hi
    # the bootstrap interval of a mean is close to the t interval for symmetric data
    half = stats.mean_ci(vals)[1]
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)
    # a constant sample has a zero-width interval
    assert stats.bootstrap_ci([2.0] * 5)[1:] == (2.0, 2.0)


def test_paired_difference_skips_missing_pairs():
    d = stats.paired_difference([1.0, 2.0, 3.0, float("nan")], [0.0, 0.0, 1.0, 5.0])
    assert d["n"] == 3 and d["mean"] == pytest.approx(5 / 3)
    assert d["low"] <= d["mean"] <= d["high"]
