"""Language-independent knowledge neurons (LIKN) and the cross-lingual editing experiment.

Chen et al. (AAAI 2024), "Journey to the Center of the Knowledge Neurons", §LIKN; see
``docs/likn.md``.

**LIKN.** Each fact is localized in each language (AMIG or KN, through the shared
:class:`~amig_plugin.localization.cache.LocalizationCache`); the fact's language-independent neurons are
the intersection of its per-language neuron sets, matched exactly on ``(layer, index)``.
Facts whose intersection is empty are kept and reported (:class:`LIKNReport`).

**Cross-lingual editing.** On the SAME facts, each fact gets these edits (:func:`plan_edits`):

=========  ==========================================  ============================
edit       neurons                                     reported as, measured in ℓ
=========  ==========================================  ============================
LIKN       the intersection                            ``LIKN`` (every language)
KN[A]      language A's neurons                        ``Mono-KN (A→ℓ)`` for ℓ ≠ A,
                                                       ``Own-KN (A)`` for ℓ = A
Seq-KN     A's neurons, then B's, ... (all applied)    ``Seq-KN`` (every language)
Random     random neurons, as many as the LIKN         ``Random`` (control)
=========  ==========================================  ============================

Every edit is measured in every language; nothing is undone between the steps of an edit
(the paper's Seq-KN code undid the first edit before the second and recorded only the
second: a bug we do not repeat).

Two protocols:

1. ``activation`` (the paper's): the edit's neurons are multiplied by 0 (suppress) or 2
   (enhance) at the target position (one batched :func:`scores_under_interventions` per
   query); a multi-step edit applies the union of its steps' neurons at once.
2. ``value`` (Dai et al.'s value-vector update, :func:`edit_value_vectors`): each step
   ``(lang, neurons)`` adds ``λ_new·e(new_lang) − λ_old·e(old_lang)`` to the value vectors of
   its neurons, the steps applied one after the other on the same weights (Seq-KN: A's
   neurons with A's targets, then B's with B's; LIKN: the intersection with every
   language's targets, i.e. Seq-KN restricted to the intersection). ``new`` is another
   candidate object of the relation, the same object in every language. Weights are
   restored bit for bit after each edit.

Measured per fact, edit and language: relative change of P(gold) on the fact's prompt
("related") and on ``n_unrelated`` other facts' prompts ("unrelated"); accuracy (gold ranked
first among the fact's candidate objects) before and after; for the value protocol also
P(new) and whether the new object now ranks first. Aggregates: means with 95% CIs over
facts, the paper's success ratio |related/unrelated|(enhance) + |related/unrelated|(suppress)
(flagged unstable when an unrelated mean is within its CI of 0), accuracy flips.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from .attribution import frozen_eval
from .localization import (LocalizationCache, LocalizationSettings, cloze_query, fact_query, localize_fact,  # noqa: F401
                           localize_facts, model_fingerprint)
from .data import (CAUSAL_MODES, Fact, causal_prompt_and_target, prompt_drop_summary,
                   prompt_languages)
from .intervene import (MODE_FACTORS, WeightBackup, edit_value_vectors, relative_change, uniform_neurons,
                        scores_under_interventions, unrelated_sample)
from .stats import mean_ci, trimmed_mean
from .models import get_family
from .neurons import KnowledgeNeurons
from .likelihood import score_pairs
from .store import RecordStore, content_key

__all__ = [
    "Neuron",
    "PROTOCOLS",
    "fact_query",
    "localize_fact",
    "localize_facts",
    "intersect_neuron_sets",
    "FactLIKN",
    "LIKNReport",
    "compute_likn",
    "layer_matched_chance",
    "uniform_chance",
    "hub_neurons",
    "pair_controls",
    "likn_controls",
    "controls_markdown",
    "find_likn",
    "Edit",
    "plan_edits",
    "setting_label",
    "parallel_new_object",
    "activation_signs",
    "apply_value_edit",
    "score_pairs",
    "activation_protocol",
    "value_protocol",
    "aggregate",
    "success_ratios",
    "success_bootstrap",
    "LIKNExperiment",
    "run_likn_experiment",
]

Neuron = tuple[int, int]

PROTOCOLS = ("activation", "value")
MODES = ("suppress", "enhance")


def _neuron(n) -> Neuron:
    layer, index = n
    return int(layer), int(index)


# ----------------------------------------------------------------------------------------
# LIKN: intersections


def intersect_neuron_sets(sets: Mapping[str, Iterable]) -> list[Neuron]:
    """Neurons present in every language's set, exact ``(layer, index)`` match, sorted.

    ``sets``: language -> neurons (tuples or ``[layer, index]`` lists as stored in JSON).
    """
    if not sets:
        raise ValueError("intersect_neuron_sets: no languages given")
    common: set[Neuron] | None = None
    for neurons in sets.values():
        current = {_neuron(n) for n in neurons}
        common = current if common is None else common & current
    return sorted(common or ())


@dataclass
class FactLIKN:
    """One fact's per-language neuron sets and their intersection (its LIKN)."""

    fact_id: str
    relation: str
    languages: tuple[str, ...]
    per_lang: dict[str, list[Neuron]]
    shared: list[Neuron]

    def __post_init__(self):
        self.languages = tuple(self.languages)
        self.per_lang = {l: [_neuron(n) for n in ns] for l, ns in self.per_lang.items()}
        self.shared = [_neuron(n) for n in self.shared]

    @property
    def empty(self) -> bool:
        return not self.shared

    @property
    def union(self) -> list[Neuron]:
        return sorted(set().union(*(set(ns) for ns in self.per_lang.values())))

    def jaccard(self) -> float:
        u = self.union
        return len(self.shared) / len(u) if u else float("nan")

    def to_dict(self) -> dict:
        return dict(fact_id=self.fact_id, relation=self.relation, languages=list(self.languages),
                    per_lang={l: [list(n) for n in ns] for l, ns in self.per_lang.items()},
                    shared=[list(n) for n in self.shared], sizes={**{l: len(ns) for l, ns in self.per_lang.items()},
                                                                  "shared": len(self.shared)})

    @classmethod
    def from_dict(cls, d: dict) -> "FactLIKN":
        return cls(d["fact_id"], d["relation"], tuple(d["languages"]), d["per_lang"], d["shared"])


def _counts(items: Iterable[int]) -> dict[str, int]:
    c = Counter(items)
    return {str(k): c[k] for k in sorted(c)}


