"""Per-language tables of a cross-lingual editing comparison (``amig compare`` on MzsRE).

An edit is made in the primary language (English); every language ``L`` is then scored with
EasyEdit's own metrics on the keys :meth:`~amig_plugin.data.edit_records.EditRequest.to_easyedit`
adds (``eval_langs``). The four columns of a language's table:

============  =========================================  =====================================
column        primary language (English)                 other language ``L``
============  =========================================  =====================================
reliability   ``rewrite_acc`` (the edited prompt)         ``portability.L_reliability_acc``
generality    ``rephrase_acc``                           ``portability.L_generality_acc``
locality      ``locality.neighborhood_acc``              ``locality.L_locality_acc``
portability   ``portability.one_hop_acc``                ``portability.L_portability_acc``
============  =========================================  =====================================

Each cell is the mean over requests with a 95 % percentile-bootstrap interval (2,000 resamples,
seeded), from :data:`MIN_REQUESTS_FOR_INTERVAL` requests on (fewer: the mean alone, since a
percentile bootstrap of a handful of values covers far less than 95 %); the first row is the
unedited model (pre-edit scores; locality is 1 by definition).

:func:`pooled_summary` pools the languages other than the primary one: per request, the mean
over those languages (scores of the same edit, so not independent samples), then the mean over
requests, with an interval that resamples requests. :func:`format_overview_table` puts the
primary language's four columns and the pooled ones in one table.

:func:`paired_summary` answers "where does method X land against ROME?" on the requests both
edited: per request the difference X − reference (a method with several edits of one request,
LIKN, contributes the mean over them), then the mean difference with a bootstrap interval that
resamples requests. Paired intervals are what decide such a comparison: two methods' unpaired
intervals can overlap while every request moves the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..stats import bootstrap_ci, paired_difference
from .evaluate import _value

__all__ = ["COLUMNS", "MIN_REQUESTS_FOR_INTERVAL", "column_values", "language_summary", "format_language_table", "pooled_summary",
           "format_overview_table", "write_csv", "plot_language", "request_values", "paired_summary",
           "format_paired_table", "write_paired_csv", "plot_paired"]

COLUMNS = ("reliability", "generality", "locality", "portability")


MIN_REQUESTS_FOR_INTERVAL = 10
"""Fewest requests (or pairs) a cell's bootstrap interval is drawn from; below it the cell has
its mean and no interval (with 4 values the percentile bootstrap has 35 distinct resamples and
its "95 %" interval is far too narrow)."""


def _no_interval_below_minimum(mean, low, high, n: int) -> tuple:
    return (mean, low, high) if n >= MIN_REQUESTS_FOR_INTERVAL else (mean, float("nan"), float("nan"))


def _keys(lang: str, primary: str) -> dict:
    if lang == primary:
        return {"reliability": (None, "rewrite_acc"), "generality": (None, "rephrase_acc"),
                "locality": ("locality", "neighborhood_acc"), "portability": ("portability", "one_hop_acc")}
    return {"reliability": ("portability", f"{lang}_reliability_acc"),
            "generality": ("portability", f"{lang}_generality_acc"),
            "locality": ("locality", f"{lang}_locality_acc"),
            "portability": ("portability", f"{lang}_portability_acc")}


def column_values(metrics: Sequence[Mapping], lang: str, primary: str = "en", phase: str = "post") -> dict:
    """``{column: [value per request]}`` of EasyEdit metrics (requests without the key are
    left out)."""
    out: dict = {c: [] for c in COLUMNS}
    for column in COLUMNS:
        for m in metrics:
            value = _request_value(m, lang, column, primary, phase)
            if value is not None:
                out[column].append(value)
    return out


def _cell(values: Sequence[float], seed: int = 0) -> dict:
    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean, low, high = _no_interval_below_minimum(*bootstrap_ci(values, seed=seed), len(values))
    return {"mean": mean, "low": low, "high": high, "n": len(values)}


def language_summary(methods: Sequence[Mapping[str, Any]], lang: str, primary: str = "en") -> list[dict]:
    """Rows of ``lang``'s table. ``methods``: ``{"method", "metrics": {lang: [EasyEdit
    metrics]}, "seconds_per_edit", "note"}`` in display order; the first row is the unedited
    model (pre-edit scores of the first method with metrics in ``lang``)."""
    rows = []
    first = next((m for m in methods if m["metrics"].get(lang)), None)
    if first is not None:
        pre = column_values(first["metrics"][lang], lang, primary, phase="pre")
        cells = {c: _cell(v) for c, v in pre.items() if c != "locality"}
        cells["locality"] = {"mean": 1.0, "low": None, "high": None, "n": len(first["metrics"][lang])}
        rows.append({"method": "(unedited)", "lang": lang, "cells": cells, "seconds_per_edit": None,
                     "note": "pre-edit scores; locality 1 by definition"})
    for m in methods:
        found = m["metrics"].get(lang)
        if not found:
            continue
        post = column_values(found, lang, primary)
        rows.append({"method": m["method"], "lang": lang, "cells": {c: _cell(v) for c, v in post.items()},
                     "seconds_per_edit": m.get("seconds_per_edit"), "note": m.get("note", "")})
    return rows


def _request_value(metric: Mapping, lang: str, column: str, primary: str, phase: str) -> Optional[float]:
    group, key = _keys(lang, primary)[column]
    section = metric.get(phase) or {}
    return _value((section.get(group) or {}).get(key) if group else section.get(key))


def request_values(per_lang: Mapping[str, Sequence[Mapping]], scope: str, column: str, primary: str,
                   others: Sequence[str], phase: str = "post") -> list[Optional[float]]:
    """One value per request r of ``column``: ``scope`` = ``primary`` scores the primary
    language, ``"other"`` pools ``others``. Request r's records are ``per_lang[L][r]`` for L in
    ``others`` (``per_lang[primary][r]`` when there are none); its value is the mean over those
    records that have the key (a method that edits once per request has the same record in
    every list; LIKN has one edit per language), None when none has it."""
    langs = list(others) or [primary]
    n = max((len(per_lang.get(x) or ()) for x in langs), default=0)
    out: list[Optional[float]] = []
    for r in range(n):
        found = [v for x in langs if r < len(per_lang.get(x) or ())
                 and (v := _request_value(per_lang[x][r], primary if scope == primary else x, column, primary,
                                          phase)) is not None]
        out.append(sum(found) / len(found) if found else None)
    return out


def pooled_summary(methods: Sequence[Mapping[str, Any]], langs: Sequence[str], primary: str = "en") -> list[dict]:
    """Rows (as :func:`language_summary`'s, ``lang`` = ``"other"``) pooling ``langs`` other
    than ``primary``. ``methods[i]["metrics"][L][r]`` must be request r's metrics in L for
    every L (one list per language, in request order: LIKN's per-language edits included).
    A request's value is its mean over the languages that have the key (:func:`request_values`);
    the cell is the mean of those over requests, with a bootstrap interval over requests."""
    others = [x for x in langs if x != primary]

    def cells(per_lang: Mapping[str, Sequence[Mapping]], phase: str) -> dict:
        return {column: _cell([v for v in request_values(per_lang, "other", column, primary, others, phase)
                               if v is not None]) for column in COLUMNS}

    rows = []
    first = next((m for m in methods if all(m["metrics"].get(x) for x in others)), None)
    if not others or first is None:
        return rows
    pre = cells(first["metrics"], "pre")
    pre["locality"] = {"mean": 1.0, "low": None, "high": None, "n": pre["reliability"]["n"]}
    rows.append({"method": "(unedited)", "lang": "other", "cells": pre, "seconds_per_edit": None,
                 "note": "pre-edit scores; locality 1 by definition"})
    for m in methods:
        if all(m["metrics"].get(x) for x in others):
            rows.append({"method": m["method"], "lang": "other", "cells": cells(m["metrics"], "post"),
                         "seconds_per_edit": m.get("seconds_per_edit"), "note": m.get("note", "")})
    return rows


def _scopes(langs: Sequence[str], primary: str) -> list[str]:
    return [primary] + (["other"] if any(x != primary for x in langs) else [])


def paired_summary(methods: Sequence[Mapping[str, Any]], langs: Sequence[str], primary: str = "en",
                   reference: str = "ROME") -> list[dict]:
    """Rows ``{"method", "reference", "cells": {(scope, column): cell}}``, one per method other
    than ``reference`` (empty if ``reference`` is not among ``methods``). Scopes: ``primary``
    and, with other languages, ``"other"`` (pooled as in :func:`pooled_summary`; None cells for
    a method scored in only some of them). A cell: mean of d_r = x_r − ref_r over the requests
    both have (requests are in the same order for every method: ``--limit`` takes the first N),
    with a 95 % percentile-bootstrap interval over requests (``low``/``high`` NaN below
    :data:`MIN_REQUESTS_FOR_INTERVAL` pairs)."""
    others = [x for x in langs if x != primary]
    ref = next((m for m in methods if m["method"] == reference), None)
    if ref is None:
        return []
    scopes = _scopes(langs, primary)
    ref_values = {(s, c): request_values(ref["metrics"], s, c, primary, others) for s in scopes for c in COLUMNS}
    rows = []
    for m in methods:
        if m is ref:
            continue
        cells = {}
        for s in scopes:
            scored = s == primary or all(m["metrics"].get(x) for x in others)
            for c in COLUMNS:
                d = paired_difference(request_values(m["metrics"], s, c, primary, others), ref_values[(s, c)]) \
                    if scored else {"n": 0}
                if d["n"]:
                    mean, low, high = _no_interval_below_minimum(d["mean"], d["low"], d["high"], d["n"])
                    cells[(s, c)] = {"mean": mean, "low": low, "high": high, "n": d["n"]}
                else:
                    cells[(s, c)] = {"mean": None, "low": None, "high": None, "n": 0}
        rows.append({"method": m["method"], "reference": reference, "cells": cells})
    return rows


def _scope_label(scope: str, langs: Sequence[str], primary: str) -> str:
    return f"other {len([x for x in langs if x != primary])}" if scope == "other" else scope


def format_paired_table(rows: Sequence[Mapping], langs: Sequence[str], primary: str = "en") -> str:
    """Markdown table of :func:`paired_summary` rows with a heading and how to read it."""
    if not rows:
        return ""
    reference = rows[0]["reference"]
    scopes = _scopes(langs, primary)
    labels = [f"{_scope_label(s, langs, primary)}: {c}" if len(scopes) > 1 else c for s in scopes for c in COLUMNS]
    head = (f"### Paired against {reference}: each method minus {reference} on the same requests "
            "(mean difference [95% bootstrap CI over requests])\n\n| method | pairs | " + " | ".join(labels)
            + " |\n|" + "---|" * (len(labels) + 2) + "\n")
    lines = []
    for r in rows:
        n = max((c["n"] for c in r["cells"].values()), default=0)
        lines.append("| " + " | ".join([r["method"], str(n)] + [_fmt(r["cells"][(s, c)], signed=True) for s in scopes
                                                                for c in COLUMNS]) + " |")
    note = (f"\n\nAn interval that excludes 0 is a difference these requests resolve; pairs: requests that both "
            f"the method and {reference} edited. A method with one edit per (request, language) (LIKN) enters "
            f"with its mean over a request's edits. Fewer than {MIN_REQUESTS_FOR_INTERVAL} pairs: the mean alone, "
            "no interval.")
    return head + "\n".join(lines) + note


def write_paired_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """One line per (scope, method, column): mean difference, CI bounds, pairs."""
    return _write_csv_lines(path, ["scope", "method", "reference", "metric", "mean_difference", "ci_low", "ci_high",
                                   "pairs"],
                            ([scope, r["method"], r["reference"], column]
                             + [_csv_cell(v) for v in (cell["mean"], cell["low"], cell["high"])]
                             + [cell["n"]] for r in rows for (scope, column), cell in r["cells"].items()))


def plot_paired(rows: Sequence[Mapping], langs: Sequence[str], path: str | Path, primary: str = "en") -> Path:
    """Forest plot: one panel per (scope, column), one line per method: the mean difference
    against the reference with its 95 % interval; the dashed line is no difference. A column
    no method has a value for (portability on a file without it) gets no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scopes = _scopes(langs, primary)
    columns = _columns_with_values((c, r["cells"][(s, c)]) for r in rows for s in scopes for c in COLUMNS)
    fig, axes = plt.subplots(len(scopes), len(columns), figsize=(3.0 * len(columns), 0.5 + 0.32 * len(rows) * len(scopes)
                                                                     + 0.6 * len(scopes)), squeeze=False, sharey=True)
    names = [r["method"] for r in rows]
    for i, s in enumerate(scopes):
        for j, c in enumerate(columns):
            ax = axes[i][j]
            for y, r in enumerate(rows):
                cell = r["cells"][(s, c)]
                if cell["mean"] is None:
                    continue
                if not _has_interval(cell):  # too few pairs: no interval
                    ax.plot(cell["mean"], y, "D", ms=4, mfc="none", color="0.45")
                    continue
                ax.errorbar(cell["mean"], y, xerr=[[cell["mean"] - cell["low"]], [cell["high"] - cell["mean"]]],
                            fmt="o", ms=4, capsize=2, color="C0" if cell["low"] > 0 or cell["high"] < 0 else "0.45")
            ax.axvline(0.0, color="0.3", ls="--", lw=0.8)
            ax.set_xlim(-1.05, 1.05)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names, fontsize=8)
            ax.set_title(f"{_scope_label(s, langs, primary)}: {c}", fontsize=9)
    axes[0][0].invert_yaxis()  # shared: the first method on top in every panel
    fig.suptitle(f"minus {rows[0]['reference']} on the same requests (95% CI; blue: excludes 0; "
                 f"open diamond: under {MIN_REQUESTS_FOR_INTERVAL} pairs, no interval)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_overview_table(primary_rows: Sequence[Mapping], pooled_rows: Sequence[Mapping], langs: Sequence[str],
                          primary: str = "en") -> str:
    """One markdown table: each method's four columns in ``primary`` and the pooled other
    languages' (mean [95 % CI]), and seconds per edit."""
    others = [x for x in langs if x != primary]
    pooled = {r["method"]: r for r in pooled_rows}
    head = ("| method | requests | " + " | ".join(f"{primary} {c}" for c in COLUMNS) + " | "
            + " | ".join(f"other {len(others)}: {c}" for c in COLUMNS) + " | s / edit |\n|"
            + "---|" * (2 * len(COLUMNS) + 3) + "\n")
    lines = []
    for r in primary_rows:
        other = pooled.get(r["method"])
        n = max((c["n"] for c in r["cells"].values()), default=0)
        s = r.get("seconds_per_edit")
        lines.append("| " + " | ".join([r["method"], str(n)] + [_fmt(r["cells"][c]) for c in COLUMNS]
                                       + [_fmt(other["cells"][c]) if other else "-" for c in COLUMNS]
                                       + ["-" if s is None else f"{s:.1f}"]) + " |")
    note = (f"\n\nother {len(others)} = {', '.join(others)}: per request the mean over these languages, "
            f"then the mean over requests; intervals resample requests (none below {MIN_REQUESTS_FOR_INTERVAL}).")
    return head + "\n".join(lines) + note


def _fmt(cell: Mapping, signed: bool = False) -> str:
    """``mean [low, high]`` (the mean alone without an interval; ``-`` without a mean);
    ``signed``: with an explicit + (differences)."""
    if cell.get("mean") is None:
        return "-"
    sign = "+" if signed else ""
    if not _has_interval(cell):
        return f"{cell['mean']:{sign}.3f}"
    return f"{cell['mean']:{sign}.3f} [{cell['low']:{sign}.2f}, {cell['high']:{sign}.2f}]"


def format_language_table(rows: Sequence[Mapping], lang: str, primary: str = "en") -> str:
    """Markdown table of :func:`language_summary` rows."""
    what = "the edited language" if lang == primary else f"edit made in {primary}, scored in {lang}"
    head = (f"### {lang} ({what}; mean [95% bootstrap CI; none below {MIN_REQUESTS_FOR_INTERVAL} requests])\n\n"
            "| method | requests | "
            + " | ".join(COLUMNS) + " | s / edit | notes |\n|" + "---|" * (len(COLUMNS) + 4) + "\n")
    lines = []
    for r in rows:
        n = max((c["n"] for c in r["cells"].values()), default=0)
        s = r.get("seconds_per_edit")
        lines.append("| " + " | ".join([r["method"], str(n)] + [_fmt(r["cells"][c]) for c in COLUMNS]
                                       + ["-" if s is None else f"{s:.1f}", r.get("note", "")]) + " |")
    return head + "\n".join(lines)


def write_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """One line per (language, method, column): mean, CI bounds, requests, seconds per edit."""
    return _write_csv_lines(path, ["lang", "method", "metric", "mean", "ci_low", "ci_high", "requests",
                                   "seconds_per_edit"],
                            ([r["lang"], r["method"], c] + [_csv_cell(v) for v in
                             (r["cells"][c]["mean"], r["cells"][c]["low"], r["cells"][c]["high"], r["cells"][c]["n"],
                              r.get("seconds_per_edit"))] for r in rows for c in COLUMNS))


def _csv_cell(value: Any) -> Any:
    """A CSV cell: blank where there is no value (None) or no interval (NaN), the value otherwise."""
    return "" if value is None or value != value else value


def _write_csv_lines(path: str | Path, header: Sequence[str], lines) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(lines)
    return path


def plot_language(rows: Sequence[Mapping], lang: str, path: str | Path, title: Optional[str] = None) -> Path:
    """Grouped bars (one group per column, one bar per method) with the 95 % CIs; a cell
    without an interval (too few requests, or none by definition) is a bar without one, and a
    column no method has a value for gets no group. The legend sits right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _columns_with_values((c, r["cells"][c]) for r in rows for c in COLUMNS)
    legend_in = 1.5
    fig_width = 2.2 + 1.6 * len(columns) + legend_in
    fig, ax = plt.subplots(figsize=(fig_width, 3.6))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        x = np.arange(len(columns)) + (i - (len(rows) - 1) / 2) * width
        cells = [r["cells"][c] for c in columns]
        ax.bar(x, [np.nan if c["mean"] is None else c["mean"] for c in cells], width=width, label=r["method"])
        with_ci = [(xi, c) for xi, c in zip(x, cells) if c["mean"] is not None and _has_interval(c)]
        if with_ci:
            ax.errorbar([xi for xi, _ in with_ci], [c["mean"] for _, c in with_ci],
                        yerr=[[max(0.0, c["mean"] - c["low"]) for _, c in with_ci],
                              [max(0.0, c["high"] - c["mean"]) for _, c in with_ci]],
                        fmt="none", ecolor="black", capsize=2, lw=1)
    ax.set_xticks(np.arange(len(columns)))
    ax.set_xticklabels(columns)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("EasyEdit token accuracy")
    ax.set_title(title or f"{lang}: after an edit in English", fontsize=11)
    fig.legend(*ax.get_legend_handles_labels(), loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - legend_in / fig_width, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _has_interval(cell: Mapping) -> bool:
    """Whether a cell carries a 95 % interval (none below the minimum sample, none by definition)."""
    return cell.get("low") is not None and cell["low"] == cell["low"]


def _columns_with_values(cells: Iterable[tuple[str, Mapping]]) -> list[str]:
    """The :data:`COLUMNS` that some cell has a mean for (all of them if none has), in order."""
    present = {column for column, cell in cells if cell.get("mean") is not None}
    return [c for c in COLUMNS if c in present] or list(COLUMNS)
