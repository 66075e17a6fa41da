"""Classification metrics of fact-checking (pure: no model).

The positive class is "the fact is true"; precision = TP / (TP + FP), recall = TP / (TP + FN)
(the paper's code swapped them), F1; 0 when undefined (no predicted / no actual positives).
Also the trivial baselines' F1 (all-true, random), a threshold-free ROC-AUC and the
dev-set threshold that maximises F1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence


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
