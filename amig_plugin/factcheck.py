"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024, Table 3), done right.

Protocol, per language:

1. **Facts and wrong facts.** Each checked fact gives one true query (its prompt with the
   gold object) and ``n_wrong`` wrong queries: other objects of the same relation
   (BMLAMA's candidate lists, else the relation's objects), never an object that is true
   for the same subject and relation (:func:`wrong_candidates`), chosen with a seed.
2. **Split, per relation**: the relation's facts (in sample order) are cut into a DKN part,
   a dev part and a test part (``fractions``, default 1/3 each; at least one fact each,
   so a relation needs ``min_facts = 3``; relations with fewer are skipped and listed).
3. **Relation-level DKN**: the neurons that recur in the degenerate pairs of the DKN part's
   facts: count (number of facts whose pairs contain the neuron) > ``lam`` × max count
   (λ = 0.7). If the DKN part has no degenerate pair at all, the documented fallback
   ``no_dkn="topk"`` uses the recurring top-k neurons by the same rule (flagged
   ``source = "topk"`` in the report); ``no_dkn="skip"`` leaves the relation out.
4. **Score** of (query, candidate) = mean AMIG attribution of those neurons, with the
   query's prompt and the candidate as target, IG restricted to the layers of those neurons
   (per-layer IG is exact per layer, so this equals the full attribution on those neurons).
5. **Threshold**: per relation, the one that maximises F1 on the dev part's queries
   (:func:`choose_threshold`); the test part is never looked at (the paper's code tuned on
   the test set). "True" iff score > threshold.
6. **Baselines without DKN** on the same test queries: ``wo_DKN_exact_match`` (the paper's:
   the model's greedy continuation of the prompt reproduces the candidate's tokens; it
   almost never does for a small model, nor in Chinese), ``wo_DKN_likelihood_rank`` (per
   fact, the candidate with the highest log P(candidate | prompt) among the true and wrong
   ones is judged true, the others false: the fairer baseline) and
   ``likelihood_threshold`` (log P thresholded on dev exactly like the DKN score: the
   like-for-like control; does DKN add anything beyond the likelihood?).
7. **Causal mode** (causal LMs; ``causal_mode``, as in ``amig likn`` and ``amig dkn``):
   ``"cut"`` (default) scores each candidate as P(candidate | prefix); ``"sentence"`` scores
   (prefix, candidate + rest of the sentence) in the DKN attribution and the log-likelihood
   (:func:`candidate_query`), for languages whose mask stands mid-sentence. The exact-match
   baseline asks whether greedy generation from the prefix reproduces the candidate: the
   same question in both modes. Masked LMs: no effect.
