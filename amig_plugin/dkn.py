"""Degenerate knowledge neurons (DKN, Chen et al. 2024, §"Degenerate Knowledge Neurons").

Definition (the paper's, with its defaults ``low = 0.2``, ``high = 0.25``). Let P0 be
P(gold | prompt) of the unmodified model and P_S the same probability with the neurons of
the set S suppressed (set to 0 at the target position). Among a fact's top-``k`` knowledge
neurons (``k = 20``; the top neurons by mean AMIG attribution), a pair (a, b) is
*degenerate* when

    P_{a} >= (1 - low) · P0   and   P_{b} >= (1 - low) · P0   and   P_{a,b} < (1 - high) · P0

i.e. each neuron alone can be removed without losing the fact, both together cannot: they
back each other up. With several prompts, P is the mean over the fact's prompts.

All ``1 + k + k(k−1)/2`` suppressed forwards (clean, every single, every pair: 211 for
k = 20) run in batched forwards through the engine's runner
(:func:`amig_plugin.intervene.scores_under_interventions`; causal models reuse the clean
key/value cache of the prompt, so each row recomputes only the target column).
:func:`detect_degenerate_loop` is the one-by-one reference (one whole forward per
suppression, as the paper's code does); tests check both give the same pairs.

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

Causal LMs and the text after ``<mask>`` (``causal_mode``, as in ``amig likn``): ``"cut"``
(default) scores P(object | prefix); ``"sentence"`` scores P(object + rest of the sentence |
prefix) for each prompt (:func:`amig_plugin.localization.fact_query`), in the localization (one per
prompt, combined as LIKN does, so the two commands share cached localizations), the clean
and suppressed scores and the greedy growth. Use it for languages whose mask stands
mid-sentence (Japanese, Korean: ``"Xは<mask>に生まれました。"`` cuts to ``"Xは"``). Masked LMs
read the whole prompt anyway: the mode has no effect on them.

A diagnostic the paper does not report: with thresholds this close (0.8 vs 0.75) two
neurons whose effects are merely independent also qualify (each costs 15 %, both together
28 %). ``excess_drop`` = (P_a/P0)(P_b/P0) − P_ab/P0 measures how much the joint drop exceeds
what independent effects predict; redundancy in the strict sense (each neuron a backup of
the other) shows as a clearly positive excess.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .attribution import frozen_eval, target_scores
from .data import CAUSAL_MODES, Fact, FactFormatError, prompt_drop_summary
from . import defaults
from .intervene import scale_neurons, scores_under_interventions
from .localization import LocalizationSettings, fact_query, localize_fact, model_fingerprint
from .models import QueryError, get_family
from .neurons import model_id
from .store import content_key

Neuron = tuple[int, int]

DEFAULT_K = 20
DEFAULT_LOW = 0.2
DEFAULT_HIGH = 0.25
DEFAULT_MAX_SET_SIZE = 4

def check_thresholds(low: float, high: float) -> tuple[float, float]:
    """Validate the DKN thresholds: ``0 <= low <= high < 1``.

    ``low``: the largest relative drop of P(gold) one neuron alone may cause (0.2: P stays
    >= 0.8 P0); ``high``: the smallest relative drop the pair must cause (0.25: P < 0.75 P0).
    ``high < low`` would call a pair degenerate although suppressing both hurts less than
    the single-neuron tolerance: refused.
    """
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
    low, high = float(low), float(high)
    if not 0.0 <= low < 1.0:
        raise ValueError(f"low={low} out of range: it is the tolerated relative drop of P(gold) for one "
                         "suppressed neuron, in [0, 1) (paper: 0.2, i.e. P >= 0.8·P0)")
    if not 0.0 < high < 1.0:
        raise ValueError(f"high={high} out of range: it is the relative drop of P(gold) a degenerate pair must "
                         "cause, in (0, 1) (paper: 0.25, i.e. P < 0.75·P0)")
    if high < low:
        raise ValueError(f"high={high} < low={low}: a pair would count as degenerate while hurting less than one "
                         "neuron is allowed to; use low <= high (paper: low=0.2, high=0.25)")
    return low, high


def pair_indices(k: int) -> list[tuple[int, int]]:
    """All (i, j) with 0 <= i < j < k, row-major: the order of ``DKNResult.p_pair``."""
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def classify_pairs(p0: float, p_single: Sequence[float], p_pair: Sequence[float], low: float, high: float) -> list[tuple[int, int]]:
    """Degenerate pairs (indices) from the suppression scores. P0 = 0 gives none."""
    k = len(p_single)
    if len(p_pair) != k * (k - 1) // 2:
        raise ValueError(f"{len(p_pair)} pair scores for k={k}; expected {k * (k - 1) // 2}")
    keep = [p >= (1.0 - low) * p0 for p in p_single]
    drop = (1.0 - high) * p0
    return [(i, j) for (i, j), p in zip(pair_indices(k), p_pair) if keep[i] and keep[j] and p < drop]


@dataclass
class DKNResult:
    """Degenerate-neuron detection for one fact in one language.

    ``neurons``: the examined top-k neurons, best first; ``p_single[i]`` = P with neuron i
    suppressed; ``p_pair`` = P with each pair suppressed, in :func:`pair_indices` order;
    ``pairs``: degenerate pairs as index pairs into ``neurons``; ``sets``: degenerate sets of
    3+ neurons from :func:`grow_degenerate_sets` (``{"members": [indices], "p": P_S}``).
    P is the mean over ``prompts`` of P(target | prompt); ``targets`` (sentence mode: each
    prompt has its own continuation, object + rest of the sentence) replaces ``target`` as
    the scored text per prompt when set (``target`` is then the object, for display).
    """

    neurons: list[Neuron]
    p0: float
    p_single: list[float]
    p_pair: list[float]
    pairs: list[tuple[int, int]]
    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    target: str = ""
    prompts: list[str] = field(default_factory=list)
    lang: str | None = None
    fact_id: str | None = None
    relation: str | None = None
    k_requested: int | None = None
    sets: list[dict] | None = None
    forwards: int = 0
    seconds: float = 0.0
    objective: str = "prob"
    targets: list[str] | None = None
    causal_mode: str = "cut"

    def __post_init__(self):
        self.neurons = [(int(l), int(i)) for l, i in self.neurons]
        self.pairs = [(int(i), int(j)) for i, j in self.pairs]

    @property
    def k(self) -> int:
        return len(self.neurons)

    @property
    def scored_targets(self) -> str | list[str]:
        """What is scored: ``targets`` (one per prompt) when set, else ``target``."""
        return list(self.targets) if self.targets else self.target

    @property
    def degenerate_pairs(self) -> list[tuple[Neuron, Neuron]]:
        return [(self.neurons[i], self.neurons[j]) for i, j in self.pairs]

    @property
    def degenerate_neurons(self) -> list[Neuron]:
        """Neurons in at least one degenerate pair (sorted)."""
        return sorted({self.neurons[x] for pair in self.pairs for x in pair})

    @property
    def degenerate_sets(self) -> list[list[Neuron]]:
        return [[self.neurons[i] for i in s["members"]] for s in (self.sets or [])]

    def pair_score(self, i: int, j: int) -> float:
        i, j = min(i, j), max(i, j)
        k = self.k
        return self.p_pair[i * k - i * (i + 1) // 2 + (j - i - 1)]

    def excess_drop(self, i: int, j: int) -> float:
        """(P_i/P0)(P_j/P0) − P_ij/P0: joint drop beyond independent effects (> 0: redundancy)."""
        if self.p0 <= 0:
            return float("nan")
        return (self.p_single[i] / self.p0) * (self.p_single[j] / self.p0) - self.pair_score(i, j) / self.p0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neurons"] = [list(n) for n in self.neurons]
        d["pairs"] = [list(p) for p in self.pairs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DKNResult":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------------------
# detection


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
    low, high = check_thresholds(low, high)
    neurons = _check_neurons(model, neurons)
    prompts = _prompts(prompts)
    targets = None if isinstance(target, str) else _targets(prompts, target)
    target = target if targets is None else targets[0]
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
    low, high = check_thresholds(low, high)
    neurons = _check_neurons(model, neurons)
    prompts = _prompts(prompts)
    targets = None if isinstance(target, str) else _targets(prompts, target)
    target = target if targets is None else targets[0]
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
        if needed:
            _, scores = suppressed_scores(model, tokenizer, result.prompts, result.scored_targets,
                                          [[result.neurons[i] for i in sorted(t)] for t in needed],
                                          objective=result.objective, batch_size=batch_size)
            extra_forwards += (1 + len(needed)) * len(result.prompts)
            known.update(zip(needed, scores.tolist()))
        # candidate degenerate sets: verify every leave-one-out subset
        dropping = sorted({t for ts in proposals.values() for t in ts if len(t) >= 3 and known[t] < drop_p
                           and t not in found}, key=sorted)
        subsets = sorted({t - {m} for t in dropping for m in t if (t - {m}) not in known}, key=sorted)
        if subsets:
            _, scores = suppressed_scores(model, tokenizer, result.prompts, result.scored_targets,
                                          [[result.neurons[i] for i in sorted(t)] for t in subsets],
                                          objective=result.objective, batch_size=batch_size)
            extra_forwards += (1 + len(subsets)) * len(result.prompts)
            known.update(zip(subsets, scores.tolist()))
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


# ----------------------------------------------------------------------------------------
# facts: localization (shared cache) + detection, resumable records


def top_neurons_for(kn, k: int) -> tuple[list[Neuron], int]:
    """(the top-``k`` neurons of a localization, k used). Documented fallback: when fewer
    than ``k`` neurons were recorded (a model with few neurons, or ``k`` > ``top_k`` of the
    localization), all recorded neurons are used and a warning is issued."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (pairs among the top-k neurons), got {k!r}; the paper uses 20")
    available = len(kn.top)
    if available < 2:
        raise ValueError(f"the localization recorded {available} top neurons; DKN detection needs at least 2")
    if k > available:
        warnings.warn(f"k={k} but only {available} top neurons are recorded for {kn.fact_id or kn.target!r}: "
                      f"using k={available}", stacklevel=3)
        k = available
    return kn.top_neurons(k), k


