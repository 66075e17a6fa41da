"""Per-layer counts of many detections (:func:`layer_summary`) and their markdown table."""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from .result import DKNResult

def layer_summary(results: Iterable[DKNResult], num_layers: int | None = None) -> dict:
    """Counts for a report: pairs per fact, and per layer the degenerate neurons (unique per
    fact), pair endpoints, same-layer pairs and (for comparison) the examined top-k neurons."""
    results = list(results)
    if num_layers is None:
        num_layers = 1 + max((l for r in results for l, _ in r.neurons), default=-1)
    per_layer = {name: [0] * num_layers for name in ("top_k", "dkn_neurons", "pair_endpoints", "same_layer_pairs")}
    pairs_per_fact, excess = [], []
    n_sets = Counter()
    for r in results:
        for l, _ in r.neurons:
            per_layer["top_k"][l] += 1
        for l, _ in r.degenerate_neurons:
            per_layer["dkn_neurons"][l] += 1
        for (a, b), (i, j) in zip(r.degenerate_pairs, r.pairs):
            per_layer["pair_endpoints"][a[0]] += 1
            per_layer["pair_endpoints"][b[0]] += 1
            if a[0] == b[0]:
                per_layer["same_layer_pairs"][a[0]] += 1
            excess.append(r.excess_drop(i, j))
        pairs_per_fact.append(len(r.pairs))
        for s in r.sets or []:
            n_sets[len(s["members"])] += 1
    n = len(results)
    total_pairs = sum(pairs_per_fact)
    excess_ok = sorted(e for e in excess if not math.isnan(e))
    return {
        "facts": n,
        "facts_with_pairs": sum(1 for c in pairs_per_fact if c),
        "pairs": total_pairs,
        "pairs_per_fact_mean": total_pairs / n if n else float("nan"),
        "pairs_per_fact_median": sorted(pairs_per_fact)[n // 2] if n else float("nan"),
        "pairs_examined": sum(r.k * (r.k - 1) // 2 for r in results),
        "same_layer_pairs": sum(per_layer["same_layer_pairs"]),
        "excess_drop_median": excess_ok[len(excess_ok) // 2] if excess_ok else float("nan"),
        "pairs_beyond_independent": sum(1 for e in excess_ok if e > 0.05),
        "sets_by_size": dict(sorted(n_sets.items())),
        "per_layer": per_layer,
        "p0_median": sorted(r.p0 for r in results)[n // 2] if n else float("nan"),
    }


def format_layer_summary(summary: dict, title: str = "") -> str:
    """Markdown: totals, then one row per layer."""
    s = summary
    lines = []
    if title:
        lines.append(f"### {title}")
    if not s["facts"]:
        return "\n".join(lines + ["no facts detected"])
    lines.append(
        f"{s['facts']} facts, {s['facts_with_pairs']} with >= 1 degenerate pair; {s['pairs']} degenerate pairs "
        f"of {s['pairs_examined']} examined ({s['pairs_per_fact_mean']:.1f} per fact, median {s['pairs_per_fact_median']}); "
        f"same-layer pairs: {s['same_layer_pairs']}; median P0 = {s['p0_median']:.3g}")
    lines.append(
        f"joint drop beyond independent effects ((P_a/P0)(P_b/P0) − P_ab/P0 > 0.05): {s['pairs_beyond_independent']} of "
        f"{s['pairs']} pairs (median excess {s['excess_drop_median']:.3f})")
    if s["sets_by_size"]:
        lines.append("degenerate sets (greedy growth): " + ", ".join(f"{n} of size {size}" for size, n in s["sets_by_size"].items()))
    lines.append("")
    lines.append("| layer | top-k neurons | DKN neurons | share of top-k | pair endpoints | same-layer pairs |")
    lines.append("|---|---|---|---|---|---|")
    pl = s["per_layer"]
    for layer in range(len(pl["top_k"])):
        top = pl["top_k"][layer]
        if not top and not pl["dkn_neurons"][layer]:
            continue
        share = pl["dkn_neurons"][layer] / top if top else float("nan")
        lines.append(f"| {layer} | {top} | {pl['dkn_neurons'][layer]} | {share:.2f} | {pl['pair_endpoints'][layer]} | "
                     f"{pl['same_layer_pairs'][layer]} |")
    return "\n".join(lines)