@dataclass
class LIKNReport:
    """LIKN of a set of facts: per fact and overall (:meth:`summary`)."""

    languages: tuple[str, ...]
    method: str
    facts: list[FactLIKN]
    num_layers: int | None = None
    ffn_width: int | None = None

    def by_id(self) -> dict[str, FactLIKN]:
        return {f.fact_id: f for f in self.facts}

    def summary(self, top_recurring: int = 10) -> dict:
        """Overall numbers: facts with a non-empty intersection, sizes, layer distribution,
        the overlap expected by chance, the neurons that recur across facts."""
        n = len(self.facts)
        sizes = [len(f.shared) for f in self.facts]
        nonempty = [f for f in self.facts if f.shared]
        out: dict = dict(method=self.method, languages=list(self.languages), facts=n,
                         nonempty=len(nonempty), nonempty_fraction=len(nonempty) / n if n else float("nan"),
                         empty_fact_ids=[f.fact_id for f in self.facts if not f.shared])
        out["shared_size"] = dict(mean=statistics.fmean(sizes) if sizes else float("nan"),
                                  median=statistics.median(sizes) if sizes else float("nan"),
                                  max=max(sizes, default=0), histogram=_counts(sizes),
                                  mean_nonempty=statistics.fmean([len(f.shared) for f in nonempty]) if nonempty else float("nan"))
        out["per_language"] = {}
        for lang in self.languages:
            ls = [len(f.per_lang[lang]) for f in self.facts]
            frac = [len(f.shared) / len(f.per_lang[lang]) for f in self.facts if f.per_lang[lang]]
            out["per_language"][lang] = dict(mean_size=statistics.fmean(ls) if ls else float("nan"),
                                             median_size=statistics.median(ls) if ls else float("nan"),
                                             empty_sets=sum(s == 0 for s in ls),
                                             mean_shared_fraction=statistics.fmean(frac) if frac else float("nan"))
        jac = [f.jaccard() for f in self.facts if f.union]
        out["mean_jaccard"] = statistics.fmean(jac) if jac else float("nan")
        if self.num_layers and self.ffn_width:
            total = self.num_layers * self.ffn_width
            chance = [math.prod(len(f.per_lang[l]) for l in self.languages) / total ** (len(self.languages) - 1)
                      for f in self.facts]
            out["chance_expected_shared_size"] = statistics.fmean(chance) if chance else float("nan")
            out["neurons_per_model"] = total
        out["layer_distribution"] = {"shared": _counts(l for f in self.facts for l, _ in f.shared)}
        for lang in self.languages:
            out["layer_distribution"][lang] = _counts(l for f in self.facts for l, _ in f.per_lang[lang])
        recurring = Counter(n for f in self.facts for n in f.shared)
        out["recurring_shared_neurons"] = [[l, i, c] for (l, i), c in recurring.most_common(top_recurring)]
        out["distinct_shared_neurons"] = len(recurring)
        return out

    def to_markdown(self, max_facts: int | None = None) -> str:
        s = self.summary()
        langs = list(self.languages)
        lines = [f"LIKN ({self.method}, languages {', '.join(langs)}): {s['nonempty']} of {s['facts']} facts "
                 f"({100 * s['nonempty_fraction']:.0f}%) have a non-empty intersection; shared size mean "
                 f"{s['shared_size']['mean']:.2f}, median {s['shared_size']['median']}, max {s['shared_size']['max']}"
                 + (f"; expected by chance {s['chance_expected_shared_size']:.3g}" if "chance_expected_shared_size" in s else "")
                 + f"; mean Jaccard {s['mean_jaccard']:.3f}.", ""]
        lines.append("| language | mean #neurons | median | facts with no neuron | mean share in LIKN |")
        lines.append("|---|---|---|---|---|")
        for lang in langs:
            p = s["per_language"][lang]
            lines.append(f"| {lang} | {p['mean_size']:.2f} | {p['median_size']} | {p['empty_sets']} | "
                         f"{100 * p['mean_shared_fraction']:.1f}% |")
        lines.append("")
        all_layers = sorted({int(k) for d in s["layer_distribution"].values() for k in d})
        if all_layers:
            lines.append("| layer | " + " | ".join(str(l) for l in all_layers) + " |")
            lines.append("|---|" + "---|" * len(all_layers))
            for key in ["shared"] + langs:
                d = s["layer_distribution"][key]
                name = "LIKN" if key == "shared" else key
                lines.append(f"| {name} | " + " | ".join(str(d.get(str(l), 0)) for l in all_layers) + " |")
            lines.append("")
        if s["recurring_shared_neurons"]:
            lines.append("Most recurring LIKN neurons (layer, index: facts): "
                         + ", ".join(f"L{l}.{i}: {c}" for l, i, c in s["recurring_shared_neurons"])
                         + f" ({s['distinct_shared_neurons']} distinct).")
            lines.append("")
        lines.append("| fact | relation | " + " | ".join(f"#{l}" for l in langs) + " | #LIKN | LIKN neurons |")
        lines.append("|---|---|" + "---|" * len(langs) + "---|---|")
        for f in self.facts[:max_facts]:
            shown = ", ".join(f"L{l}.{i}" for l, i in f.shared[:8]) + (" …" if len(f.shared) > 8 else "")
            lines.append(f"| {f.fact_id} | {f.relation} | " + " | ".join(str(len(f.per_lang[l])) for l in langs)
                         + f" | {len(f.shared)} | {shown or '(empty)'} |")
        if max_facts is not None and len(self.facts) > max_facts:
            lines.append(f"| … {len(self.facts) - max_facts} more facts (see the JSON) | | " + "| " * len(langs) + "| |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return dict(languages=list(self.languages), method=self.method, num_layers=self.num_layers,
                    ffn_width=self.ffn_width, summary=self.summary(), controls=likn_controls(self),
                    facts=[f.to_dict() for f in self.facts])


# ----------------------------------------------------------------------------------------
# controls of the overlap: shuffled facts, layer-matched chance, hub neurons


def layer_matched_chance(sets: Sequence[Iterable], ffn_width: int) -> float:
    """Expected |S_1 ∩ ... ∩ S_k| when each set's neurons are redrawn uniformly WITHIN their
    own layers (layer sizes kept): Σ_l W · Π_k (c_{k,l} / W), c_{k,l} = set k's neurons in
    layer l, W = FFN width. Exact (independent uniform subsets of a layer's W neurons)."""
    counts = [Counter(l for l, _ in (_neuron(n) for n in s)) for s in sets]
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


def _overlap(a: Iterable, b: Iterable, exclude: set) -> int:
    return len((set(a) - exclude) & (set(b) - exclude))


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
    ex = {_neuron(n) for n in exclude}
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


