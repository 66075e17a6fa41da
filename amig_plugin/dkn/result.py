"""What a degenerate pair is, and one fact's detection result (:class:`DKNResult`).

Definition (Chen et al. 2024, §"Degenerate Knowledge Neurons", with its defaults
``low = 0.2``, ``high = 0.25``). Let P0 be P(gold | prompt) of the unmodified model and P_S
the same probability with the neurons of the set S suppressed (set to 0 at the target
position). Among a fact's top-``k`` knowledge neurons (``k = 20``; the top neurons by mean
AMIG attribution), a pair (a, b) is *degenerate* when

    P_{a} >= (1 - low) · P0   and   P_{b} >= (1 - low) · P0   and   P_{a,b} < (1 - high) · P0

i.e. each neuron alone can be removed without losing the fact, both together cannot: they
back each other up. With several prompts, P is the mean over the fact's prompts.

A diagnostic the paper does not report: with thresholds this close (0.8 vs 0.75) two
neurons whose effects are merely independent also qualify (each costs 15 %, both together
28 %). ``excess_drop`` = (P_a/P0)(P_b/P0) − P_ab/P0 measures how much the joint drop exceeds
what independent effects predict; redundancy in the strict sense (each neuron a backup of
the other) shows as a clearly positive excess.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from ..neurons import Neuron

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

