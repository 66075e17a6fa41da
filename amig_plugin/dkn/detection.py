"""Detecting degenerate pairs among given neurons, and growing larger degenerate sets.

All ``1 + k + k(k−1)/2`` suppressed forwards (clean, every single, every pair: 211 for
k = 20) run in batched forwards through the engine's runner
(:func:`amig_plugin.intervene.scores_under_interventions`; causal models reuse the clean
key/value cache of the prompt, so each row recomputes only the target column).
:func:`detect_degenerate_loop` is the one-by-one reference (one whole forward per
suppression, as the paper's code does); tests check both give the same pairs. The pair
rule itself is :func:`amig_plugin.dkn.result.classify_pairs`.

Extension: degenerate sets larger than pairs (:func:`grow_degenerate_sets`). A set S with
|S| >= 2 is degenerate when suppressing all of S drops P below ``(1 − high)·P0`` while
suppressing any proper subset keeps P >= ``(1 − low)·P0``. For |S| = 2 that is exactly the
paper's pair. Supersets of a degenerate pair are never degenerate sets (the pair itself is a
proper subset that drops P), so larger sets are made of neurons no two of which are a
degenerate pair: each member is dispensable and any |S| − 1 of them together are too. They
are found by greedy growth from every dispensable neuron (add the neuron that lowers P the
most while the set stays dispensable) and verified on every singleton, every pair and every
leave-one-out subset, which is every proper subset for |S| <= 4 (default ``max_set_size``);
for larger sets, subsets of size 3 .. |S| − 2 are assumed (not checked) to behave
monotonically.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from ..attribution import frozen_eval, target_scores
from ..intervene import scale_neurons, scores_under_interventions
from ..models import get_family
from ..neurons import Neuron
from .result import DEFAULT_HIGH, DEFAULT_LOW, DEFAULT_MAX_SET_SIZE, DKNResult, check_thresholds, classify_pairs, pair_indices

def _check_neurons(model, neurons: Sequence[Neuron]) -> list[Neuron]:
    neurons = [(int(l), int(i)) for l, i in neurons]
    if len(neurons) < 2:
        raise ValueError(f"degenerate pairs need at least 2 neurons, got {len(neurons)}")
    if len(set(neurons)) != len(neurons):
        raise ValueError("the neuron list has duplicates; give distinct (layer, index) neurons")
    family = get_family(model)
    width = family.ffn_width
    for layer, index in neurons:
        family.check_layer(layer)
        if not 0 <= index < width:
            raise ValueError(f"neuron ({layer}, {index}) out of range: the FFN hidden vector has {width} units")
    return neurons


def _prompts(prompts: str | Sequence[str]) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt with '<mask>' where the target goes")
    return prompts


def _suppression_rows(neurons: Sequence[Neuron]) -> list[list[Neuron]]:
    k = len(neurons)
    return [[n] for n in neurons] + [[neurons[i], neurons[j]] for i, j in pair_indices(k)]


def _targets(prompts: list[str], target: str | Sequence[str]) -> list[str]:
    """One target per prompt: ``target`` repeated, or the given list (as long as ``prompts``)."""
    if isinstance(target, str):
        return [target] * len(prompts)
    targets = list(target)
    if len(targets) != len(prompts):
        raise ValueError(f"{len(targets)} targets for {len(prompts)} prompts; give one target, or one per prompt")
    return targets


def _detection_inputs(model, prompts: str | Sequence[str], target: str | Sequence[str], neurons: Sequence[Neuron],
                      low: float, high: float) -> tuple[float, float, list[Neuron], list[str], str, list[str] | None]:
    """Checked ``(low, high, neurons, prompts, target, targets)`` of a detection: ``targets``
    is None for one target, else one per prompt (``target`` is then the first)."""
    low, high = check_thresholds(low, high)
    neurons = _check_neurons(model, neurons)
    prompts = _prompts(prompts)
    targets = None if isinstance(target, str) else _targets(prompts, target)
    return low, high, neurons, prompts, target if targets is None else targets[0], targets


def suppressed_scores(model, tokenizer, prompts: str | Sequence[str], target: str | Sequence[str],
                      neuron_sets: Sequence[Sequence[Neuron]], *, objective: str = "prob",
                      batch_size: int = 256) -> tuple[float, torch.Tensor]:
    """(P0, P [len(neuron_sets)]) with each set suppressed at the target position, batched;
    P = mean over the prompts. ``target``: one for every prompt, or a list with one per
    prompt (sentence mode: object + rest of each prompt's sentence)."""
    prompts = _prompts(prompts)
    targets = _targets(prompts, target)
    clean, after = 0.0, None
    for prompt, target in zip(prompts, targets):
        c, a = scores_under_interventions(model, tokenizer, prompt, target, [(list(s), 0.0) for s in neuron_sets],
                                          objective=objective, batch_size=batch_size)
        clean += c
        after = a if after is None else after + a
    return clean / len(prompts), after / len(prompts)


def detect_degenerate(model, tokenizer, prompts: str | Sequence[str], target: str | Sequence[str],
                      neurons: Sequence[Neuron], *,
                      low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, objective: str = "prob",
                      batch_size: int = 256, grow: bool = False, max_set_size: int = DEFAULT_MAX_SET_SIZE,
                      lang: str | None = None, fact_id: str | None = None, relation: str | None = None) -> DKNResult:
    """Degenerate pairs among ``neurons`` (a fact's top-k, best first), all 1 + k + k(k−1)/2
    suppressed forwards batched. ``grow=True`` adds degenerate sets of 3..``max_set_size``
    neurons (:func:`grow_degenerate_sets`). ``target``: one, or one per prompt (then stored
    as ``targets``)."""
    low, high, neurons, prompts, target, targets = _detection_inputs(model, prompts, target, neurons, low, high)
    t0 = time.perf_counter()
    rows = _suppression_rows(neurons)
    p0, scores = suppressed_scores(model, tokenizer, prompts, targets or target, rows, objective=objective,
                                   batch_size=batch_size)
    k = len(neurons)
    p_single, p_pair = scores[:k].tolist(), scores[k:].tolist()
    result = DKNResult(neurons=neurons, p0=float(p0), p_single=p_single, p_pair=p_pair,
                       pairs=classify_pairs(p0, p_single, p_pair, low, high), low=low, high=high, target=target,
                       prompts=prompts, lang=lang, fact_id=fact_id, relation=relation, k_requested=k,
                       forwards=(1 + len(rows)) * len(prompts), objective=objective, targets=targets)
    if grow:
        grow_degenerate_sets(model, tokenizer, result, max_set_size=max_set_size, batch_size=batch_size)
    result.seconds = time.perf_counter() - t0
    return result


def detect_degenerate_loop(model, tokenizer, prompts: str | Sequence[str], target: str | Sequence[str],
                           neurons: Sequence[Neuron], *,
                           low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, objective: str = "prob",
                           lang: str | None = None, fact_id: str | None = None, relation: str | None = None) -> DKNResult:
    """Reference: the same detection with one whole-model forward per suppression (the
    paper's loop), through :func:`amig_plugin.intervene.scale_neurons` hooks."""
    low, high, neurons, prompts, target, targets = _detection_inputs(model, prompts, target, neurons, low, high)
    family = get_family(model)
    t0 = time.perf_counter()
    rows = [[]] + _suppression_rows(neurons)
    totals = torch.zeros(len(rows), dtype=torch.float64)
    with frozen_eval(family.model), torch.no_grad():
        device = family.device()
        for prompt, target_ in zip(prompts, targets or [target] * len(prompts)):
            query = family.encode(tokenizer, prompt, target_)
            ids = query.input_ids.to(device).unsqueeze(0)
            positions = query.score_positions.to(device)
            for r, row in enumerate(rows):
                with scale_neurons(family, row, 0.0, position=query.target_position):
                    logits = family.model(input_ids=ids).logits[:, positions]
                totals[r] += float(target_scores(logits, query.target_ids, objective)[0])
    scores = (totals / len(prompts)).tolist()
    k = len(neurons)
    p0, p_single, p_pair = scores[0], scores[1:1 + k], scores[1 + k:]
    return DKNResult(neurons=neurons, p0=p0, p_single=p_single, p_pair=p_pair,
                     pairs=classify_pairs(p0, p_single, p_pair, low, high), low=low, high=high, target=target,
                     prompts=prompts, lang=lang, fact_id=fact_id, relation=relation, k_requested=k,
                     forwards=len(rows) * len(prompts), seconds=time.perf_counter() - t0, objective=objective,
                     targets=targets)


def _score_sets(model, tokenizer, result: DKNResult, sets: list[frozenset], known: dict[frozenset, float],
                batch_size: int) -> int:
    """Suppress each set of neuron indices (into ``result.neurons``) together, one batch;
    P_S goes into ``known``. Returns the forwards run (0 for no set)."""
    if not sets:
        return 0
    _, scores = suppressed_scores(model, tokenizer, result.prompts, result.scored_targets,
                                  [[result.neurons[i] for i in sorted(t)] for t in sets],
                                  objective=result.objective, batch_size=batch_size)
    known.update(zip(sets, scores.tolist()))
    return (1 + len(sets)) * len(result.prompts)


def grow_degenerate_sets(model, tokenizer, result: DKNResult, *, max_set_size: int = DEFAULT_MAX_SET_SIZE,
                         batch_size: int = 256) -> list[dict]:
    """Extension: degenerate sets of 3..``max_set_size`` neurons by greedy growth (see the
    module docstring); stored in ``result.sets`` and returned.

    From every dispensable neuron (P_i >= (1−low)P0) a set S grows one neuron at a time.
    Candidates c keep every pair {s, c} dispensable (so no degenerate pair is inside).
    Each step scores S ∪ {c} for all candidates of all seeds in one batch; sets whose
    suppression drops P below (1−high)P0 are verified on their leave-one-out subsets (one
    more batch) and recorded; S then grows by the candidate that lowers P the most while
    S ∪ {c} stays dispensable. Sets are deduplicated.
    """
    if not isinstance(max_set_size, int) or max_set_size < 2:
        raise ValueError(f"max_set_size must be an integer >= 2, got {max_set_size!r}")
    p0, low, high = result.p0, result.low, result.high
    keep_p, drop_p = (1.0 - low) * p0, (1.0 - high) * p0
    k = result.k
    dispensable = [p >= keep_p for p in result.p_single]
    pair_ok = {(i, j): result.pair_score(i, j) >= keep_p for i, j in pair_indices(k)}

    def pair_kept(a, b):
        return pair_ok[(min(a, b), max(a, b))]

    known: dict[frozenset, float] = {frozenset([i]): p for i, p in enumerate(result.p_single)}
    known.update({frozenset(ij): result.pair_score(*ij) for ij in pair_indices(k)})
    growing = [frozenset([i]) for i in range(k) if dispensable[i]]
    found: dict[frozenset, float] = {}
    extra_forwards = 0
    size = 1
    while growing and size < max_set_size:
        size += 1
        proposals: dict[frozenset, list[frozenset]] = {}
        for s in growing:
            for c in range(k):
                if c in s or not dispensable[c] or not all(pair_kept(m, c) for m in s):
                    continue
                proposals.setdefault(s, []).append(s | {c})
        needed = sorted({t for ts in proposals.values() for t in ts if t not in known}, key=sorted)
        extra_forwards += _score_sets(model, tokenizer, result, needed, known, batch_size)
        # candidate degenerate sets: verify every leave-one-out subset
        dropping = sorted({t for ts in proposals.values() for t in ts if len(t) >= 3 and known[t] < drop_p
                           and t not in found}, key=sorted)
        subsets = sorted({t - {m} for t in dropping for m in t if (t - {m}) not in known}, key=sorted)
        extra_forwards += _score_sets(model, tokenizer, result, subsets, known, batch_size)
        for t in dropping:
            if all(known[t - {m}] >= keep_p for m in t):
                found[t] = known[t]
        # greedy step: the candidate that lowers P most while the set stays dispensable
        nxt = set()
        for s, ts in proposals.items():
            kept = [t for t in ts if known[t] >= keep_p]
            if kept:
                nxt.add(min(kept, key=lambda t: (known[t], sorted(t))))
        growing = sorted(nxt, key=sorted)
    result.sets = [{"members": sorted(t), "p": p} for t, p in sorted(found.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))]
    result.forwards += extra_forwards
    return result.sets

