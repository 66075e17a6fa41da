"""Controls of the cross-language overlap: is a fact's LIKN more than chance or hubs?

Chance baselines (:func:`uniform_chance`, :func:`layer_matched_chance`), the overlap of the
same fact against shuffled fact pairs of the same / another relation (:func:`pair_controls`),
hub neurons shared by many facts' LIKN (:func:`hub_neurons`), every language pair of a report
with and without the hubs (:func:`likn_controls`) and its markdown (:func:`controls_markdown`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Iterable, Mapping, Protocol, Sequence

from ..stats import mean_ci
from .sets import FactLIKN, Neuron, as_neuron
from .tables import num_cell

__all__ = ["layer_matched_chance", "uniform_chance", "hub_neurons", "pair_controls", "likn_controls",
           "controls_markdown"]


class SetsOfFacts(Protocol):
    """What the controls read of a :class:`~amig_plugin.likn.report.LIKNReport`."""

    languages: tuple[str, ...]
    facts: list[FactLIKN]
    num_layers: int | None
    ffn_width: int | None


def layer_matched_chance(sets: Sequence[Iterable], ffn_width: int) -> float:
    """Expected |S_1 ∩ ... ∩ S_k| when each set's neurons are redrawn uniformly WITHIN their
    own layers (layer sizes kept): Σ_l W · Π_k (c_{k,l} / W), c_{k,l} = set k's neurons in
    layer l, W = FFN width. Exact (independent uniform subsets of a layer's W neurons)."""
    counts = [Counter(l for l, _ in (as_neuron(n) for n in s)) for s in sets]
    layers = set.intersection(*(set(c) for c in counts)) if counts else set()
    return math.fsum(ffn_width * math.prod(c[l] / ffn_width for c in counts) for l in layers)


def uniform_chance(sizes: Sequence[int], total: int) -> float:
    """Expected intersection size of independent uniform sets of the given sizes among
    ``total`` neurons: total · Π (n_k / total)."""
    return total * math.prod(n / total for n in sizes)


def hub_neurons(facts: Sequence[FactLIKN], min_facts: int = 3) -> list[tuple[Neuron, int]]:
    """Neurons in the LIKN (shared set) of at least ``min_facts`` facts, most frequent first."""
    c = Counter(n for f in facts for n in f.shared)
    return sorted(((n, k) for n, k in c.items() if k >= min_facts), key=lambda t: (-t[1], t[0]))


def pair_controls(facts: Sequence[FactLIKN], a: str, b: str, num_layers: int, ffn_width: int,
                  exclude: Iterable[Neuron] = ()) -> dict:
    """Overlap of language a's and b's sets of the SAME fact against its controls:

    * ``shuffled_same_relation`` / ``shuffled_other_relation``: mean |S_a(i) ∩ S_b(j)| over
      every pair of facts i ≠ j of the same / another relation (all pairs, no sampling);
    * ``uniform_chance``: |S_a||S_b| / (L·W) averaged over facts; ``layer_matched_chance``:
      Σ_l a_l b_l / W averaged over facts (:func:`layer_matched_chance`);
    * ``excess_same_relation`` / ``excess_other_relation``: per fact i, its own overlap minus
      the mean of |S_a(i) ∩ S_b(j)| and |S_a(j) ∩ S_b(i)| over the facts j ≠ i of the same /
      another relation; mean over facts with the Student-t 95 % half-width (``*_ci``) and the
      number of facts that have such partners (``*_facts``). Above 0 beyond its interval: the
      overlap is specific to the fact, not only to its relation or to every fact;
    * ``exclude``: neurons removed from every set first (hubs)."""
    ex = {as_neuron(n) for n in exclude}
    sa = [set(f.per_lang[a]) - ex for f in facts]
    sb = [set(f.per_lang[b]) - ex for f in facts]
    rel = [f.relation for f in facts]
    matched = [len(x & y) for x, y in zip(sa, sb)]
    same, other = [], []
    per_fact: list[tuple[list[float], list[float]]] = [([], []) for _ in facts]
    for i, x in enumerate(sa):
        for j, y in enumerate(sb):
            if i != j:
                k = len(x & y)
                (same if rel[i] == rel[j] else other).append(k)
                # the pair (i, j) is a partner of fact i (A's side) and of fact j (B's side)
                per_fact[i][rel[i] != rel[j]].append(k)
                per_fact[j][rel[i] != rel[j]].append(k)
    excess = {}
    for kind, idx in (("same_relation", 0), ("other_relation", 1)):
        diffs = [m - statistics.fmean(pf[idx]) for m, pf in zip(matched, per_fact) if pf[idx]]
        mu, half = mean_ci(diffs)
        excess.update({f"excess_{kind}": mu, f"excess_{kind}_ci": half, f"excess_{kind}_facts": len(diffs)})
    total = num_layers * ffn_width
    mean = lambda v: statistics.fmean(v) if v else float("nan")
    union = [len(x | y) for x, y in zip(sa, sb)]
    return dict(languages=[a, b], facts=len(facts), matched=mean(matched),
                matched_nonempty=sum(m > 0 for m in matched),
                jaccard=mean([m / u for m, u in zip(matched, union) if u]),
                mean_size=[mean([len(x) for x in sa]), mean([len(y) for y in sb])],
                shuffled_same_relation=mean(same), same_relation_pairs=len(same),
                shuffled_other_relation=mean(other), other_relation_pairs=len(other),
                uniform_chance=mean([uniform_chance([len(x), len(y)], total) for x, y in zip(sa, sb)]),
                layer_matched_chance=mean([layer_matched_chance([x, y], ffn_width) for x, y in zip(sa, sb)]),
                excluded=len(ex), **excess)


def likn_controls(report: SetsOfFacts, hub_min_facts: int = 3, top_hubs: int = 10) -> dict:
    """Every language pair's overlap with its controls (:func:`pair_controls`), the hub
    neurons (in the LIKN of >= ``hub_min_facts`` facts) and the same table with the hubs
    excluded from every set. Needs ``num_layers`` and ``ffn_width``."""
    if not (report.num_layers and report.ffn_width):
        return {}
    langs = list(report.languages)
    pairs = [(a, b) for i, a in enumerate(langs) for b in langs[i + 1:]]
    hubs = hub_neurons(report.facts, hub_min_facts)
    hub_set = {n for n, _ in hubs}
    memberships = sum(k for _, k in hubs)
    out = dict(pairs=[pair_controls(report.facts, a, b, report.num_layers, report.ffn_width) for a, b in pairs],
               hub_min_facts=hub_min_facts, hubs=[[l, i, k] for (l, i), k in hubs[:top_hubs]], hub_count=len(hubs),
               hub_memberships=memberships,
               shared_memberships=sum(len(f.shared) for f in report.facts))
    if hubs:
        out["pairs_without_hubs"] = [pair_controls(report.facts, a, b, report.num_layers, report.ffn_width, hub_set)
                                     for a, b in pairs]
        out["nonempty_without_hubs"] = sum(bool(set(f.shared) - hub_set) for f in report.facts)
        # the LIKN layer profile with and without the hubs (Figure 4-style counts over facts)
        out["likn_layers"] = [sum(n[0] == l for f in report.facts for n in f.shared) for l in range(report.num_layers)]
        out["likn_layers_without_hubs"] = [sum(n[0] == l for f in report.facts for n in f.shared if n not in hub_set)
                                           for l in range(report.num_layers)]
    return out


def _excess_cell(row: Mapping, kind: str) -> str:
    """``+0.460 ± 0.21 (n facts)``; rows written before the excess existed show n/a."""
    if f"excess_{kind}" not in row:
        return "n/a"
    n = row[f"excess_{kind}_facts"]
    if not n:
        return "no partners"
    return f"{row[f'excess_{kind}']:+.3f} ± {num_cell(row[f'excess_{kind}_ci'], '.3f')} ({n} facts)"


def controls_markdown(controls: Mapping) -> str:
    """Markdown: the pairwise overlap table with its controls (and without hubs)."""
    if not controls:
        return "_controls need the model's layer count and FFN width_"

    def table(rows: Sequence[Mapping]) -> list[str]:
        lines = ["| pair | facts | mean sizes | same fact: mean overlap | facts with overlap | Jaccard | "
                 "shuffled, same relation | shuffled, other relation | layer-matched chance | uniform chance | "
                 "same fact − same-relation shuffle [95% CI] | same fact − other-relation shuffle [95% CI] |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            a, b = r["languages"]
            lines.append(f"| {a}–{b} | {r['facts']} | {num_cell(r['mean_size'][0], '.1f')} / {num_cell(r['mean_size'][1], '.1f')} | "
                         f"{num_cell(r['matched'], '.3f')} | {r['matched_nonempty']} | {num_cell(r['jaccard'], '.3f')} | "
                         f"{num_cell(r['shuffled_same_relation'], '.3f')} ({r['same_relation_pairs']} pairs) | "
                         f"{num_cell(r['shuffled_other_relation'], '.3f')} ({r['other_relation_pairs']} pairs) | "
                         f"{num_cell(r['layer_matched_chance'], '.4f')} | {num_cell(r['uniform_chance'], '.4f')} | "
                         f"{_excess_cell(r, 'same_relation')} | {_excess_cell(r, 'other_relation')} |")
        return lines

    lines = table(controls["pairs"])
    lines += ["", "Shuffled: language A's set of fact i against language B's set of fact j ≠ i (all pairs). "
              "Layer-matched chance: each set redrawn uniformly within its own layers. An overlap of the same fact "
              "well above the shuffled controls is fact-specific; near them, it is shared by every fact (hubs, "
              "layer preference). Same fact − shuffle: per fact, its own overlap minus its mean overlap with the "
              "other facts of the same (another) relation, mean over facts ± the Student-t 95% half-width: an "
              "interval above 0 says the overlap is specific to the fact, not only to its relation."]
    if controls.get("hubs"):
        lines += ["", f"Hub neurons (in the LIKN of >= {controls['hub_min_facts']} facts): {controls['hub_count']} "
                      f"neurons cover {controls['hub_memberships']} of {controls['shared_memberships']} LIKN "
                      "memberships; top: " + ", ".join(f"L{l}.{i} ({k} facts)" for l, i, k in controls["hubs"]) + ".",
                  "", f"Without the hubs (removed from every set): {controls.get('nonempty_without_hubs')} facts keep a "
                      "non-empty LIKN.", ""]
        lines += table(controls["pairs_without_hubs"])
        if controls.get("likn_layers_without_hubs"):
            n_layers = len(controls["likn_layers"])
            lines += ["", "LIKN neurons per layer (memberships summed over facts), with and without the hubs:", "",
                      "| layer | " + " | ".join(str(l) for l in range(n_layers)) + " |",
                      "|---|" + "---|" * n_layers,
                      "| LIKN | " + " | ".join(map(str, controls["likn_layers"])) + " |",
                      "| without hubs | " + " | ".join(map(str, controls["likn_layers_without_hubs"])) + " |"]
    return "\n".join(lines)
