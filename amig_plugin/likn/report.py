"""The LIKN of a set of facts: :class:`LIKNReport` (summary, markdown, JSON) and how it is built.

:func:`compute_likn` intersects given per-language localizations; :func:`find_likn` first
localizes every fact in every language through the shared localization cache.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..data import Fact
from ..localization import LocalizationCache, localize_facts
from ..models import get_family
from ..neurons import KnowledgeNeurons
from .controls import likn_controls
from .sets import FactLIKN, intersect_neuron_sets

__all__ = ["LIKNReport", "compute_likn", "find_likn"]


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
