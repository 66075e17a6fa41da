"""Markdown tables of the editing experiment's aggregates.

:func:`activation_table` (suppression and enhancement side by side, the paper's success),
:func:`sturdy_table` (paired differences and medians), :func:`bootstrap_table` (success with
bootstrap intervals), :func:`value_table` (the value-vector edit); :func:`num_cell` and
:func:`pct_cell` format one number (n/a for NaN, ∞).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from .statistics import success_ratios

__all__ = ["num_cell", "pct_cell", "bootstrap_table", "activation_table", "sturdy_table", "value_table"]


def pct_cell(mean: float, ci: float) -> str:
    """``+12.3% ± 4.5`` (a relative change in percent with its CI half-width), n/a for NaN."""
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:+.1f}% ± {100 * ci:.1f}" if not math.isnan(ci) else f"{100 * mean:+.1f}%"


def num_cell(x: float, fmt: str = ".2f") -> str:
    """``x`` formatted with ``fmt``; n/a for None or NaN, ∞ for inf."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else ("∞" if x == float("inf") else format(x, fmt))


def _suppress_enhance(rows: Sequence[dict]) -> Iterator[tuple[str, str, dict, dict]]:
    """``(lang, setting, suppress row, enhance row)`` of the activation aggregate rows, in
    their order; a (language, setting) that lacks a mode is left out."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["lang"], r["setting"]), {})[r["mode"]] = r
    for (lang, setting), m in by.items():
        s, e = m.get("suppress"), m.get("enhance")
        if s is not None and e is not None:
            yield lang, setting, s, e


def bootstrap_table(rows: Sequence[dict]) -> str:
    """Markdown: :func:`success_bootstrap`'s rows, the paper's success with its interval."""
    lines = ["| measured in | setting | success (paper's) | bootstrap 95% interval | LIKN > this setting in |",
             "|---|---|---|---|---|"]
    for r in rows:
        p = f"{100 * r['p_likn_beats']:.0f}% of resamples" if "p_likn_beats" in r else ""
        lines.append(f"| {r['lang']} | {r['setting']} | {num_cell(r['success'])} | [{num_cell(r['ci_low'])}, "
                     f"{num_cell(r['ci_high'])}] | {p} |")
    return "\n".join(lines)


def activation_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per (language, setting), suppression and enhancement side by side."""
    succ = {(s["lang"], s["setting"]): s for s in success_ratios(rows)}
    lines = ["| measured in | setting | facts | mean #neurons | suppress: related ΔP | suppress: unrelated ΔP | "
             "enhance: related ΔP | enhance: unrelated ΔP | success (paper's) | accuracy | suppress: lost | "
             "enhance: gained | unrelated acc. (sup / enh) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lang, setting, s, e in _suppress_enhance(rows):
        sc = succ.get((lang, setting))
        success = "n/a" if sc is None else num_cell(sc["success"]) + (" (unstable)" if sc["unstable"] else "")
        ub = s["unrelated_correct_before"]
        un = s["unrelated_scored"]
        unrel = (f"{ub}/{un} → {s['unrelated_correct_after']} / {e['unrelated_correct_after']}" if un else "n/a")
        lines.append(f"| {lang} | {setting} | {s['facts']} | {s['mean_neurons']:.1f} | "
                     f"{pct_cell(s['related_mean'], s['related_ci'])} | {pct_cell(s['unrelated_mean'], s['unrelated_ci'])} | "
                     f"{pct_cell(e['related_mean'], e['related_ci'])} | {pct_cell(e['unrelated_mean'], e['unrelated_ci'])} | "
                     f"{success} | {100 * s['acc_before']:.0f}% | {s['lost']} | {e['gained']} | {unrel} |")
    return "\n".join(lines)


def sturdy_table(rows: Sequence[dict]) -> str:
    """Markdown: numbers that do not divide by the unrelated mean: the paired difference
    related − unrelated (per fact, mean ± 95% CI) and the medians."""
    lines = ["| measured in | setting | suppress: related − unrelated | suppress: median related / unrelated | "
             "enhance: related − unrelated | enhance: median related / unrelated | enhance: 10% trimmed mean related |",
             "|---|---|---|---|---|---|---|"]
    for lang, setting, s, e in _suppress_enhance(rows):
        lines.append(f"| {lang} | {setting} | {pct_cell(s['specific_mean'], s['specific_ci'])} | "
                     f"{pct_cell(s['related_median'], float('nan'))} / {pct_cell(s['unrelated_median'], float('nan'))} | "
                     f"{pct_cell(e['specific_mean'], e['specific_ci'])} | "
                     f"{pct_cell(e['related_median'], float('nan'))} / {pct_cell(e['unrelated_median'], float('nan'))} | "
                     f"{pct_cell(e.get('related_trimmed', float('nan')), float('nan'))} |")
    return "\n".join(lines)


def value_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per (language, setting) of the value-vector protocol."""
    lines = ["| measured in | setting | facts | mean #neurons | related ΔP(old) | log10 P(new) ratio | "
             "new ranked first (before → after) | gold lost | unrelated ΔP(gold) | unrelated acc. (before → after) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["mode"] != "edit":
            continue
        un = r["unrelated_scored"]
        unrel = f"{r['unrelated_correct_before']}/{un} → {r['unrelated_correct_after']}" if un else "n/a"
        lr = "n/a" if math.isnan(r["log10_new_mean"]) else f"{r['log10_new_mean']:+.2f} ± {num_cell(r['log10_new_ci'])}"
        lines.append(f"| {r['lang']} | {r['setting']} | {r['facts']} | {r['mean_neurons']:.1f} | "
                     f"{pct_cell(r['related_mean'], r['related_ci'])} | {lr} | "
                     f"{100 * r['new_first_before']:.0f}% → {100 * r['new_first_after']:.0f}% | {r['lost']} | "
                     f"{pct_cell(r['unrelated_mean'], r['unrelated_ci'])} | {unrel} |")
    return "\n".join(lines)
