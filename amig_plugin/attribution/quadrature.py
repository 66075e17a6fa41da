"""Quadrature rules for the IG path integral: nodes and weights (α_k, w_k) with
∫₀¹ g(α) dα ≈ Σ_k w_k g(α_k) (Riemann rules, Gauss-Legendre and the graded ``steep`` rule)."""

from __future__ import annotations

from typing import Literal

import torch

from ..defaults import QUADRATURE_NAMES

Quadrature = Literal["midpoint", "left", "right", "linspace", "gauss", "steep", "gauss-adaptive"]

QUADRATURES = QUADRATURE_NAMES

STEEP_PANEL_POINTS = 6
"""Gauss-Legendre points per panel of the ``steep`` rule."""
STEEP_PANEL_RATIO = 10.0
"""Width ratio of neighbouring panels of the ``steep`` rule (panels [0, r^-(P-1)], …, [1/r, 1])."""


def gauss_legendre(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """m-point Gauss-Legendre nodes and weights on [0, 1], float64 (Golub-Welsch: the nodes are
    the eigenvalues of the Jacobi matrix of the Legendre polynomials, off-diagonal
    k / sqrt(4k² − 1), and the weights 2·(first eigenvector component)², mapped from [−1, 1])."""
    if m == 1:
        return torch.tensor([0.5], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    k = torch.arange(1, m, dtype=torch.float64)
    off = k / torch.sqrt(4 * k * k - 1)
    jacobi = torch.diag(off, 1) + torch.diag(off, -1)
    nodes, vectors = torch.linalg.eigh(jacobi)
    weights = 2 * vectors[0] ** 2
    nodes = (nodes - nodes.flip(0)) / 2  # symmetric to rounding
    weights = (weights + weights.flip(0)) / 2
    return (nodes + 1) / 2, weights / weights.sum()


def steep_rule(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss-Legendre on P = max(1, m // 6) panels graded geometrically towards 0
    (edges 0, r^-(P-1), …, r^-1, 1 with r = 10); the m points are shared out as evenly as the
    panels allow, the wider panels taking the remainder. Float64 nodes and weights."""
    panels = max(1, m // STEEP_PANEL_POINTS)
    inner = [STEEP_PANEL_RATIO ** -(panels - 1 - i) for i in range(panels - 1)]
    edges = [0.0] + inner + [1.0]
    counts = [m // panels + (1 if i >= panels - m % panels else 0) for i in range(panels)]
    nodes, weights = [], []
    for (lo, hi), n in zip(zip(edges[:-1], edges[1:]), counts):
        x, w = gauss_legendre(n)
        nodes.append(lo + (hi - lo) * x)
        weights.append((hi - lo) * w)
    return torch.cat(nodes), torch.cat(weights)


def quadrature_rule(steps: int, quadrature: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_k [m], w_k [m]), both float64, with ∫₀¹ g(α) dα ≈ Σ_k w_k g(α_k), ascending α."""
    if quadrature == "gauss":
        return gauss_legendre(steps)
    if quadrature == "steep":
        return steep_rule(steps)
    if quadrature == "gauss-adaptive":  # its first pass; the refinement is the engine's (attribution.ig)
        return gauss_legendre(steps)
    if quadrature not in QUADRATURES:
        raise ValueError(f"unknown quadrature {quadrature!r}; use one of {QUADRATURES}")
    if quadrature == "linspace":
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    else:
        k = torch.arange(steps, dtype=torch.float64)
        alphas = (k + {"left": 0.0, "midpoint": 0.5, "right": 1.0}[quadrature]) / steps
    return alphas, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


def path_alphas(steps: int, quadrature: str) -> torch.Tensor:
    """α_k of the rule, float32 (weights: :func:`quadrature_rule`)."""
    return quadrature_rule(steps, quadrature)[0].float()
