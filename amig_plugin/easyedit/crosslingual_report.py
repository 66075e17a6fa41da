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
seeded); the first row is the unedited model (pre-edit scores; locality is 1 by definition).

:func:`pooled_summary` pools the languages other than the primary one: per request, the mean
over those languages (scores of the same edit, so not independent samples), then the mean over
requests, with an interval that resamples requests. :func:`format_overview_table` puts the
primary language's four columns and the pooled ones in one table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..stats import bootstrap_ci
from .evaluate import _value

__all__ = ["COLUMNS", "column_values", "language_summary", "format_language_table", "pooled_summary",
           "format_overview_table", "write_csv", "plot_language"]

COLUMNS = ("reliability", "generality", "locality", "portability")


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
    mean, low, high = bootstrap_ci(values, seed=seed) if values else (None, None, None)
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


def pooled_summary(methods: Sequence[Mapping[str, Any]], langs: Sequence[str], primary: str = "en") -> list[dict]:
    """Rows (as :func:`language_summary`'s, ``lang`` = ``"other"``) pooling ``langs`` other
    than ``primary``. ``methods[i]["metrics"][L][r]`` must be request r's metrics in L for
    every L (one list per language, in request order: LIKN's per-language edits included).
    A request's value is its mean over the languages that have the key; the cell is the mean
    of those over requests, with a bootstrap interval over requests."""
    others = [x for x in langs if x != primary]

    def cells(per_lang: Mapping[str, Sequence[Mapping]], phase: str) -> dict:
        n = min((len(per_lang.get(x) or ()) for x in others), default=0)
        out = {}
        for column in COLUMNS:
            per_request = []
            for r in range(n):
                found = [v for x in others
                         if (v := _request_value(per_lang[x][r], x, column, primary, phase)) is not None]
                if found:
                    per_request.append(sum(found) / len(found))
            out[column] = _cell(per_request)
        return out

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
            "then the mean over requests; intervals resample requests.")
    return head + "\n".join(lines) + note


def _fmt(cell: Mapping) -> str:
    if cell.get("mean") is None:
        return "-"
    if cell.get("low") is None or cell["low"] != cell["low"]:
        return f"{cell['mean']:.3f}"
    return f"{cell['mean']:.3f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def format_language_table(rows: Sequence[Mapping], lang: str, primary: str = "en") -> str:
    """Markdown table of :func:`language_summary` rows."""
    what = "the edited language" if lang == primary else f"edit made in {primary}, scored in {lang}"
    head = (f"### {lang} ({what}; mean [95% bootstrap CI])\n\n| method | requests | "
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["lang", "method", "metric", "mean", "ci_low", "ci_high", "requests", "seconds_per_edit"])
        for r in rows:
            for c in COLUMNS:
                cell = r["cells"][c]
                writer.writerow([r["lang"], r["method"], c] + [("" if v is None else v) for v in
                                (cell["mean"], cell["low"], cell["high"], cell["n"], r.get("seconds_per_edit"))])
    return path


def plot_language(rows: Sequence[Mapping], lang: str, path: str | Path, title: Optional[str] = None) -> Path:
    """Grouped bars (one group per column, one bar per method) with the 95 % CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(COLUMNS), 3.6))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(COLUMNS))
    for i, r in enumerate(rows):
        means = [r["cells"][c]["mean"] if r["cells"][c]["mean"] is not None else np.nan for c in COLUMNS]
        err = [[max(0.0, m - (r["cells"][c]["low"] if r["cells"][c]["low"] is not None else m)) for c, m in zip(COLUMNS, means)],
               [max(0.0, (r["cells"][c]["high"] if r["cells"][c]["high"] is not None else m) - m) for c, m in zip(COLUMNS, means)]]
        err = np.nan_to_num(np.array(err, dtype=float))
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width=width, yerr=err, capsize=2, label=r["method"])
    ax.set_xticks(x)
    ax.set_xticklabels(COLUMNS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("EasyEdit token accuracy")
    ax.set_title(title or f"{lang}: after an edit in English", fontsize=11)
    ax.legend(fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