def effective_causal_mode(model, causal_mode: str = "cut") -> str:
    """``causal_mode`` for a causal LM; ``"cut"`` for a masked LM (it reads the whole prompt:
    the mode changes nothing, so records and keys are those of the default)."""
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    return causal_mode if get_family(model).kind == "causal" else "cut"


def fact_queries(model, fact: Fact, lang: str, causal_mode: str = "cut") -> tuple[list[str], str | list[str]]:
    """(prompts, target) a detection scores: the cloze prompts and the object (cut mode, masked
    LMs), or per prompt (prefix, object + rest of the sentence) (sentence mode, causal LMs;
    :func:`amig_plugin.localization.fact_query`)."""
    if effective_causal_mode(model, causal_mode) == "cut":
        return list(fact.prompts[lang]), fact.target(lang)
    queries = [fact_query(fact, lang, prompt_index=i, causal_mode="sentence") for i in range(len(fact.prompts[lang]))]
    return [p for p, _ in queries], [t for _, t in queries]


def detect_for_fact(model, tokenizer, fact: Fact, lang: str, *, k: int = DEFAULT_K, low: float = DEFAULT_LOW,
                    high: float = DEFAULT_HIGH, cache=None, method: str = "amig", settings: dict | None = None,
                    grow: bool = False, max_set_size: int = DEFAULT_MAX_SET_SIZE, batch_size: int = 256,
                    causal_mode: str = "cut") -> DKNResult:
    """Localize ``fact`` (cached) and detect degenerate pairs among its top-``k`` neurons;
    ``causal_mode``: see the module docstring (no effect on masked LMs)."""
    check_thresholds(low, high)
    mode = effective_causal_mode(model, causal_mode)
    kn = localize_fact(model, tokenizer, fact, lang, method=method, settings=settings, causal_mode=mode,
                       cache=cache if cache is not None else True)
    neurons, _ = top_neurons_for(kn, k)
    prompts, target = fact_queries(model, fact, lang, mode)
    result = detect_degenerate(model, tokenizer, prompts, target, neurons, low=low,
                               high=high, grow=grow, max_set_size=max_set_size, batch_size=batch_size, lang=lang,
                               fact_id=fact.id, relation=fact.relation)
    result.k_requested = k
    result.target = fact.target(lang)
    result.causal_mode = mode
    return result


