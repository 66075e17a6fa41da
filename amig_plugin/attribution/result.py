"""The result of one attribution: IG per neuron per layer, the clean and baseline scores, and
the per-layer completeness residuals that say whether the quadrature converged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..defaults import DEFAULT_RESIDUAL_TOLERANCE, FLOAT_NOISE, RESIDUAL_FLOOR

Method = Literal["amig", "kn"]
Objective = Literal["prob", "logprob"]

METHODS = ("amig", "kn")
OBJECTIVES = ("prob", "logprob")
AMIG_MODES = ("mean", "per_position")


@dataclass
class AttributionResult:
    """IG attributions of one prompt/target for every attributed layer.

    attributions:    [L, W] float32, IG per neuron (row i ↔ ``layers[i]``)
    activations:     [L, W] clean neuron vectors at the target position
    baselines:       [L, W] baseline vectors (the mean baseline for AMIG)
    score:           F(a), the clean target score
    baseline_scores: [L] F with layer l's vector replaced by its baseline
                     (per-position AMIG: mean_j F(a'_j))
    """

    attributions: torch.Tensor
    layers: list[int]
    activations: torch.Tensor
    baselines: torch.Tensor
    score: float
    baseline_scores: torch.Tensor
    method: str
    objective: str
    steps: int
    quadrature: str
    amig_mode: str
    prompt: str = ""
    target: str = ""
    target_ids: list[int] = field(default_factory=list)
    num_baseline_inputs: int = 0

    tolerance: float = DEFAULT_RESIDUAL_TOLERANCE
    refined: dict = field(default_factory=dict)
    """layer -> "<rule>/<m>" of the rule that replaced the first pass on that layer: "gauss/<m>" of
    the ``gauss-adaptive`` rule, "steep/<m>" where :func:`refine_unconverged` re-ran it."""

    refined_points: int = 0
    """Path points the refinements ran, summed over layers (discarded refinements included)."""

    @property
    def points_per_layer(self) -> float:
        """Path points spent per layer, refinements included: the cost of the result in rows of
        the batched forward/backward."""
        return self.steps + self.refined_points / max(1, len(self.layers))

    @property
    def completeness_residual(self) -> torch.Tensor:
        """[L]: Σ_i IG_i − (F(a) − F(a'_l)); ≈ 0 for a correct IG."""
        return self.attributions.sum(-1) - (self.score - self.baseline_scores)

    @property
    def max_abs_residual(self) -> float:
        return float(self.completeness_residual.abs().max())

    @property
    def layer_relative_residuals(self) -> torch.Tensor:
        """[L]: |residual_l| / max(|ΔF_l|, RESIDUAL_FLOOR · max_l' |ΔF_l'|), ΔF_l = F(a) − F(a'_l)."""
        return layer_relative_residuals(self.completeness_residual, self.score - self.baseline_scores,
                                        score=self.score)

    @property
    def relative_residual(self) -> float:
        """The worst layer's relative residual (:attr:`layer_relative_residuals`)."""
        return float(self.layer_relative_residuals.max())

    @property
    def unconverged_layers(self) -> list[int]:
        """Layers whose relative residual exceeds ``tolerance``."""
        rel = self.layer_relative_residuals
        return [layer for layer, r in zip(self.layers, rel.tolist()) if not r <= self.tolerance]

    @property
    def converged(self) -> bool:
        """Every layer's relative residual is within ``tolerance``."""
        return not self.unconverged_layers

    def layer_of_row(self, row: int) -> int:
        return self.layers[row]


def layer_relative_residuals(residual: torch.Tensor, delta: torch.Tensor, floor: float = RESIDUAL_FLOOR,
                             score: float = 0.0) -> torch.Tensor:
    """[L] relative completeness residuals:
    |residual_l| / max(|ΔF_l|, floor · max_l' |ΔF_l'|, FLOAT_NOISE · |F(a)|)."""
    delta = delta.abs().double()
    denom = delta.clamp_min(max(floor * float(delta.max()), FLOAT_NOISE * abs(score), 1e-12))
    return (residual.abs().double() / denom).float()
