"""PNG plots of a run (matplotlib, Agg backend; no display needed).

Every function takes plain data (counts, arrays) and a path, writes one PNG and returns the
path; :mod:`amig_plugin.report` feeds them from a run folder. Labels are ASCII only (the
default matplotlib fonts have no CJK glyphs; Chinese prompts are shown in the tables).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
LANG_COLORS = {"en": "#1f77b4", "zh": "#d62728"}


def _color(label: str, i: int) -> str:
    return LANG_COLORS.get(label, COLORS[i % len(COLORS)])


def _style(ax, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def renderable(text: str) -> bool:
    """True when the default fonts can draw ``text`` (no CJK and similar scripts)."""
    return all(ord(ch) < 0x2E80 for ch in text)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def layer_distribution(panels: Sequence[Sequence[tuple[str, Mapping[str, Sequence[int]]]]], num_layers: int, path: Path,
                       suptitle: str = "", normalize: bool = True) -> Path:
    """A grid of panels: ``panels[row][col] = (title, {series label: counts per layer})``,
    grouped bars per layer (e.g. rows = knowledge neurons / LIKN / DKN, columns = methods).

    ``normalize``: plot each series as % of its own total (so languages with different
    set sizes compare); the legend gives the totals. The paper's Figures 4 and 5 show such
    layer distributions for LIKN and DKN.
    """
    rows = len(panels)
    cols = max(len(r) for r in panels)
    width = max(6.5, 0.42 * num_layers + 1.8)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 2.7 * rows + 0.7), squeeze=False)
    layers = np.arange(num_layers)
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(row):
                ax.axis("off")
                continue
            title, series = row[c]
            series = {k: list(v) for k, v in series.items()}
            if not series or all(sum(v) == 0 for v in series.values()):
                _empty(ax, "no neurons (study not run, or none found)")
                ax.set_title(title, fontsize=11)
                continue
            bar_w = 0.8 / len(series)
            for i, (label, counts) in enumerate(series.items()):
                counts = np.asarray(counts[:num_layers] + [0] * (num_layers - len(counts)), dtype=float)
                total = counts.sum()
                values = 100 * counts / total if normalize and total else counts
                ax.bar(layers + (i - (len(series) - 1) / 2) * bar_w, values, width=bar_w, color=_color(label, i),
                       label=f"{label} (n={int(total)})", edgecolor="white", linewidth=0.3)
            _style(ax, title, "layer", "% of neurons" if normalize else "neurons")
            ax.set_xticks(layers)
            ax.set_xlim(-0.6, num_layers - 0.4)
            ax.legend(fontsize=8, frameon=False, loc="upper left")
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.7 * rows + 0.7)))
    else:
        fig.tight_layout()
    return _save(fig, path)


def max_abs_pool(a: np.ndarray, max_columns: int) -> tuple[np.ndarray, int]:
    """Columns pooled in bins of ``b`` neurons keeping the signed value of largest |IG|, so
    that single large attributions stay visible when W neurons exceed the pixels."""
    b = max(1, math.ceil(a.shape[1] / max_columns))
    if b == 1:
        return a, 1
    pad = (-a.shape[1]) % b
    padded = np.pad(a, ((0, 0), (0, pad)))
    blocks = padded.reshape(a.shape[0], -1, b)
    pick = np.abs(blocks).argmax(-1)
    return np.take_along_axis(blocks, pick[..., None], -1)[..., 0], b


def attribution_heatmap(panels: Sequence[dict], path: Path, suptitle: str = "", max_columns: int = 700) -> Path:
    """Layer x neuron attribution maps, one panel per dict with ``attributions`` [L, W]
    (numpy), ``layers``, ``title``, and optional ``neurons`` [(layer, index)] (marked).

    The colour scale is symmetric around 0 and clipped at the 99.99th percentile of |IG|
    so that the few large attributions do not wash out the rest; knowledge neurons are
    circled; a strip on the right shows each layer's largest attribution. Wider FFNs are
    max-|IG| pooled to ``max_columns`` columns (:func:`max_abs_pool`).
    """
    n = len(panels)
    height = 3.6 * n + 0.8
    fig = plt.figure(figsize=(13, height))
    grid = fig.add_gridspec(n, 3, width_ratios=[12, 1.4, 0.22], wspace=0.05, hspace=0.42,
                            top=1 - 0.75 / height, bottom=0.45 / height)
    for k, panel in enumerate(panels):
        a = np.asarray(panel["attributions"], dtype=float)
        layers = list(panel["layers"])
        ax = fig.add_subplot(grid[k, 0])
        side = fig.add_subplot(grid[k, 1], sharey=ax)
        vmax = float(np.quantile(np.abs(a), 0.9999)) or float(np.abs(a).max()) or 1.0
        shown, b = max_abs_pool(a, max_columns)
        im = ax.imshow(shown, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                       extent=(-0.5, shown.shape[1] * b - 0.5, len(layers) - 0.5, -0.5))
        row_of = {l: i for i, l in enumerate(layers)}
        marks = [(row_of[l], i) for l, i in panel.get("neurons", []) if l in row_of]
        if marks:
            ax.scatter([i for _, i in marks], [r for r, _ in marks], s=46, facecolors="none", edgecolors="black",
                       linewidths=0.9)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels([str(l) for l in layers], fontsize=7)
        ax.set_ylabel("layer")
        ax.set_xlabel("neuron index in the FFN hidden vector"
                      + (f"  (each column: the largest |IG| of {b} neurons)" if b > 1 else ""))
        ax.set_title(panel.get("title", ""), fontsize=10)
        cbar = fig.colorbar(im, cax=fig.add_subplot(grid[k, 2]))
        cbar.set_label("IG attribution", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        peak = a.max(axis=1)
        side.barh(range(len(layers)), peak, color="#444444", height=0.7)
        side.set_xlabel("max IG", fontsize=8)
        side.tick_params(axis="y", labelleft=False)
        side.tick_params(axis="x", labelsize=7)
        side.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(2))
        side.spines[["top", "right"]].set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path)


def overlap(per_layer: Mapping[str, Sequence[int]], sizes: Sequence[int], jaccard: Sequence[float], path: Path,
            langs: tuple[str, str] = ("en", "zh"), title: str = "") -> Path:
    """Cross-lingual overlap of the facts' neuron sets.

    ``per_layer``: {"<a> only", "both", "<b> only"} -> counts per layer (summed over facts);
    ``sizes``: per fact, the size of the intersection; ``jaccard``: per fact |A∩B| / |A∪B|.
    """
    a, b = langs
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.9), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    keys = [f"{a} only", "both", f"{b} only"]
    colors = [_color(a, 0), "#6a3d9a", _color(b, 1)]
    L = max((len(v) for v in per_layer.values()), default=0)
    bottom = np.zeros(L)
    for key, color in zip(keys, colors):
        counts = np.asarray(list(per_layer.get(key, [0] * L)), dtype=float)
        ax1.bar(np.arange(L), counts, bottom=bottom, color=color, label=f"{key} ({int(counts.sum())})", width=0.8)
        bottom += counts
    _style(ax1, "neurons per layer: language-specific vs shared", "layer", "neurons (summed over facts)")
    ax1.set_xticks(np.arange(L))
    ax1.legend(fontsize=8, frameon=False)
    sizes = list(sizes)
    if sizes:
        top = max(sizes)
        bins = np.arange(-0.5, top + 1.5, 1 if top < 30 else max(1, top // 20))
        ax2.hist(sizes, bins=bins, color="#6a3d9a", edgecolor="white")
        empty = sum(s == 0 for s in sizes)
        _style(ax2, f"shared neurons per fact\n{empty} of {len(sizes)} facts share none", f"|{a} ∩ {b}|", "facts")
    else:
        _empty(ax2, "no facts")
    jac = [j for j in jaccard if j is not None and not math.isnan(j)]
    if jac:
        ax3.hist(jac, bins=np.linspace(0, 1, 21), color="#555555", edgecolor="white")
        _style(ax3, f"Jaccard |{a}∩{b}| / |{a}∪{b}|\nmean {np.mean(jac):.3f}", "Jaccard", "facts")
    else:
        _empty(ax3, "no facts")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def effect_bars(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """Mean relative change of P(gold) (related vs unrelated prompts) with 95% CIs, one panel
    per (language, mode), bars per neuron set (the method vs random)."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    panels = sorted({(r["lang"], r["mode"]) for r in rows}, key=lambda p: (p[0], modes.index(p[1])))
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        _empty(ax, "no effect records")
        return _save(fig, path)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.5, 3.6), squeeze=False)
    for ax, (lang, mode) in zip(axes[0], panels):
        sel = [r for r in rows if r["lang"] == lang and r["mode"] == mode]
        names = [f"{r['method']}" if r["neurons"] == r["method"] else f"{r['neurons']} ({r['method']})" for r in sel]
        x = np.arange(len(sel))
        for j, (kind, color) in enumerate((("related", "#1f77b4"), ("unrelated", "#aaaaaa"))):
            means = [100 * (r[f"{kind}_mean"] if r[f"{kind}_mean"] is not None else float("nan")) for r in sel]
            cis = [100 * (r[f"{kind}_ci"] if r[f"{kind}_ci"] is not None else 0.0) for r in sel]
            cis = [0.0 if c != c else c for c in cis]
            ax.bar(x + (j - 0.5) * 0.38, means, width=0.38, yerr=cis, color=color, label=kind, capsize=3)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8)
        _style(ax, f"{lang}: {mode}", "", "relative change of P(gold), %")
        ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _save(fig, path)