def likn_controls(report: "LIKNReport", hub_min_facts: int = 3, top_hubs: int = 10) -> dict:
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
    return f"{row[f'excess_{kind}']:+.3f} ± {_num(row[f'excess_{kind}_ci'], '.3f')} ({n} facts)"


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
            lines.append(f"| {a}–{b} | {r['facts']} | {_num(r['mean_size'][0], '.1f')} / {_num(r['mean_size'][1], '.1f')} | "
                         f"{_num(r['matched'], '.3f')} | {r['matched_nonempty']} | {_num(r['jaccard'], '.3f')} | "
                         f"{_num(r['shuffled_same_relation'], '.3f')} ({r['same_relation_pairs']} pairs) | "
                         f"{_num(r['shuffled_other_relation'], '.3f')} ({r['other_relation_pairs']} pairs) | "
                         f"{_num(r['layer_matched_chance'], '.4f')} | {_num(r['uniform_chance'], '.4f')} | "
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


def compute_likn(facts: Sequence[Fact], localizations: Mapping[str, Mapping[str, KnowledgeNeurons | Iterable]],
                 langs: Sequence[str], method: str = "amig", num_layers: int | None = None,
                 ffn_width: int | None = None) -> LIKNReport:
    """LIKN of each fact from its per-language localizations (``KnowledgeNeurons`` or plain
    neuron lists), in the facts' order; every fact is kept, empty intersections included."""
    langs = tuple(langs)
    if len(langs) < 2:
        raise ValueError(f"LIKN needs at least 2 languages, got {list(langs)}")
    out = []
    for fact in facts:
        per = localizations.get(fact.id)
        missing = [l for l in langs if per is None or l not in per]
        if missing:
            raise KeyError(f"fact {fact.id!r} has no localization in {missing}")
        sets = {l: list(per[l].neurons if isinstance(per[l], KnowledgeNeurons) else per[l]) for l in langs}
        out.append(FactLIKN(fact.id, fact.relation, langs, sets, intersect_neuron_sets(sets)))
    return LIKNReport(langs, method, out, num_layers=num_layers, ffn_width=ffn_width)


def find_likn(model, tokenizer, facts: Sequence[Fact], langs: Sequence[str], *, method: str = "amig",
              cache: LocalizationCache | bool | None = True, causal_mode: str = "cut", progress: bool = True,
              **settings) -> tuple[LIKNReport, dict[str, dict[str, KnowledgeNeurons]]]:
    """Localize every fact in every language (cached) and intersect: ``(report, localizations)``.

    ``cache``: a :class:`LocalizationCache`, ``True`` (the model's default cache) or
    ``None``/``False`` (no cache)."""
    facts = [f.restrict(langs) for f in facts]
    locs = localize_facts(model, tokenizer, facts, langs, method=method, cache=cache or None,
                          causal_mode=causal_mode, progress=progress, **settings)
    family = get_family(model)
    return compute_likn(facts, locs, langs, method=method, num_layers=family.num_layers,
                        ffn_width=family.ffn_width), locs


# ----------------------------------------------------------------------------------------
# the edits


@dataclass(frozen=True)
class Edit:
    """One edit of one fact: ordered steps ``(language, neurons)``, all of them applied.

    The activation protocol scales the union of the steps' neurons at once; the value
    protocol applies the steps one after the other (step language ``lang`` uses that
    language's old/new objects), nothing undone in between.
    """

    name: str
    steps: tuple[tuple[str, tuple[Neuron, ...]], ...]

    @property
    def neurons(self) -> list[Neuron]:
        return sorted(set().union(*(set(ns) for _, ns in self.steps))) if self.steps else []

    @property
    def source_languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(l for l, _ in self.steps))


def plan_edits(fact_likn: FactLIKN, *, random_control: bool = True, num_layers: int | None = None,
               ffn_width: int | None = None, seed: int = 0) -> list[Edit]:
    """The edits of one fact: LIKN, KN[lang] for every language, Seq-KN, and (with
    ``random_control``; needs ``num_layers``/``ffn_width``) Random of the LIKN's size."""
    langs = fact_likn.languages
    shared = tuple(fact_likn.shared)
    edits = [Edit("LIKN", tuple((l, shared) for l in langs))]
    edits += [Edit(f"KN[{l}]", ((l, tuple(fact_likn.per_lang[l])),)) for l in langs]
    edits.append(Edit("Seq-KN", tuple((l, tuple(fact_likn.per_lang[l])) for l in langs)))
    if random_control:
        if not (num_layers and ffn_width):
            raise ValueError("random_control needs num_layers and ffn_width")
        rng = random.Random(f"{seed}:random:{fact_likn.fact_id}")
        rand = tuple(uniform_neurons(num_layers, ffn_width, len(shared), rng))
        edits.append(Edit("Random", tuple((l, rand) for l in langs)))
    return edits


def setting_label(edit_name: str, lang: str) -> str:
    """How an edit measured in ``lang`` is reported: ``KN[A]`` is ``Mono-KN (A→lang)`` for
    another language, ``Own-KN (A)`` for its own; other edits keep their name."""
    if edit_name.startswith("KN[") and edit_name.endswith("]"):
        src = edit_name[3:-1]
        return f"Own-KN ({src})" if src == lang else f"Mono-KN ({src}→{lang})"
    return edit_name


def setting_kind(label: str) -> str:
    return label.split(" ")[0]


def parallel_new_object(fact: Fact, langs: Sequence[str], seed: int = 0) -> dict[str, str] | None:
    """A wrong object of the fact's relation, the SAME object in every language, or None.

    Candidate lists are taken as parallel across languages (BMLAMA: same length, same
    order, gold at the same index); a fact whose lists are not parallel, or with no
    candidate that differs from the gold object in every language, gets None.
    """
    cands = [fact.candidates.get(l, ()) for l in langs]
    if not all(cands) or len({len(c) for c in cands}) != 1:
        return None
    gold_idx = {c.index(fact.target(l)) for c, l in zip(cands, langs)}
    if len(gold_idx) != 1:
        return None
    gi = gold_idx.pop()
    options = [k for k in range(len(cands[0]))
               if k != gi and all(c[k] != fact.target(l) and c[k].strip() for c, l in zip(cands, langs))]
    if not options:
        return None
    k = random.Random(f"{seed}:new:{fact.id}").choice(options)
    return {l: c[k] for c, l in zip(cands, langs)}