8. **Metrics**: the positive class is "the fact is true"; precision = TP / (TP + FP),
   recall = TP / (TP + FN) (the paper's code swapped them), F1; 0 when undefined
   (no predicted / no actual positives). Per relation, overall (micro: confusion counts
   summed over relations) and macro F1 (mean over relations).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from .attribution import attribute_query
from .data import (MASK_PLACEHOLDER, Fact, causal_cloze, group_by_relation, prompt_drop_summary, split_prompt_at_mask,
                   wrong_objects)
from .defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS
from .dkn import FACT_ERRORS, DKNResult, effective_causal_mode, model_key
from .likelihood import likelihood
from .localization import cloze_query
from .store import content_key
from .models import get_family
from .errors import AmigError
from .stats import _percentile

Neuron = tuple[int, int]

METHODS = ("with_DKN", "wo_DKN_exact_match", "wo_DKN_likelihood_rank", "likelihood_threshold")
METHOD_LABELS = {
    "with_DKN": "with_DKN (mean DKN attribution, dev threshold)",
    "wo_DKN_exact_match": "wo_DKN exact match (paper's baseline)",
    "wo_DKN_likelihood_rank": "wo_DKN likelihood rank (true vs wrong)",
    "likelihood_threshold": "log P(candidate), dev threshold",
}
#: The score each method thresholds or ranks (for its threshold-free ROC-AUC).
SCORE_FIELDS = {"with_DKN": "dkn", "likelihood_threshold": "logprob", "wo_DKN_likelihood_rank": "logprob",
                "wo_DKN_exact_match": "exact_match"}
#: Fewer dev queries than this per relation: a tuned threshold is mostly noise (warned).
MIN_DEV_QUERIES = 20
PARTS = ("dkn", "dev", "test")
DEFAULT_LAMBDA = 0.7
DEFAULT_FRACTIONS = (1 / 3, 1 / 3, 1 / 3)


class TooFewFactsError(AmigError, ValueError):
    """A relation (or the whole set) has too few facts to split into DKN / dev / test."""


# ----------------------------------------------------------------------------------------
# metrics


@dataclass
class Confusion:
    """Confusion counts with "the fact is true" as the positive class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def from_predictions(cls, labels: Sequence[bool], predictions: Sequence[bool]) -> "Confusion":
        if len(labels) != len(predictions):
            raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
        c = cls()
        for y, p in zip(labels, predictions):
            if y and p:
                c.tp += 1
            elif p:
                c.fp += 1
            elif y:
                c.fn += 1
            else:
                c.tn += 1
        return c

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing is predicted true."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when there is no true fact."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """(TPR + TNR) / 2 (0.5 for any constant answer); NaN without both classes."""
        if not (self.tp + self.fn) or not (self.tn + self.fp):
            return float("nan")
        return 0.5 * (self.tp / (self.tp + self.fn) + self.tn / (self.tn + self.fp))

    def to_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


def all_true_f1(p: float) -> float:
    """F1 of answering "true" to every query when a fraction p of them is true: precision
    p, recall 1, F1 = 2p / (1 + p) (one wrong object per fact: p = ½, F1 = ⅔)."""
    return 2 * p / (1 + p) if p > 0 else 0.0


def random_f1(p: float, q: float) -> float:
    """Expected F1 of answering "true" at random with rate q when a fraction p is true:
    precision p, recall q, F1 = 2pq / (p + q)."""
    return 2 * p * q / (p + q) if p + q > 0 else 0.0


def roc_auc(scores: Sequence[float], labels: Sequence[bool], groups: Sequence | None = None) -> float:
    """Threshold-free ROC-AUC by the rank statistic (Mann-Whitney U / (n₊ n₋)), ties
    counted ½. With ``groups`` only (positive, negative) pairs of the same group count
    (scores of different relations are not on one scale): Σ_g U_g / Σ_g n₊_g n₋_g.
    NaN when no pair exists. A perfect scorer gives 1, a constant one ½."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    groups = [None] * len(scores) if groups is None else list(groups)
    by: dict = {}
    for s, y, g in zip(scores, labels, groups):
        if s is not None and not math.isnan(float(s)):
            by.setdefault(g, []).append((float(s), bool(y)))
    u_total, pairs_total = 0.0, 0
    for items in by.values():
        items.sort(key=lambda t: t[0])
        ranks = [0.0] * len(items)
        i = 0
        while i < len(items):  # midranks of tied scores
            j = i
            while j + 1 < len(items) and items[j + 1][0] == items[i][0]:
                j += 1
            for k in range(i, j + 1):
                ranks[k] = (i + j) / 2 + 1
            i = j + 1
        n_pos = sum(y for _, y in items)
        n_neg = len(items) - n_pos
        if n_pos and n_neg:
            u_total += sum(r for r, (_, y) in zip(ranks, items) if y) - n_pos * (n_pos + 1) / 2
            pairs_total += n_pos * n_neg
    return u_total / pairs_total if pairs_total else float("nan")


def choose_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold t maximising F1 of "true iff score > t" on the given (dev) queries.

    Candidates: below the lowest score (everything true) and every midpoint between two
    consecutive distinct scores. Ties: higher accuracy, then the lower threshold. NaN
    scores are ignored. Give it dev data only.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    pairs = [(float(s), bool(y)) for s, y in zip(scores, labels) if not math.isnan(float(s))]
    if not pairs:
        raise ValueError("no dev queries (with a score) to tune the threshold on")
    values = sorted({s for s, _ in pairs})
    candidates = [values[0] - max(1.0, abs(values[0])) * 1e-6 - 1e-12]
    candidates += [(a + b) / 2 for a, b in zip(values, values[1:])]
    ys = [y for _, y in pairs]
    best, best_key = candidates[0], None
    for t in candidates:
        c = Confusion.from_predictions(ys, [s > t for s, _ in pairs])
        key = (c.f1, c.accuracy, -t)
        if best_key is None or key > best_key:
            best, best_key = t, key
    return best


# ----------------------------------------------------------------------------------------
# splits, wrong facts, relation-level DKN


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(x) for x in fractions)
    if len(fr) != 3 or any(math.isnan(x) or x <= 0 for x in fr):
        raise ValueError(f"fractions must be three positive numbers (DKN, dev, test parts), got {fractions!r}")
    total = sum(fr)
    return tuple(x / total for x in fr)  # type: ignore[return-value]