def model_key(model) -> str:
    """Model id + weight fingerprint (as the localization cache keys models)."""
    family = get_family(model)
    return f"{model_id(family.model)}#{model_fingerprint(family.model)}"


def detection_keys(model_key_: str, fact: Fact, lang: str, *, k: int, low: float, high: float, method: str,
                   settings: dict, grow: bool, max_set_size: int, causal_mode: str = "cut") -> list[str]:
    """[key] of a detection: the model (id and weight fingerprint), the attribution version,
    the fact's prompts and target, the causal mode (pass the effective one,
    :func:`effective_causal_mode`) and every setting that changes the result (execution-only
    settings such as ``ig_batch_size`` are left out). Cut-mode keys are those of earlier
    versions (existing stores stay valid); sentence mode adds the mode."""
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    result = LocalizationSettings.of(settings).result_settings()
    return [content_key(["dkn-v2", defaults.ATTRIBUTION_VERSION, model_key_, fact.id, lang, list(fact.prompts[lang]),
                  fact.target(lang), k, low, high, method, sorted(result.items()), grow,
                  max_set_size if grow else None] + ([["causal_mode", causal_mode]] if causal_mode != "cut" else []))]


def detection_key(model_key_: str, fact: Fact, lang: str, **kwargs) -> str:
    return detection_keys(model_key_, fact, lang, **kwargs)[0]