def activation_signs(model, tokenizer, prompt: str, target: str, neurons: Sequence[Neuron]) -> dict[Neuron, float]:
    """sign(a_i) (+1 for a_i ≥ 0, −1 otherwise) of each neuron at the target position of
    (prompt, target) on the model as it is now."""
    from .attribution import neuron_vectors

    family = get_family(model)
    layers = sorted({l for l, _ in neurons})
    if not layers:
        return {}
    q = family.encode(tokenizer, prompt, target)
    with frozen_eval(family.model):
        vec = neuron_vectors(family, q.input_ids.unsqueeze(0), q.target_position, layers)[0]
    row = {l: r for r, l in enumerate(layers)}
    return {(l, i): (1.0 if float(vec[row[l], i]) >= 0 else -1.0) for l, i in neurons}


def apply_value_edit(model, tokenizer, edit: Edit, old: Mapping[str, str], new: Mapping[str, str], *,
                     lambda_old: float = 1.0, lambda_new: float = 8.0, queries: Mapping[str, tuple[str, str]] | None = None,
                     backup: WeightBackup | None = None) -> WeightBackup:
    """Apply ``edit``'s steps in order with Dai et al.'s value-vector update (step language
    ``l``: ``v_i += s_i·(λ_new·e(new[l]) − λ_old·e(old[l]))``), all on the same weights.

    ``s_i = 1`` (Dai et al.: BERT's GELU neurons are positive where they fire) unless
    ``queries`` maps each step language to the fact's (prompt, target): then ``s_i`` is the
    sign of neuron i's activation at that prompt's target position, read on the model as
    edited by the previous steps. Gated MLPs (Gemma, Llama) have signed neurons
    (``act(gate)·up``): without the sign, a neuron with a negative activation would push
    the output AWAY from the new object. Returns the backup (``restore()`` undoes every
    step bit for bit).

    All or nothing: if any step fails (a missing language in ``old``/``new``/``queries``, a
    target that cannot be embedded, an interrupt), the weights this call changed are
    restored bit for bit before the error propagates, and ``backup`` (when given) is left
    as it was."""
    family = get_family(model)
    mine = WeightBackup(family.model)  # this call's originals only: what a failure restores
    try:
        for lang, neurons in edit.steps:
            if not neurons:
                continue
            if queries is None:
                groups = {1.0: list(neurons)}
            else:
                signs = activation_signs(family, tokenizer, *queries[lang], neurons)
                groups = {s: [n for n in neurons if signs[n] == s] for s in (1.0, -1.0)}
            for sign, group in groups.items():
                if group:
                    edit_value_vectors(family, tokenizer, group, mode="update", old_target=old[lang],
                                       new_target=new[lang], lambda_old=sign * lambda_old,
                                       lambda_new=sign * lambda_new, backup=mine)
    except BaseException:
        mine.restore()
        raise
    if backup is None:
        return mine
    for name, original in mine.originals.items():  # the caller's older originals win
        backup.originals.setdefault(name, original)
    return backup


# ----------------------------------------------------------------------------------------
# scoring


def _num_tokens(tokenizer, family, prompt: str, target: str) -> int:
    return family.encode(tokenizer, prompt, target).num_target_tokens


class _Ranker:
    """Candidate objects of (fact, lang) and their query strings / length normalisers."""

    def __init__(self, model, tokenizer, causal_mode: str, rank_by: str):
        if rank_by not in ("mean", "sum"):
            raise ValueError(f"rank_by must be 'mean' (log-prob per token) or 'sum', got {rank_by!r}")
        self.family = get_family(model)
        self.tok = tokenizer
        self.mode = causal_mode
        self.rank_by = rank_by
        self._ntok: dict[tuple[str, str], int] = {}

    def candidates(self, fact: Fact, lang: str) -> list[str]:
        """Gold first, then the other candidates (deduplicated); [gold] if it has none."""
        return list(dict.fromkeys([fact.target(lang), *fact.candidates.get(lang, ())]))

    def query(self, fact: Fact, lang: str, target: str) -> tuple[str, str]:
        return fact_query(fact, lang, target=target, causal_mode=self.mode, kind=self.family.kind)

    def norm(self, prompt: str, target: str) -> int:
        if self.rank_by == "sum":
            return 1
        key = (prompt, target)
        if key not in self._ntok:
            self._ntok[key] = _num_tokens(self.tok, self.family, prompt, target)
        return self._ntok[key]

    def gold_first(self, fact: Fact, lang: str, logps: Sequence[float]) -> bool | None:
        """Is the gold object (index 0) strictly the best candidate? None without rivals."""
        cands = self.candidates(fact, lang)
        if len(cands) < 2:
            return None
        scores = [lp / self.norm(*self.query(fact, lang, c)) for c, lp in zip(cands, logps)]
        return scores[0] > max(scores[1:])

    def best(self, fact: Fact, lang: str, logps: Sequence[float]) -> str:
        cands = self.candidates(fact, lang)
        scores = [lp / self.norm(*self.query(fact, lang, c)) for c, lp in zip(cands, logps)]
        return cands[max(range(len(cands)), key=lambda k: scores[k])]


def _edit_text(kind: str, fact: Fact, lang: str, obj: str) -> str:
    """The object's text as it follows the prompt (causal: cut-mode target, e.g. " Paris")."""
    if kind == "causal":
        return causal_prompt_and_target(fact.prompt(lang), obj, mode="cut")[1]
    return obj


def _unrelated_ids(facts: Sequence[Fact], n_unrelated: int, seed: int) -> dict[str, list[str]]:
    ids = [f.id for f in facts]
    return {f.id: unrelated_sample(f.id, ids, n_unrelated, seed) for f in facts}


# ----------------------------------------------------------------------------------------
# protocol 1: suppression / enhancement of activations