def split_relation(facts: Sequence[Fact], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, list[Fact]]:
    """Cut one relation's facts (in their order) into DKN / dev / test parts, each >= 1 fact.

    Raises :class:`TooFewFactsError` for fewer than 3 facts."""
    fr = check_fractions(fractions)
    n = len(facts)
    if n < 3:
        raise TooFewFactsError(f"{n} fact(s) cannot be split into DKN, dev and test parts (one each at least); "
                               "give the relation 3 or more facts")
    n_dkn = max(1, round(n * fr[0]))
    n_dev = max(1, round(n * fr[1]))
    while n_dkn + n_dev > n - 1:
        if n_dkn >= n_dev:
            n_dkn -= 1
        else:
            n_dev -= 1
    return {"dkn": list(facts[:n_dkn]), "dev": list(facts[n_dkn:n_dkn + n_dev]), "test": list(facts[n_dkn + n_dev:])}


def split_facts(facts: Sequence[Fact], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                min_facts: int = 3) -> tuple[dict[str, dict[str, list[Fact]]], dict[str, str]]:
    """``({relation: {part: facts}}, {skipped relation: reason})``; documented fallback:
    relations with fewer than ``max(3, min_facts)`` facts are skipped (and listed), an error
    only if no relation is left."""
    check_fractions(fractions)
    splits, skipped = {}, {}
    need = max(3, int(min_facts))
    for relation, members in group_by_relation(facts).items():
        if len(members) < need:
            skipped[relation] = f"{len(members)} fact(s) < {need} needed for DKN/dev/test parts"
            continue
        splits[relation] = split_relation(members, fractions)
    if not splits:
        detail = "; ".join(f"{r}: {why}" for r, why in list(skipped.items())[:5])
        raise TooFewFactsError(f"no relation has enough facts to split into DKN/dev/test parts ({detail}); "
                               f"sample more facts per relation (at least {need} each)")
    return splits, skipped


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def wrong_candidates(fact: Fact, lang: str, facts_of_relation: Iterable[Fact] | None = None, n: int | None = 1,
                     seed: int = 0) -> list[str]:
    """Up to ``n`` wrong objects for ``fact`` in ``lang``, reproducible with ``seed``.

    :func:`amig_plugin.data.wrong_objects` (candidate list, else the relation's objects;
    the gold object and every object true for the same subject and relation removed), and
    more conservatively also every candidate that contains, or is contained in, a true
    object (``"北京市"`` vs ``"北京"``, ``"New York City"`` vs ``"New York"``)."""
    facts_of_relation = list(facts_of_relation or ())
    subj = _norm(fact.subject[lang])
    trues = {_norm(fact.target(lang))}
    trues.update(_norm(f.object[lang]) for f in facts_of_relation
                 if f.relation == fact.relation and lang in f.object and _norm(f.subject.get(lang, "")) == subj)
    out = []
    for c in wrong_objects(fact, lang, facts_of_relation, None, seed):
        k = _norm(c)
        if any(k == t or (len(t) >= 2 and t in k) or (len(k) >= 2 and k in t) for t in trues):
            continue
        out.append(c)
    return out if n is None else out[:n]


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


# ----------------------------------------------------------------------------------------
# scoring one (prompt, candidate)