def check_detection_record(record, num_layers: int, ffn_width: int) -> str | None:
    """Why a stored detection record is unusable (None: it is fine): a mapping with either an
    ``error`` string or a ``result`` whose neurons lie inside the model's layers x FFN width,
    with one ``p_single`` per neuron, one ``p_pair`` per pair and pairs indexing the neurons."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not a mapping"
    if "result" not in record:
        return None if isinstance(record.get("error"), str) else "neither a result nor an error"
    r = record["result"]
    if not isinstance(r, dict):
        return "'result' is not a mapping"
    neurons = r.get("neurons")
    ok_int = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
    ok_num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if not isinstance(neurons, list) or not all(isinstance(n, list) and len(n) == 2 and all(map(ok_int, n))
                                                for n in neurons):
        return "'neurons' is not a list of [layer, index]"
    bad = [n for n in neurons if not (0 <= n[0] < num_layers and 0 <= n[1] < ffn_width)]
    if bad:
        return f"neuron {bad[0]} lies outside the model's {num_layers} layers x {ffn_width} FFN units"
    k = len(neurons)
    if not ok_num(r.get("p0")):
        return "'p0' is not a number"
    for name, size in (("p_single", k), ("p_pair", k * (k - 1) // 2)):
        values = r.get(name)
        if not isinstance(values, list) or len(values) != size or not all(map(ok_num, values)):
            return f"'{name}' must be {size} numbers"
    pairs = r.get("pairs")
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and all(ok_int(i) and 0 <= i < k for i in p)
                                              for p in pairs):
        return f"'pairs' must be index pairs into the {k} neurons"
    return None


def lookup_detection(store, model_key_: str, fact: Fact, lang: str, *, model=None, **kwargs) -> tuple[str, dict | None]:
    """(key to store a new detection under, the stored record or None). With ``model``, a
    stored record that :func:`check_detection_record` refuses is reported (a warning naming
    the store file) and treated as absent: store its recomputation with :func:`put_detection`."""
    key = detection_keys(model_key_, fact, lang, **kwargs)[0]
    record = store.get(key)
    if record is not None and model is not None:
        family = get_family(model)
        problem = check_detection_record(record, family.num_layers, family.ffn_width)
        if problem is not None:
            from .localization import CacheWarning

            warnings.warn(f"{store.path}: stored DKN detection {key[:12]} of fact {fact.id!r} ({lang}) is unusable "
                          f"({problem}); recomputing it", CacheWarning, stacklevel=2)
            return key, None
    return key, record


def put_detection(store, key: str, record: dict) -> None:
    """Store ``record`` under ``key``, replacing an unusable record stored there."""
    if key in store:
        store.replace(key, record)
    else:
        store.add(key, record)


def default_store_dir(model) -> Path:
    """``<cache>/dkn/<model>``: the detection and fact-check stores that ``amig dkn``,
    ``amig factcheck`` and ``amig run``'s dkn study share."""
    from .localization import cache_root, model_folder_name

    return Path(cache_root()) / "dkn" / model_folder_name(model)