def activation_protocol(model, tokenizer, facts: Sequence[Fact], likn: LIKNReport, *, n_unrelated: int = 5,
                        seed: int = 0, causal_mode: str = "cut", rank_by: str = "mean",
                        unrelated_accuracy: bool = True, random_control: bool = True,
                        store: RecordStore | None = None, progress: bool = True, batch_size: int = 64) -> list[dict]:
    """Suppress (×0) / enhance (×2) every edit's neurons at the target position; one record
    per fact with a row per (edit, measured language, mode). See the module docstring."""
    family = get_family(model)
    ranker = _Ranker(family, tokenizer, causal_mode, rank_by)
    langs = likn.languages
    by_id = {f.id: f for f in facts}
    fl = likn.by_id()
    unrelated = _unrelated_ids(facts, n_unrelated, seed)
    edits = {f.id: plan_edits(fl[f.id], random_control=random_control, num_layers=family.num_layers,
                              ffn_width=family.ffn_width, seed=seed) for f in facts}
    fp = model_fingerprint(family.model)
    # jobs per query (fact j, lang): rows (source fact i, edit index, mode, kind)
    jobs: dict[tuple[str, str], list[tuple[str, int, str, str]]] = {}
    for f in facts:
        for lang in langs:
            jobs.setdefault((f.id, lang), []).extend((f.id, e, m, "related") for e in range(len(edits[f.id])) for m in MODES)
            for j in unrelated[f.id]:
                jobs.setdefault((j, lang), []).extend((f.id, e, m, "unrelated")
                                                      for e in range(len(edits[f.id])) for m in MODES)
    results: dict[tuple[str, str], dict] = {}
    for (j, lang), rows in tqdm(jobs.items(), desc="activation edits", disable=not progress):
        fact = by_id[j]
        interventions = [(edits[i][e].neurons, MODE_FACTORS[m]) for i, e, m, _ in rows]
        cands = ranker.candidates(fact, lang)
        need_all = unrelated_accuracy
        related_rows = [r for r, row in enumerate(rows) if row[3] == "related"]
        key = content_key(["activation", fp, ranker.query(fact, lang, cands[0]), cands, causal_mode,
                    [[list(map(list, n)), f] for n, f in interventions], need_all])
        rec = store.get(key) if store is not None else None
        if rec is None:
            clean, after = [], []
            for c_idx, cand in enumerate(cands):
                prompt, target = ranker.query(fact, lang, cand)
                use = list(range(len(rows))) if (c_idx == 0 or need_all) else related_rows
                c0, scores = scores_under_interventions(family, tokenizer, prompt, target,
                                                        [interventions[r] for r in use], objective="logprob",
                                                        batch_size=batch_size)
                full = [float("nan")] * len(rows)
                for r, s in zip(use, scores.tolist()):
                    full[r] = s
                clean.append(c0)
                after.append(full)
            rec = {"clean": clean, "after": after}
            if store is not None and key not in store:
                store.add(key, {"fact_id": j, "lang": lang, "protocol": "activation", **rec})
        results[(j, lang)] = {"rows": rows, **rec}
    # assemble per-fact records
    cells: dict[tuple[str, int, str, str], dict] = {}
    for (j, lang), res in results.items():
        fact = by_id[j]
        clean = res["clean"]
        acc0 = ranker.gold_first(fact, lang, clean)
        for r, (i, e, m, kind) in enumerate(res["rows"]):
            after = [res["after"][c][r] for c in range(len(clean))]
            cell = cells.setdefault((i, e, m, lang), {"unrelated": [], "unrel_acc0": [], "unrel_acc1": []})
            change = relative_change(after[0], clean[0], log=True)
            acc1 = ranker.gold_first(fact, lang, after) if not any(math.isnan(a) for a in after) else None
            if kind == "related":
                cell.update(related=change, logp_before=clean[0], logp_after=after[0], correct_before=acc0,
                            correct_after=acc1)
            else:
                cell["unrelated"].append(change)
                if acc0 is not None and acc1 is not None:
                    cell["unrel_acc0"].append(acc0)
                    cell["unrel_acc1"].append(acc1)
    records = []
    for f in facts:
        rows = []
        for e, edit in enumerate(edits[f.id]):
            for lang in langs:
                for m in MODES:
                    c = cells[(f.id, e, m, lang)]
                    rows.append(dict(edit=edit.name, setting=setting_label(edit.name, lang), lang=lang, mode=m,
                                     n_neurons=len(edit.neurons), related=c["related"],
                                     unrelated=statistics.fmean(c["unrelated"]) if c["unrelated"] else float("nan"),
                                     unrelated_each=c["unrelated"], correct_before=c["correct_before"],
                                     correct_after=c["correct_after"], unrelated_correct_before=sum(c["unrel_acc0"]),
                                     unrelated_correct_after=sum(c["unrel_acc1"]), unrelated_scored=len(c["unrel_acc0"])))
        records.append(dict(protocol="activation", fact_id=f.id, relation=f.relation,
                            likn_size=len(fl[f.id].shared), sizes={l: len(fl[f.id].per_lang[l]) for l in langs},
                            unrelated_ids=unrelated[f.id], rows=rows))
    return records


# ----------------------------------------------------------------------------------------
# protocol 2: value-vector edits


