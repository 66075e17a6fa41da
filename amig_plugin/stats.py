"""Small-sample statistics shared by every study (pure Python, no scipy).

* :func:`t_quantile` — Student-t quantiles from the regularized incomplete beta function
  I_x(a, b) (Lentz's continued fraction), inverted by bisection;
* :func:`mean_ci` — mean and the half-width of the Student-t 95% interval
  (t_{0.975, n−1} · s / √n; for n = 4 that is 3.18 · s/√n, not 1.96 · s/√n);
* :func:`bootstrap_ci` — seeded percentile bootstrap of any statistic (heavy-tailed changes);
* :func:`trimmed_mean`, :func:`median` — location estimates to print beside means;
* :func:`paired_difference` — mean of (a_i − b_i) with a bootstrap interval: a quantity with a
  CI where a ratio of two noisy means has none.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, Sequence

__all__ = ["betainc", "t_cdf", "t_quantile", "mean_ci", "describe", "bootstrap_ci", "trimmed_mean", "median",
           "paired_difference", "finite"]


def finite(values: Sequence[float]) -> list[float]:
    """The values that are numbers (NaN and ±inf dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (modified Lentz), converges for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom:
    1 − ½ I_{df/(df+t²)}(df/2, ½) for t ≥ 0, symmetric below 0."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on :func:`t_cdf`, to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return float("inf")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t ``level`` interval) over the finite values:
    t_{(1+level)/2, n−1} · s / √n. NaN half-width for n < 2."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1 or any(math.isinf(v) for v in vals):
        return mean, float("nan")
    sd = statistics.stdev(vals)
    return mean, t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)


def median(values: Sequence[float]) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.median(vals) if vals else float("nan")


def trimmed_mean(values: Sequence[float], trim: float = 0.1) -> float:
    """Mean after dropping ⌊trim·n⌋ values at each end (trim = 0.1: the 10% trimmed mean)."""
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    vals = sorted(float(v) for v in values if v is not None and not math.isnan(float(v)))
    if not vals:
        return float("nan")
    k = int(trim * len(vals))
    kept = vals[k:len(vals) - k]
    return math.fsum(kept) / len(kept)


def bootstrap_ci(values: Sequence, stat: Callable[[Sequence], float] = statistics.fmean, *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, low, high): percentile bootstrap (resample ``values`` with replacement
    ``n_boot`` times, seeded). ``values`` may be any items ``stat`` accepts (e.g. pairs)."""
    items = list(values)
    if not items:
        return float("nan"), float("nan"), float("nan")
    point = stat(items)
    if len(items) == 1:
        return point, float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(items)
    boots = sorted(stat([items[rng.randrange(n)] for _ in range(n)]) for _ in range(n_boot))
    alpha = (1.0 - level) / 2.0
    return point, percentile(boots, alpha), percentile(boots, 1.0 - alpha)


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of sorted values."""
    pos = q * (len(sorted_vals) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def describe(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean with its t interval, median with a bootstrap interval, 10% trimmed mean, n."""
    vals = finite(values)
    mean, half = mean_ci(vals)
    med, lo, hi = bootstrap_ci(vals, statistics.median, n_boot=n_boot, seed=seed) if vals else (float("nan"),) * 3
    return dict(n=len(vals), mean=mean, ci=half, median=med, median_low=lo, median_high=hi,
                trimmed_mean=trimmed_mean(vals))


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a_i − b_i over pairs where both are finite, with its t half-width and a
    percentile-bootstrap interval."""
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None
             and math.isfinite(float(x)) and math.isfinite(float(y))]
    mean, half = mean_ci(diffs)
    _, lo, hi = bootstrap_ci(diffs, n_boot=n_boot, seed=seed) if diffs else (0, float("nan"), float("nan"))
    return dict(n=len(diffs), mean=mean, ci=half, low=lo, high=hi)
