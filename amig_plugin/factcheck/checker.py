"""The checker: relation-level DKN, the DKN score of one (prompt, candidate), and the fitted
:class:`FactChecker` (saved and loaded as JSON; used by the EasyEdit metric).

A relation's DKN are the neurons found in the degenerate pairs of more than λ × (the largest
such count) of its DKN-part facts (:func:`recurring_neurons`, λ = 0.7 by default); without
any degenerate pair, ``no_dkn="topk"`` falls back to the recurring top-k neurons (reported
as ``source = "topk"``) and ``no_dkn="skip"`` drops the relation. A query's score is the
mean attribution of those neurons with IG run on their layers only (exact per layer), and
the checker says "true" when it exceeds the relation's dev-tuned threshold. Steps 3-5 of
the protocol in :mod:`amig_plugin.factcheck.run`.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..attribution import attribute_query
from ..data import MASK_PLACEHOLDER
from ..defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS
from ..dkn import DKNResult, effective_causal_mode
from ..models import get_family
from ..neurons import Neuron
from .queries import candidate_query

DEFAULT_LAMBDA = 0.7


def check_lambda(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) < 1.0:
        raise ValueError(f"lam (λ) must lie in [0, 1): neurons with count > λ·max count are kept; got {lam!r} (paper: 0.7)")
    return float(lam)


def recurring_neurons(neuron_sets: Iterable[Iterable[Neuron]], lam: float = DEFAULT_LAMBDA) -> tuple[list[Neuron], dict]:
    """Neurons whose count (number of sets containing them) > λ × max count, sorted by
    count then neuron; with the counts."""
    lam = check_lambda(lam)
    counts = Counter(n for s in neuron_sets for n in {tuple(x) for x in s})
    if not counts:
        return [], {}
    top = max(counts.values())
    kept = sorted((n for n, c in counts.items() if c > lam * top), key=lambda n: (-counts[n], n))
    return kept, dict(counts)


def relation_dkn(results: Sequence[DKNResult], lam: float = DEFAULT_LAMBDA, no_dkn: str = "topk") -> tuple[list[Neuron], str]:
    """(relation-level DKN, source) from the DKN part's detections; see the module docstring."""
    if no_dkn not in ("topk", "skip"):
        raise ValueError(f"unknown no_dkn {no_dkn!r}; use 'topk' (fallback to recurring top-k neurons) or 'skip'")
    neurons, _ = recurring_neurons([r.degenerate_neurons for r in results], lam)
    if neurons:
        return neurons, "dkn"
    if no_dkn == "topk":
        neurons, _ = recurring_neurons([r.neurons for r in results], lam)
        return neurons, "topk" if neurons else "none"
    return [], "none"



def dkn_score(model, tokenizer, prompt: str, candidate: str, neurons: Sequence[Neuron], *, method: str = "amig",
              steps: int = DEFAULT_STEPS, objective: str = "prob", quadrature: str = DEFAULT_QUADRATURE,
              ig_batch_size: int = DEFAULT_IG_BATCH_SIZE) -> dict:
    """Mean IG attribution of ``neurons`` for (prompt, candidate), IG over their layers only
    (the engine's default rule and path points unless given)."""
    if not neurons:
        raise ValueError("no neurons to score with")
    family = get_family(model)
    query = family.encode(tokenizer, prompt, candidate)
    layers = sorted({int(l) for l, _ in neurons})
    r = attribute_query(family, query, tokenizer, method=method, steps=steps, objective=objective, layers=layers,
                        ig_batch_size=ig_batch_size, quadrature=quadrature)
    row = {l: i for i, l in enumerate(r.layers)}
    values = [float(r.attributions[row[int(l)], int(i)]) for l, i in neurons]
    return {"mean": sum(values) / len(values), "values": values, "layers": layers, "p": r.score}



@dataclass
class FactChecker:
    """Relation-level DKN and dev-tuned thresholds: judges (prompt, candidate) pairs."""

    relations: dict[str, dict]  # relation -> {"neurons", "threshold", "source", "template"}
    lang: str | None = None
    model: str = ""
    settings: dict = field(default_factory=dict)

    def relation_of(self, prompt: str, subject: str | None = None) -> str | None:
        """The relation whose template (``[X] ... [Y]``) matches ``prompt`` (cut at the mask
        or not) with ``subject`` as X; the only relation when there is one; else None."""
        if len(self.relations) == 1:
            return next(iter(self.relations))
        before = prompt.split(MASK_PLACEHOLDER)[0]
        norm = lambda s: re.sub(r"\s+", " ", s).strip().rstrip(".。:：").strip()
        for rel, entry in self.relations.items():
            template = entry.get("template") or ""
            if "[Y]" not in template:
                continue
            head = template.split("[Y]")[0]
            if subject and "[X]" in head:
                if norm(head.replace("[X]", subject)) == norm(before):
                    return rel
            elif "[X]" in head:
                pattern = "^" + re.escape(norm(head)).replace(re.escape("[X]"), ".+") + "$"
                if re.match(pattern, norm(before)):
                    return rel
        return None

    def score(self, model, tokenizer, prompt: str, candidate: str, relation: str) -> float:
        """Mean attribution of the relation's neurons, scored as the checker was fitted
        (``settings["causal_mode"]``: cut when absent, as checkers saved before it existed)."""
        entry = self.relations[relation]
        mode = effective_causal_mode(model, self.settings.get("causal_mode", "cut"))
        return dkn_score(model, tokenizer, *candidate_query(prompt, candidate, mode), [tuple(n) for n in entry["neurons"]],
                         steps=self.settings.get("steps", DEFAULT_STEPS), method=self.settings.get("method", "amig"),
                         quadrature=self.settings.get("quadrature", DEFAULT_QUADRATURE),
                         objective=self.settings.get("objective", "prob"))["mean"]

    def judge(self, model, tokenizer, prompt: str, candidate: str, relation: str | None = None,
              subject: str | None = None) -> dict:
        """``{"relation", "score", "threshold", "true": bool}``; ``true`` is None when no relation fits."""
        relation = relation if relation in self.relations else self.relation_of(prompt, subject)
        if relation is None:
            return {"relation": None, "score": None, "threshold": None, "true": None}
        entry = self.relations[relation]
        s = self.score(model, tokenizer, prompt, candidate, relation)
        return {"relation": relation, "score": s, "threshold": entry["threshold"], "true": bool(s > entry["threshold"])}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FactChecker":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def save(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FactChecker":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
