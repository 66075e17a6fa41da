"""One fact's language-independent neurons: the intersection of its per-language neuron sets.

:func:`intersect_neuron_sets` matches neurons exactly on ``(layer, index)``; :class:`FactLIKN`
keeps one fact's per-language sets, their intersection (``shared``) and their union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..neurons import Neuron

__all__ = ["Neuron", "as_neuron", "intersect_neuron_sets", "FactLIKN"]


def as_neuron(n) -> Neuron:
    """``(layer, index)`` as ints (JSON stores neurons as ``[layer, index]`` lists)."""
    layer, index = n
    return int(layer), int(index)


def intersect_neuron_sets(sets: Mapping[str, Iterable]) -> list[Neuron]:
    """Neurons present in every language's set, exact ``(layer, index)`` match, sorted.

    ``sets``: language -> neurons (tuples or ``[layer, index]`` lists as stored in JSON).
    """
    if not sets:
        raise ValueError("intersect_neuron_sets: no languages given")
    common: set[Neuron] | None = None
    for neurons in sets.values():
        current = {as_neuron(n) for n in neurons}
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
        self.per_lang = {l: [as_neuron(n) for n in ns] for l, ns in self.per_lang.items()}
        self.shared = [as_neuron(n) for n in self.shared]

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