#: errors that mark a fact as unusable in a language (recorded, never a crash)
FACT_ERRORS = (FactFormatError, QueryError, ValueError)


def detect_facts(model, tokenizer, facts: Sequence[Fact], lang: str, *, store=None, cache=None, k: int = DEFAULT_K,
                 low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, method: str = "amig", settings: dict | None = None,
                 grow: bool = False, max_set_size: int = DEFAULT_MAX_SET_SIZE, batch_size: int = 256,
                 progress: bool = True, causal_mode: str = "cut") -> tuple[dict[str, DKNResult], dict[str, str]]:
    """Detection for every fact, resumable: ``({fact_id: result}, {fact_id: error})``.

    ``store``: a :class:`~amig_plugin.store.RecordStore`; results already there are reused,
    new ones appended as they are computed (kill and rerun: nothing is lost or repeated).
    A fact that cannot be used in ``lang`` (e.g. its prompt leaves a causal model nothing
    to read) is recorded with its error and skipped. ``causal_mode``: see the module docstring;
    it is part of the record key (a resumed run in one mode never reuses the other's).
    """
    check_thresholds(low, high)
    mode = effective_causal_mode(model, causal_mode)
    settings = dict(settings or {})
    with prompt_drop_summary(lang):  # one warning for the language, not one per prompt
        return _detect_facts(model, tokenizer, facts, lang, store=store, cache=cache, k=k, low=low, high=high,
                             method=method, settings=settings, grow=grow, max_set_size=max_set_size,
                             batch_size=batch_size, progress=progress, mode=mode)


def _detect_facts(model, tokenizer, facts, lang, *, store, cache, k, low, high, method, settings, grow, max_set_size,
                  batch_size, progress, mode):
    """The loop of :func:`detect_facts` (arguments checked there)."""
    mkey = model_key(model) if store is not None else ""
    results: dict[str, DKNResult] = {}
    errors: dict[str, str] = {}
    bar = tqdm(facts, desc=f"DKN [{lang}]", disable=not progress)
    for fact in bar:
        if lang not in fact.prompts:
            errors[fact.id] = f"fact has no {lang!r} prompts"
            continue
        key, record = None, None
        if store is not None:
            key, record = lookup_detection(store, mkey, fact, lang, model=model, k=k, low=low, high=high,
                                           method=method, settings=settings, grow=grow, max_set_size=max_set_size,
                                           causal_mode=mode)
        if record is None:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    r = detect_for_fact(model, tokenizer, fact, lang, k=k, low=low, high=high, cache=cache, method=method,
                                        settings=settings, grow=grow, max_set_size=max_set_size, batch_size=batch_size,
                                        causal_mode=mode)
                record = {"fact_id": fact.id, "lang": lang, "relation": fact.relation, "causal_mode": mode,
                          "result": r.to_dict(), "warnings": [str(w.message) for w in caught]}
            except FACT_ERRORS as exc:
                record = {"fact_id": fact.id, "lang": lang, "relation": fact.relation, "causal_mode": mode,
                          "error": f"{type(exc).__name__}: {exc}"}
            if store is not None:
                put_detection(store, key, record)
        if "error" in record:
            errors[fact.id] = record["error"]
        else:
            results[fact.id] = DKNResult.from_dict(record["result"])
            results[fact.id].relation = fact.relation
        bar.set_postfix(pairs=sum(len(r.pairs) for r in results.values()), skipped=len(errors))
    return results, errors


# ----------------------------------------------------------------------------------------
# summaries


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
