"""Aggregates of the protocols' per-fact records over facts.

:func:`aggregate`: per (measured language, setting, mode) means with Student-t 95% CIs,
medians, the paired difference related − unrelated, accuracy flips; :func:`success_ratios`:
the paper's success |related/unrelated| (enhance) + |related/unrelated| (suppress), flagged
unstable when an unrelated mean is within its CI of 0; :func:`success_bootstrap`:
percentile-bootstrap intervals of that ratio over facts.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Sequence

from ..stats import mean_ci, median, trimmed_mean
from .edits import MODES, setting_kind

__all__ = ["aggregate", "success_ratios", "success_bootstrap"]

_SETTING_ORDER = {"LIKN": 0, "Mono-KN": 1, "Seq-KN": 2, "Own-KN": 3, "Random": 4}  # rows sorted by kind


def _kept(records: Sequence[dict], subset: str) -> list[dict]:
    """The measured records of ``subset``: ``"all"`` facts, or those with a non-empty LIKN."""
    return [r for r in records if r.get("rows") and (subset == "all" or r["likn_size"] > 0)]


def _frac(values: Sequence) -> float:
    vals = [bool(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _ci_contains_zero(mean: float, ci: float) -> bool:
    return math.isnan(mean) or math.isnan(ci) or abs(mean) <= ci


def aggregate(records: Sequence[dict], subset: str = "likn") -> list[dict]:
    """Rows per (measured language, setting, mode) with means and 95% CIs over facts.

    ``subset``: ``"likn"`` = facts with a non-empty LIKN (an edit needs neurons; the paper's
    comparison), ``"all"`` = every fact (an empty neuron set is a no-op edit: change 0).
    """
    if subset not in ("likn", "all"):
        raise ValueError(f"subset must be 'likn' or 'all', got {subset!r}")
    keep = _kept(records, subset)
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for rec in keep:
        for row in rec["rows"]:
            groups.setdefault((row["lang"], row["setting"], row.get("mode", "edit"), row["edit"]), []).append((rec, row))
    out = []
    for (lang, setting, mode, edit), items in groups.items():
        rows = [row for _, row in items]
        rel = mean_ci([r["related"] for r in rows])
        unrel = mean_ci([r["unrelated"] for r in rows])
        spec = mean_ci([r["related"] - r["unrelated"] for r in rows])
        agg = dict(lang=lang, setting=setting, edit=edit, mode=mode, facts=len(rows),
                   fact_ids=sorted(rec["fact_id"] for rec, _ in items),
                   mean_neurons=statistics.fmean(r["n_neurons"] for r in rows),
                   empty_edits=sum(r["n_neurons"] == 0 for r in rows),
                   related_mean=rel[0], related_ci=rel[1], unrelated_mean=unrel[0], unrelated_ci=unrel[1],
                   related_median=median([r["related"] for r in rows]),
                   related_trimmed=trimmed_mean([r["related"] for r in rows]),
                   unrelated_median=median([r["unrelated"] for r in rows]),
                   specific_mean=spec[0], specific_ci=spec[1],
                   ratio=abs(rel[0] / unrel[0]) if unrel[0] and not math.isnan(unrel[0]) else float("inf"),
                   ratio_unstable=_ci_contains_zero(*unrel),
                   acc_before=_frac(r["correct_before"] for r in rows), acc_after=_frac(r["correct_after"] for r in rows),
                   lost=sum(bool(r["correct_before"]) and r["correct_after"] is False for r in rows),
                   gained=sum(r["correct_before"] is False and bool(r["correct_after"]) for r in rows),
                   unrelated_scored=sum(r["unrelated_scored"] for r in rows),
                   unrelated_correct_before=sum(r["unrelated_correct_before"] for r in rows),
                   unrelated_correct_after=sum(r["unrelated_correct_after"] for r in rows))
        if mode == "edit":  # value protocol
            lr = mean_ci([r["log10_new_ratio"] for r in rows])
            agg.update(log10_new_mean=lr[0], log10_new_ci=lr[1],
                       new_first_before=_frac(r["new_first_before"] for r in rows),
                       new_first_after=_frac(r["new_first_after"] for r in rows))
        out.append(agg)
    out.sort(key=lambda a: (a["lang"], _SETTING_ORDER.get(setting_kind(a["setting"]), 9), a["setting"], a["mode"]))
    return out


def success_ratios(rows: Sequence[dict]) -> list[dict]:
    """The paper's success per (language, setting): |rel/unrel| (enhance) + |rel/unrel|
    (suppress), from :func:`aggregate`'s activation rows; ``unstable`` when an unrelated
    mean is within its 95% CI of 0 (the ratio then divides by noise)."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["mode"] in MODES:
            by.setdefault((r["lang"], r["setting"]), {})[r["mode"]] = r
    out = []
    for (lang, setting), modes in by.items():
        if set(modes) != set(MODES):
            continue
        e, s = modes["enhance"], modes["suppress"]
        out.append(dict(lang=lang, setting=setting, success=e["ratio"] + s["ratio"], enhance_ratio=e["ratio"],
                        suppress_ratio=s["ratio"], unstable=e["ratio_unstable"] or s["ratio_unstable"], facts=e["facts"]))
    return out


def success_bootstrap(records: Sequence[dict], subset: str = "likn", n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Percentile-bootstrap 95% intervals (facts resampled with replacement, the same
    resample for every setting) of the paper's success ratio per (language, setting), and
    for each Mono-KN setting the share of resamples in which LIKN's success exceeds it.
    Shows how unstable the ratio is: it divides by mean unrelated changes near 0."""
    keep = _kept(records, subset)
    if not keep:
        return []
    cells: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}
    for k, rec in enumerate(keep):
        for row in rec["rows"]:
            if row.get("mode") in MODES:
                rel, unrel = cells.setdefault((row["lang"], row["setting"], row["mode"]),
                                              ([float("nan")] * len(keep), [float("nan")] * len(keep)))
                rel[k], unrel[k] = row["related"], row["unrelated"]
    pairs = sorted({(l, s) for l, s, _ in cells})

    def success(lang: str, setting: str, idx: Sequence[int]) -> float:
        total = 0.0
        for mode in MODES:
            rel, unrel = cells[(lang, setting, mode)]
            r = [rel[i] for i in idx if not math.isnan(rel[i])]
            u = [unrel[i] for i in idx if not math.isnan(unrel[i])]
            if not r or not u or statistics.fmean(u) == 0:
                return float("inf")
            total += abs(statistics.fmean(r) / statistics.fmean(u))
        return total

    rng = random.Random(seed)
    n = len(keep)
    samples: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        for p in pairs:
            samples[p].append(success(*p, idx))
    pairs.sort(key=lambda p: (p[0], _SETTING_ORDER.get(setting_kind(p[1]), 9), p[1]))
    out = []
    for lang, setting in pairs:
        vals = sorted(samples[(lang, setting)])
        row = dict(lang=lang, setting=setting, facts=n, success=success(lang, setting, range(n)),
                   ci_low=vals[int(0.025 * (n_boot - 1))], ci_high=vals[int(0.975 * (n_boot - 1))])
        if setting_kind(setting) == "Mono-KN" and (lang, "LIKN") in samples:
            likn_vals = samples[(lang, "LIKN")]
            row["p_likn_beats"] = sum(a > b for a, b in zip(likn_vals, samples[(lang, setting)])) / n_boot
        out.append(row)
    return out