def value_protocol(model, tokenizer, facts: Sequence[Fact], likn: LIKNReport, *, n_unrelated: int = 5, seed: int = 0,
                   causal_mode: str = "cut", rank_by: str = "mean", unrelated_accuracy: bool = True,
                   random_control: bool = True, lambda_old: float = 1.0, lambda_new: float = 8.0,
                   signed: bool = True, store: RecordStore | None = None, progress: bool = True,
                   batch_size: int = 16) -> list[dict]:
    """Dai et al.'s value-vector update old -> new for every edit (steps applied in order on
    the same weights, restored bit for bit after each edit), measured in every language.
    ``signed``: orient each neuron's update by the sign of its activation on the fact's
    prompt (see :func:`apply_value_edit`; needed for gated MLPs, a no-op for positive
    neurons)."""
    family = get_family(model)
    ranker = _Ranker(family, tokenizer, causal_mode, rank_by)
    langs = likn.languages
    by_id = {f.id: f for f in facts}
    fl = likn.by_id()
    unrelated = _unrelated_ids(facts, n_unrelated, seed)
    fp = model_fingerprint(family.model)
    records = []
    skipped = []
    for f in tqdm(facts, desc="value edits", disable=not progress):
        new = parallel_new_object(f, langs, seed=seed)
        if new is None:
            skipped.append(f.id)
            records.append(dict(protocol="value", fact_id=f.id, relation=f.relation, skipped="no parallel new object",
                                likn_size=len(fl[f.id].shared), rows=[]))
            continue
        old = {l: f.target(l) for l in langs}
        # the embeddings of the value-vector update are those of the object as the model
        # reads it (BPE models: " Paris" after the prompt), without any sentence suffix
        old_text = {l: _edit_text(family.kind, f, l, old[l]) for l in langs}
        new_text = {l: _edit_text(family.kind, f, l, new[l]) for l in langs}
        # the query list: per language, related candidates (gold first) + the new object's
        # position among them, then the unrelated facts' gold (and candidates)
        pairs: list[tuple[str, str]] = []
        layout: dict[str, dict] = {}
        for lang in langs:
            cands = ranker.candidates(f, lang)
            if new[lang] not in cands:
                cands.append(new[lang])
            start = len(pairs)
            pairs += [ranker.query(f, lang, c) for c in cands]
            unrel = []
            for j in unrelated[f.id]:
                g = by_id[j]
                uc = ranker.candidates(g, lang) if unrelated_accuracy else [g.target(lang)]
                unrel.append((j, len(pairs), len(uc)))
                pairs += [ranker.query(g, lang, c) for c in uc]
            layout[lang] = dict(cands=cands, start=start, new_index=cands.index(new[lang]), unrel=unrel)
        edits = plan_edits(fl[f.id], random_control=random_control, num_layers=family.num_layers,
                           ffn_width=family.ffn_width, seed=seed)
        key = content_key(["value", fp, f.id, causal_mode, rank_by, pairs, [[e.name, [[l, list(map(list, ns))] for l, ns in e.steps]]
                                                                      for e in edits], lambda_old, lambda_new, signed])
        queries = {l: ranker.query(f, l, old[l]) for l in langs} if signed else None
        rec = store.get(key) if store is not None else None
        if rec is None:
            clean = score_pairs(family, tokenizer, pairs, batch_size=batch_size)
            after = {}
            for edit in edits:
                backup = apply_value_edit(family, tokenizer, edit, old_text, new_text, lambda_old=lambda_old,
                                          lambda_new=lambda_new, queries=queries)
                try:
                    after[edit.name] = score_pairs(family, tokenizer, pairs, batch_size=batch_size)
                finally:
                    backup.restore()
            rec = {"clean": clean, "after": after}
            if store is not None and key not in store:
                store.add(key, {"fact_id": f.id, "protocol": "value", **rec})
        clean, after = rec["clean"], rec["after"]
        rows = []
        for edit in edits:
            a = after[edit.name]
            for lang in langs:
                lay = layout[lang]
                s, n = lay["start"], len(lay["cands"])
                b_c, a_c = clean[s:s + n], a[s:s + n]
                ni = lay["new_index"]

                def first(scores, idx, cands=lay["cands"], lang=lang):
                    normed = [lp / ranker.norm(*ranker.query(f, lang, c)) for c, lp in zip(cands, scores)]
                    return normed[idx] > max(v for k, v in enumerate(normed) if k != idx)

                unrel_changes, u0, u1 = [], 0, 0
                scored = 0
                for j, us, un in lay["unrel"]:
                    unrel_changes.append(relative_change(a[us], clean[us], log=True))
                    if un >= 2:
                        g = by_id[j]
                        acc0 = ranker.gold_first(g, lang, clean[us:us + un])
                        acc1 = ranker.gold_first(g, lang, a[us:us + un])
                        scored += 1
                        u0 += bool(acc0)
                        u1 += bool(acc1)
                rows.append(dict(edit=edit.name, setting=setting_label(edit.name, lang), lang=lang,
                                 n_neurons=len(edit.neurons), old=old[lang], new=new[lang],
                                 related=relative_change(a_c[0], b_c[0], log=True), logp_old_before=b_c[0], logp_old_after=a_c[0],
                                 logp_new_before=b_c[ni], logp_new_after=a_c[ni],
                                 log10_new_ratio=(a_c[ni] - b_c[ni]) / math.log(10),
                                 correct_before=first(b_c, 0), correct_after=first(a_c, 0),
                                 new_first_before=first(b_c, ni), new_first_after=first(a_c, ni),
                                 unrelated=statistics.fmean(unrel_changes) if unrel_changes else float("nan"),
                                 unrelated_each=unrel_changes, unrelated_correct_before=u0, unrelated_correct_after=u1,
                                 unrelated_scored=scored))
        records.append(dict(protocol="value", fact_id=f.id, relation=f.relation, likn_size=len(fl[f.id].shared),
                            sizes={l: len(fl[f.id].per_lang[l]) for l in langs}, new=new,
                            unrelated_ids=unrelated[f.id], rows=rows))
    return records


# ----------------------------------------------------------------------------------------
# aggregation


