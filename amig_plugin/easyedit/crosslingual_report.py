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
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..stats import bootstrap_ci
from .evaluate import _value

__all__ = ["COLUMNS", "column_values", "language_summary", "format_language_table", "write_csv", "plot_language"]

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
    for column, (group, key) in _keys(lang, primary).items():
        for m in metrics:
            section = m.get(phase) or {}
            value = _value((section.get(group) or {}).get(key) if group else section.get(key))
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