def candidate_query(prompt: str, candidate: str, causal_mode: str = "cut") -> tuple[str, str]:
    """(prompt, target) the engine scores for ``candidate``: unchanged in cut mode (the
    engine cuts the prompt at ``<mask>``); in sentence mode (prefix, candidate + rest of the
    sentence) (:func:`amig_plugin.localization.cloze_query`). Pass the effective mode
    (:func:`amig_plugin.dkn.effective_causal_mode`: cut for masked LMs)."""
    if causal_mode == "cut":
        return prompt, candidate
    return cloze_query(causal_cloze(prompt), candidate, causal_mode=causal_mode, kind="causal")


def _object_part(query: tuple[str, str], prompt: str) -> tuple[str, str]:
    """The sentence-mode query cut back to the candidate alone (the rest of the sentence removed)."""
    rest = split_prompt_at_mask(causal_cloze(prompt))[1].rstrip()
    qp, qt = query
    return (qp, qt[:len(qt) - len(rest)]) if rest else query


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


# ----------------------------------------------------------------------------------------
# evaluation (pure: no model)


@dataclass
class FactCheckReport:
    """Per-relation confusions, thresholds and neurons of one language."""

    lang: str | None
    per_relation: dict[str, dict[str, Confusion]]
    thresholds: dict[str, dict[str, float]]
    neurons: dict[str, list[Neuron]] = field(default_factory=dict)
    neuron_source: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    queries: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    facts_skipped: dict[str, str] = field(default_factory=dict)

    def overall(self, method: str, relations: Iterable[str] | None = None) -> Confusion:
        total = Confusion()
        for rel in (self.per_relation if relations is None else relations):
            total = total + self.per_relation[rel].get(method, Confusion())
        return total

    def macro_f1(self, method: str) -> float:
        values = [m[method].f1 for m in self.per_relation.values() if method in m]
        return statistics.fmean(values) if values else float("nan")

    def methods(self) -> list[str]:
        seen = {m for v in self.per_relation.values() for m in v}
        return [m for m in METHODS if m in seen]

    def dev_warnings(self, min_dev: int = MIN_DEV_QUERIES) -> list[str]:
        """One line when relations have fewer than ``min_dev`` dev queries to tune on."""
        dev = Counter(q["relation"] for q in self.queries if q.get("part") == "dev")
        small = sorted((dev.get(r, 0), r) for r in self.per_relation if dev.get(r, 0) < min_dev)
        if not small:
            return []
        counts = [n for n, _ in small]
        return [f"WARNING: {len(small)} of {len(self.per_relation)} relations have fewer than {min_dev} dev queries "
                f"to tune their threshold on (median {statistics.median(counts):g}): the dev-tuned thresholds are "
                "mostly noise; use more facts per relation (--n) or a larger dev part (--split), and read ROC-AUC "
                "(threshold-free) first"]

    def summary_statistics(self, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
        """Per method, on the test queries: F1, accuracy, balanced accuracy, ROC-AUC (pairs
        within a relation), their percentile-bootstrap 95% intervals (facts resampled with
        their true and wrong queries), and the trivial baselines: all-true F1 = 2p/(1+p)
        and random F1 = 2pq/(p+q) at the dev-tuned positive rate q (p = share of true test
        queries)."""
        key = (n_boot, seed)
        cached = getattr(self, "_stats_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        out = {m: self._method_statistics(m, n_boot, seed) for m in self.methods()}
        self._stats_cache = (key, out)
        return out

    def _dev_rate(self, method: str, test: list[dict]) -> float:
        field_ = SCORE_FIELDS.get(method)
        dev = [q for q in self.queries if q.get("part") == "dev" and method in self.thresholds.get(q["relation"], {})]
        if method in ("with_DKN", "likelihood_threshold") and dev:
            return statistics.fmean(q[field_] > self.thresholds[q["relation"]][method] for q in dev)
        return statistics.fmean(q["predictions"][method] for q in test)  # untuned: its own rate

    def _method_statistics(self, method: str, n_boot: int, seed: int) -> dict:
        test = [q for q in self.queries if q.get("part") == "test" and method in q.get("predictions", {})]
        if not test:
            return {}
        field_ = SCORE_FIELDS.get(method)

        def metrics(qs: list[dict]) -> tuple[float, float, float, float]:
            c = Confusion.from_predictions([bool(q["label"]) for q in qs], [q["predictions"][method] for q in qs])
            auc = roc_auc([float(q[field_]) for q in qs], [bool(q["label"]) for q in qs], [q["relation"] for q in qs])
            return c.f1, c.accuracy, c.balanced_accuracy, auc

        f1, acc, bacc, auc = metrics(test)
        p = statistics.fmean(bool(q["label"]) for q in test)
        q_rate = self._dev_rate(method, test)
        by_fact: dict[str, list[dict]] = {}
        for q in test:
            by_fact.setdefault(q["fact_id"], []).append(q)
        clusters = list(by_fact.values())
        rng = random.Random(seed)
        boots = []
        for _ in range(n_boot if len(clusters) > 1 else 0):
            sample = [q for _ in clusters for q in clusters[rng.randrange(len(clusters))]]
            boots.append(metrics(sample))
        out = dict(queries=len(test), facts=len(clusters), true_share=p, f1=f1, accuracy=acc, balanced_accuracy=bacc,
                   roc_auc=auc, all_true_f1=all_true_f1(p), positive_rate_dev=q_rate, random_f1=random_f1(p, q_rate))
        for k, name in enumerate(("f1", "accuracy", "balanced_accuracy", "roc_auc")):
            vals = sorted(b[k] for b in boots if not math.isnan(b[k]))
            out[f"{name}_ci"] = [_percentile(vals, 0.025), _percentile(vals, 0.975)] if vals else [float("nan")] * 2
        return out

    def to_markdown(self, per_relation: bool = True) -> str:
        methods = self.methods()
        lines = [f"#### fact-checking [{self.lang}]: causal mode {self.settings.get('causal_mode', 'cut')}, "
                 f"{len(self.per_relation)} relations, "
                 f"{self.overall(methods[0]).n if methods else 0} test queries "
                 f"({self.overall(methods[0]).tp + self.overall(methods[0]).fn if methods else 0} true)", "",
                 "| method | P | R | F1 [95% CI] | all-true F1 | random F1 (dev rate) | accuracy | balanced acc. [95% CI] | "
                 "ROC-AUC [95% CI] | macro F1 | TP | FP | FN | TN |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        stats = self.summary_statistics()
        for m in methods:
            c, st = self.overall(m), stats.get(m, {})
            lines.append(f"| {METHOD_LABELS.get(m, m)} | {c.precision:.3f} | {c.recall:.3f} | {_ci(st, 'f1')} | "
                         f"{st.get('all_true_f1', float('nan')):.3f} | {st.get('random_f1', float('nan')):.3f} "
                         f"(q={st.get('positive_rate_dev', float('nan')):.2f}) | {c.accuracy:.3f} | "
                         f"{_ci(st, 'balanced_accuracy')} | {_ci(st, 'roc_auc')} | "
                         f"{self.macro_f1(m):.3f} | {c.tp} | {c.fp} | {c.fn} | {c.tn} |")
        lines.append("\nall-true F1 = 2p/(1+p), p = share of true test queries; random F1 = 2pq/(p+q) at the "
                     "positive rate q the dev-tuned threshold gives on dev. ROC-AUC: threshold-free, (true, wrong) "
                     "pairs of the same relation, ties ½. Intervals: percentile bootstrap over facts (1000 resamples).")
        for w in self.dev_warnings():
            lines.append("\n" + w)
        dkn_rel = [r for r, s in self.neuron_source.items() if s == "dkn" and r in self.per_relation]
        if len(dkn_rel) != len(self.per_relation) and "with_DKN" in methods:
            c = self.overall("with_DKN", dkn_rel)
            lines.append(f"\nwith_DKN on the {len(dkn_rel)} relations whose DKN part had degenerate pairs: "
                         f"P={c.precision:.3f} R={c.recall:.3f} F1={c.f1:.3f}")
        if self.skipped:
            lines.append(f"\nskipped relations ({len(self.skipped)}): " + "; ".join(f"{r}: {w}" for r, w in self.skipped.items()))
        if self.facts_skipped:
            lines.append(f"\nfacts without a usable query ({len(self.facts_skipped)}): "
                         + "; ".join(f"{f}: {w}" for f, w in list(self.facts_skipped.items())[:10])
                         + (" ..." if len(self.facts_skipped) > 10 else ""))
        if per_relation:
            lines += ["", "| relation | #DKN | source | test q | " + " | ".join(f"F1 {m}" for m in methods) + " |",
                      "|---|---|---|---|" + "---|" * len(methods)]
            for rel, per in self.per_relation.items():
                n = per[methods[0]].n if methods else 0
                lines.append(f"| {rel} | {len(self.neurons.get(rel, []))} | {self.neuron_source.get(rel, '')} | {n} | "
                             + " | ".join(f"{per[m].f1:.2f}" if m in per else "-" for m in methods) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "lang": self.lang,
            "overall": {m: {**self.overall(m).to_dict(), "macro_f1": self.macro_f1(m), **self.summary_statistics().get(m, {})}
                        for m in self.methods()},
            "warnings": self.dev_warnings(),
            "per_relation": {r: {m: c.to_dict() for m, c in v.items()} for r, v in self.per_relation.items()},
            "thresholds": self.thresholds,
            "neurons": {r: [list(n) for n in ns] for r, ns in self.neurons.items()},
            "neuron_source": self.neuron_source,
            "skipped": self.skipped,
            "facts_skipped": self.facts_skipped,
            "settings": self.settings,
            "queries": self.queries,
        }


def evaluate_queries(queries: Sequence[Mapping], lang: str | None = None) -> FactCheckReport:
    """Confusions per relation and method from scored queries (pure function).

    Each query: ``relation``, ``part`` ("dev" / "test"), ``fact_id``, ``label`` (True for
    the true fact) and any of ``dkn`` (score), ``logprob``, ``exact_match``. Thresholds of
    ``with_DKN`` and ``likelihood_threshold`` are chosen per relation on the dev queries
    only; every metric is computed on the test queries only."""
    per_relation: dict[str, dict[str, Confusion]] = {}
    thresholds: dict[str, dict[str, float]] = {}
    by_rel: dict[str, list[Mapping]] = {}
    for q in queries:
        if q.get("part") not in ("dev", "test"):
            raise ValueError(f"query part must be 'dev' or 'test', got {q.get('part')!r}")
        by_rel.setdefault(q["relation"], []).append(q)
    out_queries = []
    for rel, qs in by_rel.items():
        dev = [q for q in qs if q["part"] == "dev"]
        test = [q for q in qs if q["part"] == "test"]
        if not test:
            continue
        per: dict[str, Confusion] = {}
        thr: dict[str, float] = {}
        labels = [bool(q["label"]) for q in test]
        preds: dict[str, list[bool]] = {}
        for method, field_ in (("with_DKN", "dkn"), ("likelihood_threshold", "logprob")):
            if all(q.get(field_) is not None for q in qs) and dev:
                t = choose_threshold([q[field_] for q in dev], [bool(q["label"]) for q in dev])
                thr[method] = t
                preds[method] = [q[field_] > t for q in test]
        if all(q.get("exact_match") is not None for q in test):
            preds["wo_DKN_exact_match"] = [bool(q["exact_match"]) for q in test]
        if all(q.get("logprob") is not None for q in test):
            best: dict[str, float] = {}
            for q in test:
                best[q["fact_id"]] = max(best.get(q["fact_id"], -math.inf), q["logprob"])
            ties = Counter((q["fact_id"], q["logprob"]) for q in test)
            preds["wo_DKN_likelihood_rank"] = [q["logprob"] == best[q["fact_id"]] and ties[(q["fact_id"], q["logprob"])] == 1
                                               for q in test]
        for method in METHODS:
            if method in preds:
                per[method] = Confusion.from_predictions(labels, preds[method])
        per_relation[rel] = per
        thresholds[rel] = thr
        for i, q in enumerate(test):
            out_queries.append({**q, "predictions": {m: bool(p[i]) for m, p in preds.items()}})
        out_queries.extend({**q} for q in dev)
    return FactCheckReport(lang=lang, per_relation=per_relation, thresholds=thresholds, queries=out_queries)


# ----------------------------------------------------------------------------------------
# the fitted checker (used by the EasyEdit metric)


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


# ----------------------------------------------------------------------------------------
# the evaluator


def _key(*parts) -> str:
    return content_key(list(parts))


def build_queries(splits: Mapping[str, Mapping[str, Sequence[Fact]]], lang: str, pool: Sequence[Fact], *,
                  n_wrong: int = 1, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """True and wrong queries of the dev and test parts: ``(queries, {fact_id: why skipped})``.

    ``pool``: all facts known (the whole data set), so that wrong objects exclude objects
    true for the same subject anywhere in it."""
    if not isinstance(n_wrong, int) or n_wrong < 1:
        raise ValueError(f"n_wrong must be a positive integer, got {n_wrong!r}")
    groups = group_by_relation(f for f in pool if lang in f.object)
    queries, skipped = [], {}
    for relation, parts in splits.items():
        for part in ("dev", "test"):
            for fact in parts[part]:
                wrong = wrong_candidates(fact, lang, groups.get(relation, ()), n=n_wrong, seed=seed)
                if not wrong:
                    skipped[fact.id] = "no wrong object left after excluding true ones"
                    continue
                prompt = fact.prompt(lang)
                queries.append(dict(fact_id=fact.id, relation=relation, part=part, prompt=prompt,
                                    candidate=fact.target(lang), label=True))
                queries += [dict(fact_id=fact.id, relation=relation, part=part, prompt=prompt, candidate=w, label=False)
                            for w in wrong]
    return queries, skipped


def run_factcheck(model, tokenizer, facts: Sequence[Fact], lang: str, dkn_results: Mapping[str, DKNResult], *,
                  pool: Sequence[Fact] | None = None, store=None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  lam: float = DEFAULT_LAMBDA, n_wrong: int = 1, seed: int = 0, steps: int = DEFAULT_STEPS,
                  quadrature: str = DEFAULT_QUADRATURE, method: str = "amig",
                  objective: str = "prob", no_dkn: str = "topk", min_facts: int = 3,
                  progress: bool = True, causal_mode: str = "cut") -> tuple[FactCheckReport, FactChecker]:
    """The whole evaluator for one language (see the module docstring).

    ``facts``: the studied facts in order (facts without a detection in ``dkn_results`` are
    left out: they could not be used in ``lang``). ``store``: a
    :class:`~amig_plugin.store.RecordStore` that makes the scoring resumable. ``causal_mode``:
    see the module docstring; it is part of every scoring record key (cut-mode keys are those
    of earlier versions)."""
    lam = check_lambda(lam)
    mode = effective_causal_mode(model, causal_mode)
    mode_key = [["causal_mode", mode]] if mode != "cut" else []
    fractions = check_fractions(fractions)
    usable = [f for f in facts if f.id in dkn_results]
    if not usable:
        raise TooFewFactsError(f"none of the {len(facts)} facts has a DKN detection in {lang!r} (all unusable in "
                               "this language?); nothing to fact-check")
    splits, skipped = split_facts(usable, fractions, min_facts)
    neurons: dict[str, list[Neuron]] = {}
    source: dict[str, str] = {}
    for rel in list(splits):
        ns, src = relation_dkn([dkn_results[f.id] for f in splits[rel]["dkn"]], lam, no_dkn)
        if not ns:
            skipped[rel] = "the DKN part has no degenerate pair" + (" nor recurring top-k neuron" if no_dkn == "topk" else "")
            del splits[rel]
            continue
        neurons[rel], source[rel] = ns, src
    if not splits:
        raise TooFewFactsError("no relation left to fact-check: " + "; ".join(f"{r}: {w}" for r, w in skipped.items()))
    queries, facts_skipped = build_queries(splits, lang, pool if pool is not None else facts, n_wrong=n_wrong, seed=seed)
    mkey = model_key(model)
    scored = []
    with prompt_drop_summary(lang):  # one warning for the language, not one per prompt
        for q in tqdm(queries, desc=f"fact-check [{lang}]", disable=not progress):
            rel_neurons = neurons[q["relation"]]
            q = dict(q)
            try:
                query = candidate_query(q["prompt"], q["candidate"], mode)
                k_dkn = _key("fc-dkn-v1", mkey, q["prompt"], q["candidate"], rel_neurons, method, steps, objective, quadrature,
                             *mode_key)
                rec = store.get(k_dkn) if store is not None else None
                if rec is None:
                    rec = dkn_score(model, tokenizer, *query, rel_neurons, method=method, steps=steps,
                                    objective=objective, quadrature=quadrature)
                    if store is not None:
                        store.add(k_dkn, rec)
                q["dkn"] = rec["mean"]
                k_lm = _key("fc-lm-v1", mkey, q["prompt"], q["candidate"], *mode_key)
                rec = store.get(k_lm) if store is not None else None
                if rec is None:
                    rec = likelihood(model, tokenizer, *query)
                    if mode != "cut":  # greedy generation from the prefix reproduces the candidate: as in cut mode
                        alone = likelihood(model, tokenizer, *_object_part(query, q["prompt"]))
                        rec = {**rec, "exact_match": alone["exact_match"], "greedy": alone["greedy"],
                               "logprob_candidate": alone["logprob"]}
                    if store is not None:
                        store.add(k_lm, rec)
                q["logprob"], q["exact_match"] = rec["logprob"], rec["exact_match"]
            except FACT_ERRORS as exc:
                facts_skipped[q["fact_id"]] = f"{type(exc).__name__}: {exc}"
                continue
            scored.append(q)
    scored = [q for q in scored if q["fact_id"] not in facts_skipped]  # keep facts whole (true + wrong)
    report = evaluate_queries(scored, lang)
    report.neurons = {r: neurons[r] for r in report.per_relation}
    report.neuron_source = {r: source[r] for r in report.per_relation}
    report.skipped = skipped
    report.facts_skipped = facts_skipped
    report.settings = dict(lang=lang, fractions=list(fractions), lam=lam, n_wrong=n_wrong, seed=seed, steps=steps,
                           quadrature=quadrature, method=method, objective=objective, no_dkn=no_dkn, min_facts=min_facts,
                           causal_mode=mode,
                           split_sizes={r: {p: len(v) for p, v in parts.items()} for r, parts in splits.items()})
    templates = {f.relation: f.relation_name for f in usable}
    checker = FactChecker(
        relations={r: {"neurons": [list(n) for n in neurons[r]], "threshold": report.thresholds[r]["with_DKN"],
                       "source": source[r], "template": templates.get(r, "")}
                   for r in report.per_relation if "with_DKN" in report.thresholds.get(r, {})},
        lang=lang, model=mkey, settings=dict(method=method, steps=steps, quadrature=quadrature, objective=objective, lam=lam,
                                             causal_mode=mode),
    )
    return report, checker


def _ci(st: Mapping, name: str) -> str:
    if name not in st or math.isnan(st[name]):
        return "n/a"
    lo, hi = st.get(f"{name}_ci", [float("nan")] * 2)
    return f"{st[name]:.3f}" + ("" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]")


def format_summary(reports: Sequence[FactCheckReport], title: str | None = None) -> str:
    """One markdown table: language × method, overall P / R / F1 (the paper's Table 3 shape)
    with the trivial baselines, balanced accuracy, ROC-AUC and bootstrap intervals."""
    lines = ([title, ""] if title else []) + [
        "| lang | method | relations | test queries | P | R | F1 [95% CI] | all-true F1 | random F1 | "
        "balanced acc. [95% CI] | ROC-AUC [95% CI] | macro F1 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        stats = rep.summary_statistics()
        for m in rep.methods():
            c, st = rep.overall(m), stats.get(m, {})
            lines.append(f"| {rep.lang} | {METHOD_LABELS.get(m, m)} | {len(rep.per_relation)} | {c.n} | "
                         f"{c.precision:.3f} | {c.recall:.3f} | {_ci(st, 'f1')} | {st.get('all_true_f1', float('nan')):.3f} | "
                         f"{st.get('random_f1', float('nan')):.3f} | {_ci(st, 'balanced_accuracy')} | "
                         f"{_ci(st, 'roc_auc')} | {rep.macro_f1(m):.3f} |")
    warnings = [f"[{rep.lang}] {w}" for rep in reports for w in rep.dev_warnings()]
    return "\n".join(lines + ([""] + warnings if warnings else []))
