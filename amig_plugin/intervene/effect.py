"""The localization effect (the paper's table shape), measured one way everywhere.

For a fact and a neuron set, suppress (×0) / enhance (×2) the set at the target position
and measure the relative change of P(gold), (P' − P) / P (:func:`relative_change`), on the
fact's own prompts ("related") and on the first prompt of other facts ("unrelated", a
seeded sample per fact: :func:`unrelated_sample`); random neuron sets of equal size are
the control (:func:`random_control_set`). :func:`fact_effect` measures one fact;
:func:`localization_effect` compares methods over facts (``amig demo``); the run studies
and the LIKN protocols use the same pieces.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

from tqdm.auto import tqdm

from ..models import ModelFamily, QueryError, get_family
from ..neurons import Neuron
from ..stats import mean_ci, median, paired_difference, trimmed_mean
from .activations import MODE_FACTORS, scores_under_interventions

T = TypeVar("T")


@dataclass
class EffectCase:
    """One fact for :func:`localization_effect`: its prompts, gold target, neuron sets."""

    fact_id: str
    prompts: list[str]
    target: str
    neuron_sets: dict[str, list[Neuron]]


@dataclass
class EffectReport:
    rows: list[dict]
    per_fact: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        head = ("| method | mode | facts | mean #neurons | related Δp (95% t-CI) | unrelated Δp (95% t-CI) | "
                "related − unrelated (bootstrap 95%) | median related Δp |\n")
        head += "|---|---|---|---|---|---|---|---|\n"
        lines = []
        for r in self.rows:
            lines.append(
                f"| {r['method']} | {r['mode']} | {r['facts']} | {r['mean_size']:.1f} | "
                f"{100 * r['related_mean']:+.1f}% ± {100 * r['related_ci']:.1f} | "
                f"{100 * r['unrelated_mean']:+.1f}% ± {100 * r['unrelated_ci']:.1f} | "
                f"{100 * r['specific_mean']:+.1f}% [{100 * r['specific_low']:+.1f}, {100 * r['specific_high']:+.1f}] | "
                f"{100 * r['related_median']:+.1f}% |"
            )
        return head + "\n".join(lines)


def relative_change(after: float, before: float, *, log: bool = False) -> float:
    """(P' − P) / P. From probabilities: nan where P <= 0 (undefined). From log-probabilities
    (``log=True``): expm1(after − before), inf where that overflows."""
    if log:
        d = after - before
        return math.expm1(d) if d < 700 else float("inf")
    return (after - before) / before if before > 0 else float("nan")


def unrelated_sample(fact_id: str, pool: Sequence[T], n: int, seed: int,
                     id_of: Callable[[T], str] = lambda x: x) -> list[T]:
    """``n`` items of ``pool`` other than ``fact_id`` (all when fewer), drawn with a generator
    seeded by (seed, fact_id): the same choice for a fact whatever else runs or how the
    work is sharded."""
    others = [x for x in pool if id_of(x) != fact_id]
    return random.Random(f"{seed}:unrelated:{fact_id}").sample(others, min(n, len(others)))


def uniform_neurons(num_layers: int, ffn_width: int, size: int, rng: random.Random,
                    layers: Sequence[int] | None = None) -> list[Neuron]:
    """``size`` distinct neurons drawn uniformly over (layers × FFN width), sorted."""
    layers = list(range(num_layers)) if layers is None else list(layers)
    picks = rng.sample(range(len(layers) * ffn_width), size)
    return sorted((layers[p // ffn_width], p % ffn_width) for p in picks)


def random_neuron_set(family: ModelFamily, size: int, rng: random.Random, layers: Sequence[int] | None = None) -> list[Neuron]:
    """``size`` distinct neurons drawn uniformly over (layers × FFN width) of ``family``."""
    return uniform_neurons(family.num_layers, family.ffn_width, size, rng, layers)


def random_control_set(family: ModelFamily, size: int, seed: int, *labels: Any,
                       layers: Sequence[int] | None = None) -> list[Neuron]:
    """A uniform random set of ``size`` neurons, seeded by (seed, labels) (e.g. fact, language, method)."""
    rng = random.Random(":".join([str(seed), "random", *map(str, labels)]))
    return random_neuron_set(family, size, rng, layers)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def fact_effect(model, tokenizer, related: Sequence[tuple[str, str]], unrelated: Sequence[tuple[str, str, str]],
                sets: Mapping[str, Sequence[Neuron]], modes: Sequence[str] = ("suppress", "enhance"),
                objective: str = "prob") -> dict:
    """One fact's effect: ``related`` = its (prompt, gold) pairs, ``unrelated`` = (fact id,
    prompt, gold) of other facts, ``sets`` = name -> neurons.

    Returns ``{"related": {name: {mode: mean change}}, "unrelated": {...} (None without
    unrelated prompts), "p_gold": [P(gold) per related prompt], "unrelated_facts": [ids
    scored], "skipped_unrelated": {id: reason}}``; an unrelated prompt the model cannot read
    (e.g. longer than its positions) is left out and named, not fatal."""
    for mode in modes:
        if mode not in MODE_FACTORS:
            raise ValueError(f"unknown mode {mode!r}; use {sorted(MODE_FACTORS)}")
    jobs = [(name, mode) for name in sets for mode in modes]
    interventions = [(list(sets[name]), MODE_FACTORS[mode]) for name, mode in jobs]

    def changes(prompt: str, target: str) -> tuple[float, list[float]]:
        clean, after = scores_under_interventions(model, tokenizer, prompt, target, interventions, objective=objective)
        return clean, [relative_change(a, clean) for a in after.tolist()]

    rel = [changes(p, t) for p, t in related]
    unrel, scored, skipped = [], [], {}
    for fact_id, prompt, target in unrelated:
        try:
            unrel.append(changes(prompt, target))
            scored.append(fact_id)
        except QueryError as exc:
            skipped[fact_id] = f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {"p_gold": [c for c, _ in rel], "unrelated_facts": scored, "related": {}, "unrelated": {}}
    for j, (name, mode) in enumerate(jobs):
        out["related"].setdefault(name, {})[mode] = _mean([v[j] for _, v in rel])
        out["unrelated"].setdefault(name, {})[mode] = _mean([v[j] for _, v in unrel]) if unrel else None
    if skipped:
        out["skipped_unrelated"] = skipped
    return out


def effect_row(related: Sequence[float], unrelated: Sequence[float], sizes: Sequence[int], seed: int = 0) -> dict:
    """Summary of one (method, mode) over facts: means with 95 % t intervals, the median, the
    paired related − unrelated difference (bootstrap 95 %) and the set sizes. ``related`` and
    ``unrelated`` are per fact (nan/None where a fact has no value)."""
    rel = [x for x in related if x is not None and math.isfinite(x)]
    unr = [x for x in unrelated if x is not None and math.isfinite(x)]
    spec = paired_difference(list(related), list(unrelated), seed=seed)
    rmean, rci = mean_ci(rel)
    umean, uci = mean_ci(unr)
    return dict(mean_size=_mean(list(sizes)), empty_sets=sum(s == 0 for s in sizes), related_mean=rmean,
                related_ci=rci, unrelated_mean=umean, unrelated_ci=uci, related_median=median(rel),
                specific_mean=spec["mean"],
                specific_low=spec["low"], specific_high=spec["high"])


def localization_effect(model, tokenizer, cases: Sequence[EffectCase], *, modes: Sequence[str] = ("suppress", "enhance"),
                        n_unrelated: int = 5, random_like: str | None = "amig", seed: int = 0,
                        objective: str = "prob", progress: bool = True) -> EffectReport:
    """Relative change of P(gold) on related and unrelated prompts under each neuron set.

    For each case f and method M: related = mean over f's prompts of (P' − P)/P with M's
    neurons of f scaled at the target position; unrelated = the same on the first prompt
    of ``n_unrelated`` other facts (:func:`unrelated_sample`). ``random_like`` adds a
    ``random`` method: per fact, a uniform random neuron set as large as that method's set
    (:func:`random_control_set`).
    """
    for mode in modes:
        if mode not in MODE_FACTORS:
            raise ValueError(f"unknown mode {mode!r}; use {sorted(MODE_FACTORS)}")
    if len(cases) < 2 and n_unrelated > 0:
        raise ValueError("localization_effect needs at least 2 facts to measure unrelated prompts")
    family = get_family(model)
    # work on copies: the caller's cases are never modified
    cases = [EffectCase(c.fact_id, list(c.prompts), c.target, dict(c.neuron_sets)) for c in cases]
    methods = list(dict.fromkeys(m for c in cases for m in c.neuron_sets))
    if random_like is not None:
        if "random" in methods:
            raise ValueError("the cases already have a 'random' neuron set; pass random_like=None to use it")
        if random_like not in methods:
            raise ValueError(f"random_like={random_like!r} is not among the methods {methods}")
        for c in cases:
            c.neuron_sets["random"] = random_control_set(family, len(c.neuron_sets[random_like]), seed, c.fact_id)
        methods.append("random")
    effects = []
    for c in tqdm(cases, desc="interventions", disable=not progress):
        others = unrelated_sample(c.fact_id, cases, n_unrelated, seed, id_of=lambda o: o.fact_id)
        sets = {m: c.neuron_sets.get(m, []) for m in methods}
        effects.append(fact_effect(family, tokenizer, [(p, c.target) for p in c.prompts],
                                   [(o.fact_id, o.prompts[0], o.target) for o in others], sets, modes, objective))
    rows, per_fact = [], []
    for m in methods:
        for mode in modes:
            related = [e["related"][m][mode] for e in effects]
            unrelated = [e["unrelated"][m][mode] for e in effects]
            sizes = [len(c.neuron_sets.get(m, [])) for c in cases]
            row = dict(method=m, mode=mode, facts=len(cases), **effect_row(related, unrelated, sizes, seed))
            row["related_trimmed"] = trimmed_mean([x for x in related if math.isfinite(x)])
            rows.append(row)
            per_fact += [dict(fact_id=c.fact_id, method=m, mode=mode, related=related[i], size=sizes[i])
                         for i, c in enumerate(cases)]
    return EffectReport(rows=rows, per_fact=per_fact)