def _frac(values: Sequence) -> float:
    vals = [bool(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _median(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else float("nan")


def _ci_contains_zero(mean: float, ci: float) -> bool:
    return math.isnan(mean) or math.isnan(ci) or abs(mean) <= ci


def aggregate(records: Sequence[dict], subset: str = "likn") -> list[dict]:
    """Rows per (measured language, setting, mode) with means and 95% CIs over facts.

    ``subset``: ``"likn"`` = facts with a non-empty LIKN (an edit needs neurons; the paper's
    comparison), ``"all"`` = every fact (an empty neuron set is a no-op edit: change 0).
    """
    if subset not in ("likn", "all"):
        raise ValueError(f"subset must be 'likn' or 'all', got {subset!r}")
    keep = [r for r in records if r.get("rows") and (subset == "all" or r["likn_size"] > 0)]
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
                   related_median=_median(r["related"] for r in rows),
                   related_trimmed=trimmed_mean([r["related"] for r in rows]),
                   unrelated_median=_median(r["unrelated"] for r in rows),
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
    order = {"LIKN": 0, "Mono-KN": 1, "Seq-KN": 2, "Own-KN": 3, "Random": 4}
    out.sort(key=lambda a: (a["lang"], order.get(setting_kind(a["setting"]), 9), a["setting"], a["mode"]))
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
    keep = [r for r in records if r.get("rows") and (subset == "all" or r["likn_size"] > 0)]
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
    order = {"LIKN": 0, "Mono-KN": 1, "Seq-KN": 2, "Own-KN": 3, "Random": 4}
    pairs.sort(key=lambda p: (p[0], order.get(setting_kind(p[1]), 9), p[1]))
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


def bootstrap_table(rows: Sequence[dict]) -> str:
    lines = ["| measured in | setting | success (paper's) | bootstrap 95% interval | LIKN > this setting in |",
             "|---|---|---|---|---|"]
    for r in rows:
        p = f"{100 * r['p_likn_beats']:.0f}% of resamples" if "p_likn_beats" in r else ""
        lines.append(f"| {r['lang']} | {r['setting']} | {_num(r['success'])} | [{_num(r['ci_low'])}, "
                     f"{_num(r['ci_high'])}] | {p} |")
    return "\n".join(lines)


def _pct(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:+.1f}% ± {100 * ci:.1f}" if not math.isnan(ci) else f"{100 * mean:+.1f}%"


def _num(x: float, fmt: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else ("∞" if x == float("inf") else format(x, fmt))


def activation_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per (language, setting), suppression and enhancement side by side."""
    succ = {(s["lang"], s["setting"]): s for s in success_ratios(rows)}
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["lang"], r["setting"]), {})[r["mode"]] = r
    lines = ["| measured in | setting | facts | mean #neurons | suppress: related ΔP | suppress: unrelated ΔP | "
             "enhance: related ΔP | enhance: unrelated ΔP | success (paper's) | accuracy | suppress: lost | "
             "enhance: gained | unrelated acc. (sup / enh) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (lang, setting), m in by.items():
        s, e = m.get("suppress"), m.get("enhance")
        if s is None or e is None:
            continue
        sc = succ.get((lang, setting))
        success = "n/a" if sc is None else _num(sc["success"]) + (" (unstable)" if sc["unstable"] else "")
        ub = s["unrelated_correct_before"]
        un = s["unrelated_scored"]
        unrel = (f"{ub}/{un} → {s['unrelated_correct_after']} / {e['unrelated_correct_after']}" if un else "n/a")
        lines.append(f"| {lang} | {setting} | {s['facts']} | {s['mean_neurons']:.1f} | "
                     f"{_pct(s['related_mean'], s['related_ci'])} | {_pct(s['unrelated_mean'], s['unrelated_ci'])} | "
                     f"{_pct(e['related_mean'], e['related_ci'])} | {_pct(e['unrelated_mean'], e['unrelated_ci'])} | "
                     f"{success} | {100 * s['acc_before']:.0f}% | {s['lost']} | {e['gained']} | {unrel} |")
    return "\n".join(lines)


def sturdy_table(rows: Sequence[dict]) -> str:
    """Markdown: numbers that do not divide by the unrelated mean: the paired difference
    related − unrelated (per fact, mean ± 95% CI) and the medians."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["lang"], r["setting"]), {})[r["mode"]] = r
    lines = ["| measured in | setting | suppress: related − unrelated | suppress: median related / unrelated | "
             "enhance: related − unrelated | enhance: median related / unrelated | enhance: 10% trimmed mean related |",
             "|---|---|---|---|---|---|---|"]
    for (lang, setting), m in by.items():
        s, e = m.get("suppress"), m.get("enhance")
        if s is None or e is None:
            continue
        lines.append(f"| {lang} | {setting} | {_pct(s['specific_mean'], s['specific_ci'])} | "
                     f"{_pct(s['related_median'], float('nan'))} / {_pct(s['unrelated_median'], float('nan'))} | "
                     f"{_pct(e['specific_mean'], e['specific_ci'])} | "
                     f"{_pct(e['related_median'], float('nan'))} / {_pct(e['unrelated_median'], float('nan'))} | "
                     f"{_pct(e.get('related_trimmed', float('nan')), float('nan'))} |")
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
        lr = "n/a" if math.isnan(r["log10_new_mean"]) else f"{r['log10_new_mean']:+.2f} ± {_num(r['log10_new_ci'])}"
        lines.append(f"| {r['lang']} | {r['setting']} | {r['facts']} | {r['mean_neurons']:.1f} | "
                     f"{_pct(r['related_mean'], r['related_ci'])} | {lr} | "
                     f"{100 * r['new_first_before']:.0f}% → {100 * r['new_first_after']:.0f}% | {r['lost']} | "
                     f"{_pct(r['unrelated_mean'], r['unrelated_ci'])} | {unrel} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# the whole experiment


@dataclass
class LIKNExperiment:
    """Everything :func:`run_likn_experiment` computed; ``save(dir)`` writes markdown + JSON."""

    config: dict
    likn: LIKNReport
    activation: list[dict] = field(default_factory=list)
    value: list[dict] = field(default_factory=list)

    def tables(self) -> dict:
        out = {}
        for name, recs in (("activation", self.activation), ("value", self.value)):
            if recs:
                out[name] = {subset: aggregate(recs, subset) for subset in ("likn", "all")}
        return out

    def to_json(self) -> dict:
        tables = self.tables()
        succ = {subset: success_ratios(tables["activation"][subset]) for subset in ("likn", "all")} if "activation" in tables else {}
        boot = {subset: success_bootstrap(self.activation, subset) for subset in ("likn", "all")} if self.activation else {}
        return dict(config=self.config, likn=self.likn.to_json(), tables=tables, success=succ,
                    success_bootstrap=boot, records=dict(activation=self.activation, value=self.value))

    def to_markdown(self, max_facts: int | None = 30) -> str:
        s = self.likn.summary()
        c = self.config
        from .loading import model_label

        parts = [f"# LIKN and cross-lingual editing: {model_label(c.get('model'))} (measured here)",
                 "",
                 f"{c.get('facts')} facts ({c.get('data', '')}), languages {', '.join(self.likn.languages)}, method "
                 f"{self.likn.method}, causal mode `{c.get('causal_mode')}`, {c.get('n_unrelated')} unrelated facts "
                 f"per fact, seed {c.get('seed')}.", ""]
        if c.get("cut_losses"):
            parts += ["Prompts that lose text after the mask in cut mode: " + ", ".join(
                f"{l} {v['lose_text']}/{v['prompts']}" for l, v in c["cut_losses"].items())
                + (" (scored in sentence mode: nothing lost)." if c.get("causal_mode") == "sentence" else "."), ""]
        parts += [f"Note: {n}" for n in c.get("notes", [])] + ([""] if c.get("notes") else [])
        parts += ["## Language-independent neurons", "", self.likn.to_markdown(max_facts=max_facts), "",
                  "## Overlap controls (every language pair)", "", controls_markdown(likn_controls(self.likn)), ""]
        tables = self.tables()
        n_likn = s["nonempty"]
        for subset, title in (("likn", f"facts with a non-empty LIKN ({n_likn})"), ("all", f"all {s['facts']} facts")):
            if "activation" in tables:
                parts += [f"## Suppression ×0 / enhancement ×2 at the target position — {title}", "",
                          activation_table(tables["activation"][subset]), "",
                          "Paired differences and medians (no division by the unrelated mean):", "",
                          sturdy_table(tables["activation"][subset]), "",
                          "The paper's success ratio with percentile-bootstrap intervals over facts:", "",
                          bootstrap_table(success_bootstrap(self.activation, subset)), ""]
            if "value" in tables:
                parts += [f"## Value-vector edit old → new (Dai et al.'s rule) — {title}", "",
                          value_table(tables["value"][subset]), ""]
        skipped = [r["fact_id"] for r in self.value if r.get("skipped")]
        if skipped:
            parts += [f"Value protocol: {len(skipped)} facts skipped (no candidate object that is the same in every "
                      f"language): {', '.join(skipped[:10])}{' …' if len(skipped) > 10 else ''}.", ""]
        parts += ["ΔP: mean over facts of (P_after − P_before)/P_before of the gold object, ± the 95% CI half-width; "
                  "related = the fact's own prompt, unrelated = the mean over other facts' prompts (same edit). "
                  "Success (paper's) = |related/unrelated| (enhance) + |related/unrelated| (suppress), as in the "
                  "paper's code; 'unstable' = an unrelated mean lies within its CI of 0, so the ratio divides by "
                  "noise. Accuracy = the gold object ranks first among the fact's candidate objects "
                  f"(log-prob {'per token' if c.get('rank_by') == 'mean' else 'sum'}); lost/gained = facts whose "
                  "accuracy flips. Mono-KN (A→B): A's neurons edited, measured in B; Own-KN (A): A's neurons, "
                  "measured in A (reference); Seq-KN: all languages' neurons edited together (value protocol: "
                  "one language after the other, nothing undone); Random: as many random neurons as the LIKN."]
        return "\n".join(parts) + "\n"

    @classmethod
    def load(cls, out_dir: str | Path) -> "LIKNExperiment":
        """Rebuild from ``out_dir/likn_results.json`` (no model needed): re-render with
        :meth:`save` / :meth:`to_markdown`."""
        with open(Path(out_dir) / "likn_results.json", encoding="utf-8") as fh:
            d = json.load(fh)
        lk = d["likn"]
        likn = LIKNReport(tuple(lk["languages"]), lk["method"], [FactLIKN.from_dict(f) for f in lk["facts"]],
                          num_layers=lk.get("num_layers"), ffn_width=lk.get("ffn_width"))
        return cls(d["config"], likn, _unjson(d["records"]["activation"]), _unjson(d["records"]["value"]))

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = dict(markdown=out / "likn_report.md", json=out / "likn_results.json", likn=out / "likn_neurons.json")
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        with open(paths["json"], "w", encoding="utf-8") as fh:
            json.dump(_jsonable(self.to_json()), fh, ensure_ascii=False, indent=1)
        with open(paths["likn"], "w", encoding="utf-8") as fh:
            json.dump(_jsonable(self.likn.to_json()), fh, ensure_ascii=False, indent=1)
        return paths


_NUMERIC = ("related", "unrelated", "log10_new_ratio", "logp_before", "logp_after", "logp_old_before",
            "logp_old_after", "logp_new_before", "logp_new_after")


def _unjson(records: list[dict]) -> list[dict]:
    """Per-fact records read back from JSON: NaN/inf (written as null / "inf") restored."""
    def num(v):
        if v is None:
            return float("nan")
        if isinstance(v, str) and v in ("inf", "-inf"):
            return float(v)
        return v

    for rec in records:
        for row in rec.get("rows", []):
            for k in _NUMERIC:
                if k in row:
                    row[k] = num(row[k])
            if "unrelated_each" in row:
                row["unrelated_each"] = [num(v) for v in row["unrelated_each"]]
    return records


def _jsonable(obj):
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def run_likn_experiment(model, tokenizer, facts: Sequence[Fact], langs: Sequence[str], *, method: str = "amig",
                        cache: LocalizationCache | bool | None = True, causal_mode: str = "cut",
                        protocols: Sequence[str] = PROTOCOLS, n_unrelated: int = 5, seed: int = 0,
                        rank_by: str = "mean", unrelated_accuracy: bool | Sequence[str] = (),
                        random_control: bool = True, out_dir: str | Path | None = None, progress: bool = True,
                        config: dict | None = None, localize_settings: dict | None = None,
                        lambda_old: float = 1.0, lambda_new: float = 8.0, signed: bool = True) -> LIKNExperiment:
    """Localize (cached), intersect, and run the editing protocols on the same facts.

    ``unrelated_accuracy``: the protocols (or True = both, False = none) that also rank the
    unrelated facts' candidates for accuracy flips on unrelated prompts (each unrelated
    candidate scored under every edit: about 4x the activation protocol's cost and 8x the
    value protocol's). ``lambda_old``/``lambda_new``/``signed``: the value-vector update
    (:func:`apply_value_edit`).

    With ``out_dir`` the measurements are kept in ``out_dir/measurements.jsonl`` (a second
    run reuses them) and the report is saved there (:meth:`LIKNExperiment.save`).
    """
    langs = list(dict.fromkeys(langs))
    if len(langs) < 2:
        raise ValueError(f"LIKN needs at least 2 languages, got {langs}")
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; use {list(PROTOCOLS)}")
    if len(facts) < 2:
        raise ValueError("the editing experiment needs at least 2 facts (unrelated prompts come from other facts)")
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    ids = [f.id for f in facts]
    if len(set(ids)) != len(ids):
        raise ValueError("fact ids must be unique")
    facts = [f.restrict(langs) for f in facts]
    settings = LocalizationSettings.of(localize_settings)
    if unrelated_accuracy is True or unrelated_accuracy is False:
        unrelated_accuracy = PROTOCOLS if unrelated_accuracy else ()
    unrelated_accuracy = tuple(unrelated_accuracy)
    with prompt_drop_summary(prompt_languages(facts, langs)):  # one warning per language, not one per prompt
        likn, _ = find_likn(model, tokenizer, facts, langs, method=method, cache=cache, causal_mode=causal_mode,
                            progress=progress, settings=settings)
        store = RecordStore(Path(out_dir) / "measurements.jsonl") if out_dir is not None else None
        common = dict(n_unrelated=n_unrelated, seed=seed, causal_mode=causal_mode, rank_by=rank_by,
                      random_control=random_control, store=store, progress=progress)
        act = (activation_protocol(model, tokenizer, facts, likn, unrelated_accuracy="activation" in unrelated_accuracy,
                                   **common) if "activation" in protocols else [])
        val = (value_protocol(model, tokenizer, facts, likn, unrelated_accuracy="value" in unrelated_accuracy,
                              lambda_old=lambda_old, lambda_new=lambda_new, signed=signed, **common)
               if "value" in protocols else [])
    cfg = dict(languages=langs, method=method, causal_mode=causal_mode, protocols=list(protocols),
               unrelated_accuracy=list(unrelated_accuracy), value_edit=dict(lambda_old=lambda_old, lambda_new=lambda_new,
                                                                            signed=signed),
               n_unrelated=n_unrelated, seed=seed, rank_by=rank_by, facts=len(facts), fact_ids=ids,
               localize_settings=settings.recorded(), model_fingerprint=model_fingerprint(get_family(model).model))
    cfg.update(config or {})
    exp = LIKNExperiment(cfg, likn, act, val)
    if out_dir is not None:
        exp.save(out_dir)
    return exp
