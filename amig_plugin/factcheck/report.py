"""The evaluation of scored queries (pure: no model): per-relation thresholds tuned on dev,
confusions on test (:func:`evaluate_queries`), the :class:`FactCheckReport` with bootstrap
intervals and its markdown, and the cross-language table (:func:`format_summary`).

Methods: ``with_DKN`` (the DKN score, dev threshold), ``wo_DKN_exact_match`` (the paper's
baseline: greedy generation reproduces the candidate), ``wo_DKN_likelihood_rank`` (per fact,
the most likely candidate is judged true) and ``likelihood_threshold`` (log P, dev
threshold: the like-for-like control). Overall scores are micro (confusions summed over
relations); macro F1 is the mean over relations.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..neurons import Neuron
from ..stats import percentile
from .metrics import Confusion, all_true_f1, choose_threshold, random_f1, roc_auc

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
            out[f"{name}_ci"] = [percentile(vals, 0.025), percentile(vals, 0.975)] if vals else [float("nan")] * 2
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
