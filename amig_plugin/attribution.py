"""The integrated-gradients engine: KN (zero baseline) and AMIG (masked-token baselines).

For layer l, neuron vector a ∈ R^W at the target position, baseline a', path
z(α) = a' + α (a − a'), and target score F (P(target) or log P(target), teacher-forced over
the target's T tokens):

    IG_i = (a_i − a'_i) · ∫₀¹ ∂F/∂a_i (z(α)) dα  ≈  (a_i − a'_i) · Σ_k w_k ∂F/∂a_i (z(α_k))

Only layer l's vector at the target position is replaced; layers above respond to it (exact
per-layer IG). Completeness: Σ_i IG_i ≈ F(a) − F(a'); every result carries the residual.

Baselines
  * ``kn``   (Dai et al. 2022): a' = 0.
  * ``amig`` (Chen et al. 2024): for each prompt token j, replace token j by ``[MASK]``
    (masked LMs) or EOS (causal LMs) and read the neuron vector a'_j that this input
    produces at the target position. ``amig_mode="mean"`` (default): proper IG from the mean
    baseline ā' = mean_j a'_j. ``amig_mode="per_position"``: the average over j of the IG
    attributions from each a'_j (completeness against mean_j F(a'_j)).

Quadrature: a rule is nodes and weights (α_k, w_k), ∫₀¹ g ≈ Σ_k w_k g(α_k)
(:func:`quadrature_rule`); every rule estimates the same integral, and the rows of all path
points of all layers are batched the same way whatever the rule. Riemann rules (w_k = 1/m):
``midpoint`` (k+½)/m, ``left`` k/m (Dai et al.'s rule), ``right`` (k+1)/m, ``linspace``
k/(m−1) — EasyEdit's / EleutherAI's rule (``torch.linspace(0, 1, m)`` weighted 1/m: both
endpoints, a biased sum; with m = 1 it is the gradient at α = 0 times a, not IG), offered to
reproduce their numbers. ``gauss``: m-point Gauss-Legendre on [0, 1] (exact for polynomials
of degree ≤ 2m − 1; nodes and weights by Golub-Welsch). ``steep``: composite Gauss-Legendre
on panels graded geometrically towards α = 0 ([0, 10^-(P-1)], …, [0.1, 1], P = m // 6 panels
of about 6 points), for paths that are flat with a jump near the baseline (Dai et al.'s zero
baseline on models with a norm after the FFN, e.g. Gemma-2/3).

Convergence: every result carries the per-layer relative completeness residual
|Σ_i IG_i − ΔF_l| / max(|ΔF_l|, ε · max_l' |ΔF_l'|, 1e-5 · |F(a)|) (ε = ``RESIDUAL_FLOOR``, so
a layer whose ΔF is ~0 is judged against a small fraction of the largest layer's instead of 0,
and nothing against less than float32 rounding of the score) and is
``converged`` when every layer is within ``tolerance`` (default 0.05); see
:func:`refine_unconverged` for re-running the layers that are not with a finer rule.

Speed (estimator unchanged): all masked baselines of all layers come from one
batched forward; path points of all layers are batched together; causal models reuse the
clean key/value cache of the prefix, so each path point recomputes only the target
position's column (prompt-length fewer FLOPs); a path point of layer l joins the batch at
layer l's neuron site, its block's output being the clean residual stream plus its FFN's
output (blocks below and the attention of block l are unchanged; masked models enter at
block l with the clean hidden state) and the LM head runs on the scored positions only,
folded into the score's hand-written backward (:mod:`amig_plugin.scoring`) where the head is
a plain linear map. Activations spelled as several ops run as one fused kernel
(:meth:`ModelFamily.fused_activations`). Path points that coincide
are computed once: α = 1 is the clean input for every layer, so one clean row with a zero
offset δ_l at every layer gives all of their gradients (∂F/∂δ_l = ∂F/∂a_l, the layers above
responding), and α = 0 rows double as the endpoint rows F(a').
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .models import EncodedQuery, ModelFamily, NeuronHooks, _NeuronPatch, get_family
from .defaults import (QUADRATURE_NAMES, DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_RESIDUAL_TOLERANCE, DEFAULT_STEPS,
                       RESIDUAL_FLOOR)
from .scoring import LMHead, head_scores, target_scores

Method = Literal["amig", "kn"]
Objective = Literal["prob", "logprob"]
Quadrature = Literal["midpoint", "left", "right", "linspace", "gauss", "steep"]

METHODS = ("amig", "kn")
OBJECTIVES = ("prob", "logprob")
QUADRATURES = QUADRATURE_NAMES
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
    refined: dict = field(default_factory=dict)  # layer -> "steep/<m>" where refine_unconverged re-ran it

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


FLOAT_NOISE = 1e-5
"""ΔF below this fraction of |F(a)| is float32 rounding of the scores (a random-weight model's
P(target) ~ 1e-4 moves by less than that): residuals are judged against at least this."""


def layer_relative_residuals(residual: torch.Tensor, delta: torch.Tensor, floor: float = RESIDUAL_FLOOR,
                             score: float = 0.0) -> torch.Tensor:
    """[L] relative completeness residuals:
    |residual_l| / max(|ΔF_l|, floor · max_l' |ΔF_l'|, FLOAT_NOISE · |F(a)|)."""
    delta = delta.abs().double()
    denom = delta.clamp_min(max(floor * float(delta.max()), FLOAT_NOISE * abs(score), 1e-12))
    return (residual.abs().double() / denom).float()


# ----------------------------------------------------------------------------------------
# quadrature

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
    if quadrature not in QUADRATURES:
        raise ValueError(f"unknown quadrature {quadrature!r}; use one of {QUADRATURES}")
    if quadrature == "linspace":
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    else:
        k = torch.arange(steps, dtype=torch.float64)
        alphas = (k + {"left": 0.0, "midpoint": 0.5, "right": 1.0}[quadrature]) / steps
    return alphas, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


# ----------------------------------------------------------------------------------------
# helpers


def _validate(method: str, objective: str, steps: int, quadrature: str, amig_mode: str, ig_batch_size: int) -> str:
    method = {"zero": "kn"}.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS} ('kn' = Dai et al.'s zero baseline)")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use 'prob' (P(target), the paper's) or 'logprob'")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer (IG path points), got {steps!r}; the paper uses 20")
    if quadrature not in QUADRATURES:
        raise ValueError(f"unknown quadrature {quadrature!r}; use one of {QUADRATURES}")
    if amig_mode not in AMIG_MODES:
        raise ValueError(f"unknown amig_mode {amig_mode!r}; use one of {AMIG_MODES}")
    if not isinstance(ig_batch_size, int) or ig_batch_size < 1:
        raise ValueError(f"ig_batch_size must be a positive integer, got {ig_batch_size!r}")
    return method


def path_alphas(steps: int, quadrature: str) -> torch.Tensor:
    """α_k of the rule, float32 (weights: :func:`quadrature_rule`)."""
    return quadrature_rule(steps, quadrature)[0].float()


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """eval() mode and no parameter gradients for the duration; both restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _layer_output(out):
    return out[0] if isinstance(out, tuple) else out


def _stacked(capture: dict[int, list[torch.Tensor]], position: int, layers: Sequence[int]) -> torch.Tensor:
    """The first captured neuron vectors at ``position`` of ``layers``: [B, L, W] float32."""
    return torch.stack([capture[layer][0][:, position].float() for layer in layers], dim=1)


def _last_logits_only(model: nn.Module, n: int) -> dict:
    """``logits_to_keep=n`` where the model's forward takes it (the LM head on the last n
    positions only), else nothing."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": n} if "logits_to_keep" in params else {}


def _broadcast_layer(layer_cache, rows: int) -> None:
    """One cache layer's batch-1 keys/values seen by ``rows`` rows: a broadcast view where
    the layer keeps plain tensors (its update concatenates, so nothing writes into the view),
    else the layer's own copying ``batch_repeat_interleave``."""
    keys, values = getattr(layer_cache, "keys", None), getattr(layer_cache, "values", None)
    concatenating = type(layer_cache).__name__ in ("DynamicLayer", "DynamicSlidingWindowLayer")
    if concatenating and isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor) and keys.shape[0] == 1:
        layer_cache.keys = keys.expand(rows, -1, -1, -1)
        layer_cache.values = values.expand(rows, -1, -1, -1)
    else:
        layer_cache.batch_repeat_interleave(rows)


def _cut_cache(cache, length: int):
    """The key/value cache of the first ``length`` positions, cut in place from a longer
    one: legacy tuples and plain ``DynamicLayer`` caches; None for anything else (sliding
    windows keep extra state), which the caller recomputes."""
    if isinstance(cache, tuple):
        return tuple(tuple(t[..., :length, :].contiguous() for t in layer) for layer in cache)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" or not isinstance(getattr(layer, "keys", None), torch.Tensor)
                         for layer in layers):
        return None
    for layer in layers:
        layer.keys = layer.keys[..., :length, :].contiguous()
        layer.values = layer.values[..., :length, :].contiguous()
    return cache if cache.get_seq_length() == length else None


# ----------------------------------------------------------------------------------------
# row evaluators: F (and ∂F/∂z) for a batch of rows, row r having layer[r]'s vector at the
# target position replaced by value[r]; optionally one extra clean row whose neuron vectors
# get a zero offset δ_l at every requested layer (∂F/∂δ_l = ∂F/∂a_l at the clean input, with
# the layers above responding: the gradient of every layer's α = 1 path point at once).


@dataclass
class _RowOutputs:
    """A runner's outputs at the score positions: ``values`` are logits [R', T, V], or the
    final hidden states [R', T, H] when ``hidden`` (the runner's plain LM head is folded into
    the score). The requested rows are ``first_row .. first_row + R - 1``, in the runner's
    order, which ``inverse`` maps back to the requested one (None: already in order);
    ``clean_row`` is the index of the clean row (or None)."""

    values: torch.Tensor
    inverse: torch.Tensor | None = None
    clean_row: int | None = None
    hidden: bool = False
    first_row: int = 0


@dataclass
class RowResult:
    """F [R] of the rows; ∂F/∂z [R, W] when asked; the clean row's F(a) and ∂F/∂a [L, W]
    (layers in the order asked) when asked."""

    scores: torch.Tensor
    grads: torch.Tensor | None = None
    clean_score: float | None = None
    clean_grads: torch.Tensor | None = None


def _offset_patches(clean_deltas: dict[int, torch.Tensor], rows, position: int) -> dict[int, list[_NeuronPatch]]:
    """act[rows, position] += δ_l at every layer l (the value is unchanged: δ = 0)."""
    return {layer: [_NeuronPatch(rows=rows, position=position, fn=lambda old, d=delta: old + d)]
            for layer, delta in clean_deltas.items()}


def _merge(*patch_sets: dict[int, list[_NeuronPatch]]) -> dict[int, list[_NeuronPatch]]:
    out: dict[int, list[_NeuronPatch]] = {}
    for patches in patch_sets:
        for layer, items in patches.items():
            out.setdefault(layer, []).extend(items)
    return out


def _cache_keyword(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes the key/value cache by: ``cache`` (newer
    transformers, which deprecate ``past_key_values``) or ``past_key_values``."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - forward without a signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out) -> object:
    """The key/value cache of a model output (field ``cache`` in newer transformers,
    ``past_key_values`` before), without touching the deprecated name where both exist."""
    fields = getattr(type(out), "__dataclass_fields__", {})
    return getattr(out, "cache" if "cache" in fields else "past_key_values", None)


class _RowRunner:
    def __init__(self, family: ModelFamily, query: EncodedQuery, objective: str):
        self.family = family
        self.model = family.model
        self.query = query
        self.objective = objective
        self.device = family.device()
        self.ids = query.input_ids.to(self.device)
        self.target_ids = query.target_ids.to(self.device)
        body_and_head = family.body_and_head()
        self.body, self.head = body_and_head if body_and_head is not None else (None, None)
        self.cache_keyword = _cache_keyword(self.body if self.head is not None else self.model)

    def _forward(self, keep_last: int | None = None, **inputs) -> tuple[torch.Tensor, bool, object]:
        """(final hidden states [B, n, H] if the head is folded into the score, else logits
        [B, n, V]; which of the two; the returned key/value cache). ``keep_last``: only the
        last positions' logits are needed (the model's LM head runs on those alone).
        A ``past_key_values`` input goes to the model under the keyword its forward takes."""
        if "past_key_values" in inputs and self.cache_keyword != "past_key_values":
            inputs[self.cache_keyword] = inputs.pop("past_key_values")
        if self.head is not None:
            out = self.body(**inputs)
            return out.last_hidden_state, True, _returned_cache(out)
        out = self.model(**inputs, **(_last_logits_only(self.model, keep_last) if keep_last else {}))
        return out.logits, False, _returned_cache(out)

    def _score(self, outputs: torch.Tensor, hidden: bool) -> torch.Tensor:
        """F [R] from :meth:`_forward`'s outputs at the score positions."""
        if hidden:
            return head_scores(outputs, self.head, self.target_ids, self.objective)
        return target_scores(outputs, self.target_ids, self.objective)

    def _patches(self, row_layers: torch.Tensor, z: torch.Tensor, position: int, row_offset: int = 0):
        patches: dict[int, list[_NeuronPatch]] = {}
        for layer in torch.unique(row_layers).tolist():
            rows = torch.nonzero(row_layers == layer).squeeze(-1)
            values = z[rows]
            patches[int(layer)] = [_NeuronPatch(rows=rows + row_offset, position=position, fn=lambda _old, v=values: v)]
        return patches

    def logits(self, row_layers: torch.Tensor, z: torch.Tensor,
               clean_deltas: dict[int, torch.Tensor] | None = None) -> _RowOutputs:
        """Outputs of the rows, plus the clean row appended last when ``clean_deltas`` is
        given (runners that reorder rows override this)."""
        R = z.shape[0]
        if clean_deltas is None:
            return self.patched_logits(R, lambda pos: self._patches(row_layers, z, pos))
        clean_rows = torch.tensor([R])
        out = self.patched_logits(R + 1, lambda pos: _merge(self._patches(row_layers, z, pos),
                                                           _offset_patches(clean_deltas, clean_rows, pos)))
        out.clean_row = R
        return out

    def patched_logits(self, R: int, patches_at: "Callable[[int], dict]") -> _RowOutputs:
        """Outputs at the score positions of R copies of the query with ``patches_at(position)``
        applied (position = where the target position sits in this runner's input)."""
        raise NotImplementedError

    def scaled_scores(self, multipliers: dict[int, torch.Tensor]) -> torch.Tensor:
        """F [R] with the neuron vector at the target position multiplied elementwise by
        ``multipliers[layer]`` [R, W] (1 = untouched, 0 = suppressed, 2 = enhanced)."""
        R = next(iter(multipliers.values())).shape[0]

        def patches_at(position: int):
            return {layer: [_NeuronPatch(rows=slice(None), position=position,
                                         fn=lambda old, m=m: old * m.to(old.device, old.dtype))]
                    for layer, m in multipliers.items()}

        with torch.no_grad():
            out = self.patched_logits(R, patches_at)
            return self._score(out.values, out.hidden)

    def _scores(self, row_layers: torch.Tensor, z: torch.Tensor,
                clean_deltas: dict[int, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(F [R] in row order, F of the clean row or None). Runners that reorder rows (layer
        skipping) return logits in their own order plus the inverse permutation, applied to
        the [R] scores rather than to the [R, T, V] logits (whose indexing backward would
        allocate a vocab-sized zero tensor per batch)."""
        out = self.logits(row_layers, z, clean_deltas)
        scores = self._score(out.values, out.hidden)
        clean = None if out.clean_row is None else scores[out.clean_row]
        requested = scores[out.first_row:out.first_row + z.shape[0]]
        return (requested if out.inverse is None else requested[out.inverse]), clean

    def run(self, row_layers: torch.Tensor, values: torch.Tensor, need_grad: bool,
            grad_rows: torch.Tensor | None = None, clean_layers: Sequence[int] | None = None) -> RowResult:
        """F [R] of the rows, and ∂F/∂z [R, W] when ``need_grad`` (rows outside the boolean
        mask ``grad_rows`` ride along for their score only: their gradient rows are 0).
        ``clean_layers``: one more row, the clean input, rides along and gives F(a) and
        ∂F/∂a_l for each of these layers (the α = 1 path points of every layer in one row)."""
        dtype = next(self.model.parameters()).dtype
        z = values.to(self.device, dtype).detach().clone()
        if not need_grad and clean_layers is None:
            with torch.no_grad():
                return RowResult(self._scores(row_layers, z)[0])
        deltas = None
        if clean_layers is not None:
            width = z.shape[-1]
            deltas = {int(l): torch.zeros(1, width, device=self.device, dtype=dtype, requires_grad=True)
                      for l in clean_layers}
        z.requires_grad_(need_grad)
        with torch.enable_grad():
            scores, clean = self._scores(row_layers, z, deltas)
            total = scores.new_zeros(())
            if need_grad:
                total = total + (scores.sum() if grad_rows is None else scores[grad_rows.to(scores.device)].sum())
            leaves = ([z] if need_grad else []) + (list(deltas.values()) if deltas else [])
            if clean is not None:
                total = total + clean
            grads = torch.autograd.grad(total, leaves)
        result = RowResult(scores.detach())
        if need_grad:
            result.grads = grads[0].float()
        if deltas:
            result.clean_score = float(clean.detach())
            result.clean_grads = torch.cat([g.float() for g in grads[int(need_grad):]])  # [L, W]
        return result

    def clean_vectors_at(self, layers: Sequence[int]) -> torch.Tensor:
        """The clean neuron vectors at the target position [L, W] float32."""
        return neuron_vectors(self.family, self.query.input_ids.unsqueeze(0), self.query.target_position, layers)[0]

    def clean_score(self) -> float:
        """F(a) of the clean input (IG takes it from the clean row where one runs)."""
        value = self.clean_vectors_at([0])
        with torch.no_grad():
            return float(self.run(torch.tensor([0]), value, need_grad=False).scores[0])


class _FullRunner(_RowRunner):
    """Whole-model forward per row (any family; the reference strategy)."""

    def patched_logits(self, R, patches_at):
        with NeuronHooks(self.family, patches_at(self.query.target_position)):
            values, hidden, _ = self._forward(input_ids=self.ids.unsqueeze(0).expand(R, -1))
        return _RowOutputs(values[:, self.query.score_positions.to(self.device)], hidden=hidden)


class _CachedCausalRunner(_RowRunner):
    """Causal LMs: the prefix before the target position is unchanged by any patch, so its
    key/value cache is computed once; each row recomputes only positions tp..n-1."""

    capture_joins = False  # the layer-skipping subclass needs what each block's FFN meets

    def __init__(self, family, query, objective, need_clean: bool = True):
        super().__init__(family, query, objective)
        tp = query.target_position
        self.suffix = self.ids[tp:]
        offsets = (query.score_positions - tp).to(self.device)
        # the suffix is exactly the scored positions: keep all its logits (no indexing)
        self.score_offsets = None if torch.equal(offsets.cpu(), torch.arange(len(self.suffix))) else offsets
        if need_clean or self.capture_joins:
            self._clean_pass()
        else:  # interventions only need the prefix cache (one pass over the prefix)
            self.cache = self._prefix_cache()

    def _prefix_cache(self):
        with torch.no_grad():
            return self._forward(input_ids=self.ids[:self.query.target_position].unsqueeze(0), use_cache=True,
                                 keep_last=1)[2]

    def _clean_pass(self) -> None:
        """One unpatched pass over the whole input gives everything the clean model
        contributes: the neuron vectors of every layer (all suffix positions), the outputs
        that give the clean score F(a), what each block's FFN output meets (layer skipping:
        :meth:`_capture_joins`) and the prefix's key/value cache (cut to the positions before
        the target position). Small passes are bound by reading the weights, so one pass
        instead of four matters; where the cache cannot be cut safely (sliding-window
        layers) a second pass over the prefix makes it."""
        tp, T = self.query.target_position, len(self.suffix)
        capture = {layer: [] for layer in range(self.family.num_layers)}
        joins = self._capture_joins() if self.capture_joins else None
        try:
            with torch.no_grad(), NeuronHooks(self.family, capture=capture):
                values, hidden, past = self._forward(input_ids=self.ids.unsqueeze(0), use_cache=True, keep_last=T)
        finally:
            for handle in joins["handles"] if joins else ():
                handle.remove()
        self._clean_outputs = (self._keep_scored(values[:, -T:]), hidden)
        self.site_values = [capture[layer][0][:, tp:] for layer in sorted(capture)]  # [1, T, W] per layer
        self.clean_vectors = _stacked(capture, tp, sorted(capture))[0]  # [L, W]
        self.joins = self._checked_joins(joins, tp) if joins is not None else None
        cache = _cut_cache(past, tp)
        self.cache = cache if cache is not None else self._prefix_cache()

    def _capture_joins(self) -> dict | None:
        return None

    def clean_vectors_at(self, layers: Sequence[int]) -> torch.Tensor:
        if not hasattr(self, "clean_vectors"):
            self._clean_pass()
        return self.clean_vectors[list(layers)]

    def clean_score(self) -> float:
        if not hasattr(self, "_clean_outputs"):
            self._clean_pass()
        with torch.no_grad():
            return float(self._score(*self._clean_outputs)[0])

    def _keep_scored(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.score_offsets is None else logits[:, self.score_offsets]

    def _expanded_cache(self, R: int):
        if hasattr(self.cache, "batch_repeat_interleave"):
            cache = copy.deepcopy(self.cache)
            layers = getattr(cache, "layers", None)
            if layers:
                for layer_cache in layers:
                    _broadcast_layer(layer_cache, R)
            else:
                cache.batch_repeat_interleave(R)
            return cache
        return tuple(tuple(t.expand(R, *t.shape[1:]) for t in layer) for layer in self.cache)  # legacy tuples

    def patched_logits(self, R, patches_at):
        with NeuronHooks(self.family, patches_at(0)):
            values, hidden, _ = self._forward(input_ids=self.suffix.unsqueeze(0).expand(R, -1),
                                              past_key_values=self._expanded_cache(R), use_cache=True)
        return _RowOutputs(self._keep_scored(values), hidden=hidden)


@dataclass
class _Join:
    """Block l's FFN module and what its output meets for a row joining at its neuron site
    (clean pass, suffix positions): the residual stream r [1, T, H] and the tail after the FFN."""

    ffn: nn.Module
    residual: torch.Tensor
    tail: Callable[[torch.Tensor], torch.Tensor]


class _LayerSkipCausalRunner(_CachedCausalRunner):
    """Causal LMs, on top of the prefix cache: a row patched at layer l joins the batch at
    layer l's neuron site, with the clean model's values at the other suffix positions; its
    block output is r_l + tail(FFN output), r_l being the clean residual stream entering
    the FFN (:class:`amig_plugin.models.FFNJoin`). Blocks below l and the part of block l
    before the site (attention, norms, the FFN's input projections) never run for it: they
    are unchanged. Row 0 is the clean suffix, run from the embeddings (with the zero
    offsets δ_l when the clean row is asked for); each block's key/value cache is broadcast
    to the rows its attention sees. Families without an FFN join, or whose blocks do not
    match it on the clean pass, run on the plain prefix cache.
    """

    capture_joins = True

    @staticmethod
    def supported(cache) -> bool:
        return hasattr(cache, "layers") and all(hasattr(l, "batch_repeat_interleave") for l in cache.layers)

    def _capture_joins(self) -> dict | None:
        joins = [self.family.ffn_join(k) for k in range(self.family.num_layers)]
        if any(j is None for j in joins):
            return None
        seen = {"residual": {}, "ffn": {}, "out": {}, "joins": joins, "handles": []}

        def keep(kind, k, tensor):
            seen[kind].setdefault(k, tensor.detach())

        for k, (join, block) in enumerate(zip(joins, self.family.blocks())):
            seen["handles"] += [
                join.residual_input_of.register_forward_pre_hook(lambda _m, args, k=k: keep("residual", k, args[0])),
                join.ffn.register_forward_hook(lambda _m, _a, out, k=k: keep("ffn", k, out)),
                block.register_forward_hook(lambda _m, _a, out, k=k: keep("out", k, _layer_output(out))),
            ]
        return seen

    def _checked_joins(self, seen: dict, tp: int) -> list[_Join] | None:
        """The joins, once out = r + tail(ffn) holds on the clean pass at every block (to
        float rounding); None (whole blocks) where it does not."""
        out = []
        for k, join in enumerate(seen["joins"]):
            tensors = [seen[kind].get(k) for kind in ("residual", "ffn", "out")]
            if any(not isinstance(t, torch.Tensor) for t in tensors):
                return None
            residual, ffn, block_out = (t[:, tp:] for t in tensors)
            if residual.shape != block_out.shape or ffn.shape[:-1] != block_out.shape[:-1]:
                return None
            with torch.no_grad():
                expected = residual + join.tail(ffn)
            scale = float(block_out.abs().max()) or 1.0
            if float((expected - block_out).abs().max()) > 16 * torch.finfo(block_out.dtype).eps * scale:
                return None
            out.append(_Join(ffn=join.ffn, residual=residual, tail=join.tail))
        return out

    def logits(self, row_layers, z, clean_deltas=None):
        if self.joins is None or not self.supported(self.cache):  # legacy caches / unknown blocks
            return super().logits(row_layers, z, clean_deltas)
        order = torch.argsort(row_layers, stable=True)
        inverse = None
        if not torch.equal(order, torch.arange(order.numel(), device=order.device)):  # (IG's rows come sorted)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            row_layers, z = row_layers[order], z[order]
        blocks = self.family.blocks()
        L = len(blocks)
        counts = torch.bincount(row_layers, minlength=L).tolist()
        joining = dict(zip(range(L), torch.split(z, counts)))  # views: their backward is one cat
        entering = [1] * L  # rows entering block k: the clean row and those joined below k
        for k in range(1, L):
            entering[k] = entering[k - 1] + counts[k - 1]
        cache = copy.deepcopy(self.cache)
        for k, layer_cache in enumerate(cache.layers):
            if entering[k] > 1:
                _broadcast_layer(layer_cache, entering[k])
        deltas = clean_deltas or {}
        joined: dict[int, torch.Tensor] = {}  # FFN outputs of the rows joining block k
        handles = []

        def at_site(k: int, act: torch.Tensor) -> torch.Tensor:
            """act [A, T, W] -> the clean row offset by δ_k, then the rows joining here."""
            if k in deltas:  # (split, not slicing: a slice's backward writes a zero tensor of the whole)
                row0, others = act.split([1, act.shape[0] - 1])
                at_target, later = row0.split([1, row0.shape[1] - 1], dim=1)
                row0 = torch.cat([at_target + deltas[k].view(1, 1, -1).to(act.dtype), later], dim=1)
                act = torch.cat([row0, others])
            if counts[k]:
                values = joining[k].unsqueeze(1)  # [c, 1, W] at the target position
                rest = self.site_values[k][:, 1:]
                if rest.shape[1]:
                    values = torch.cat([values, rest.expand(values.shape[0], -1, -1)], dim=1)
                act = torch.cat([act, values.to(act.dtype)])
            return act

        def site_hook(k: int, side: str):
            if side == "input":
                return lambda _m, args: (at_site(k, args[0]),) + tuple(args[1:])
            return lambda _m, _args, output: at_site(k, output)

        def split_ffn(k: int):
            def hook(_m, _args, output):
                kept, joined[k] = output.split([entering[k], output.shape[0] - entering[k]])
                return kept
            return hook

        def join_block(k: int):
            def hook(_m, _args, output):
                hidden = _layer_output(output)
                extra = self.joins[k].residual + self.joins[k].tail(joined.pop(k))
                hidden = torch.cat([hidden, extra])
                return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden
            return hook

        try:
            for k in range(L):
                if k in deltas or counts[k]:
                    module, side = self.family.neuron_hook_module(k)
                    handles.append(module.register_forward_pre_hook(site_hook(k, side)) if side == "input"
                                   else module.register_forward_hook(site_hook(k, side)))
                if counts[k]:
                    handles.append(self.joins[k].ffn.register_forward_hook(split_ffn(k)))
                    handles.append(blocks[k].register_forward_hook(join_block(k)))
            values, hidden, _ = self._forward(input_ids=self.suffix.unsqueeze(0), past_key_values=cache, use_cache=True)
        finally:
            for h in handles:
                h.remove()
        return _RowOutputs(self._keep_scored(values), inverse=inverse, first_row=1,
                           clean_row=0 if clean_deltas is not None else None, hidden=hidden)


class _LayerSkipMaskedRunner(_RowRunner):
    """BERT: a row patched at layer l starts at the clean hidden state entering layer l
    (layers below are unchanged); rows join the batch at their own layer; the MLM head runs
    on the mask positions only."""

    def __init__(self, family, query, objective):
        super().__init__(family, query, objective)
        capture = {layer: [] for layer in range(family.num_layers)}
        with torch.no_grad(), NeuronHooks(family, capture=capture):
            out = self.model.bert(input_ids=self.ids.unsqueeze(0), output_hidden_states=True)
        self.hidden_in = out.hidden_states  # L+1 tensors [1, n, H]; [l] enters layer l
        self.score_positions = query.score_positions.to(self.device)
        self.clean_vectors = _stacked(capture, query.target_position, sorted(capture))[0]  # [L, W]
        mlm = family.mlm_transform_and_head()  # None: the model's own MLM head gives logits
        self.mlm_transform, self.head = mlm if mlm is not None else (None, None)

    def _mlm_outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(transformed hidden states at the score positions and True when the decoder is
        folded into the score, else (logits, False))."""
        h = h[:, self.score_positions]
        if self.mlm_transform is None:
            return self.model.cls(h), False
        return self.mlm_transform(h), True

    def clean_vectors_at(self, layers):
        return self.clean_vectors[list(layers)]

    def clean_score(self) -> float:
        with torch.no_grad():
            return float(self._score(*self._mlm_outputs(self.hidden_in[-1]))[0])

    def logits(self, row_layers, z, clean_deltas=None):
        order = torch.argsort(row_layers, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        sorted_layers = row_layers[order]
        z_sorted = z[order]
        blocks = self.family.blocks()
        h = None
        first = int(sorted_layers.min())
        if clean_deltas is not None:  # the clean row, row 0, enters at the lowest offset layer
            first = min(first, min(clean_deltas))
            h = self.hidden_in[first]
        for layer in range(first, len(blocks)):
            rows = torch.nonzero(sorted_layers == layer).squeeze(-1)
            patches = {}
            if clean_deltas is not None and layer in clean_deltas:
                patches = _offset_patches({layer: clean_deltas[layer]}, torch.tensor([0]), self.query.target_position)
            if rows.numel():
                start = self.hidden_in[layer].expand(rows.numel(), -1, -1)
                offset = 0 if h is None else h.shape[0]
                h = start if h is None else torch.cat([h, start], dim=0)
                values = z_sorted[rows]
                patches.setdefault(layer, []).append(_NeuronPatch(rows=torch.arange(rows.numel()) + offset,
                                                                  position=self.query.target_position,
                                                                  fn=lambda _o, v=values: v))
            with NeuronHooks(self.family, patches):
                h = _layer_output(blocks[layer](h))
        values, hidden = self._mlm_outputs(h)
        clean_row = 0 if clean_deltas is not None else None
        return _RowOutputs(values, inverse=inverse, clean_row=clean_row, first_row=int(clean_row is not None), hidden=hidden)

    def patched_logits(self, R, patches_at):
        patches = patches_at(self.query.target_position)
        blocks = self.family.blocks()
        first = min(patches) if patches else len(blocks)
        h = self.hidden_in[first].expand(R, -1, -1)
        for layer in range(first, len(blocks)):
            with NeuronHooks(self.family, {layer: patches[layer]} if layer in patches else {}):
                h = _layer_output(blocks[layer](h))
        values, hidden = self._mlm_outputs(h)
        return _RowOutputs(values, hidden=hidden)


def make_runner(family: ModelFamily, query: EncodedQuery, objective: str, strategy: str,
                need_clean: bool = False) -> _RowRunner:
    """The row evaluator for ``strategy``. ``need_clean``: the caller will ask for
    :meth:`_RowRunner.clean_vectors_at` (IG); interventions leave it False and skip that pass
    where it costs one (models whose cache cannot be cut)."""
    if strategy in ("cache", "layer_skip") and family.kind != "causal":
        raise ValueError(f"strategy {strategy!r} reuses a causal LM's prefix cache; {family.name} is a "
                         f"{family.kind} LM: use 'auto' (its own layer skipping) or 'full'")
    if strategy == "full" or (strategy in ("cache", "layer_skip") and query.target_position == 0):
        return _FullRunner(family, query, objective)  # (an empty prefix has nothing to cache)
    if strategy == "cache":  # prefix cache without layer skipping (for comparisons)
        return _CachedCausalRunner(family, query, objective, need_clean)
    if strategy == "layer_skip":
        return _LayerSkipCausalRunner(family, query, objective)
    if strategy != "auto":
        raise ValueError(f"unknown strategy {strategy!r}; use 'auto', 'layer_skip', 'cache' or 'full'")
    if family.kind == "causal" and query.target_position > 0:
        if not need_clean:  # interventions: whole-suffix passes on the prefix cache, no IG rows to skip layers for
            return _CachedCausalRunner(family, query, objective, need_clean=False)
        # IG: layer skipping (it falls back to the plain prefix cache where the cache can't be split)
        return _LayerSkipCausalRunner(family, query, objective)
    if family.kind == "masked" and hasattr(family.model, "bert") and hasattr(family.model, "cls"):
        return _LayerSkipMaskedRunner(family, query, objective)
    return _FullRunner(family, query, objective)


# ----------------------------------------------------------------------------------------
# activations and baselines


class _StopForward(Exception):
    """Raised by a hook once the last needed neuron vector is captured."""


@contextmanager
def _stop_after(family: ModelFamily, layer: int) -> Iterator[None]:
    """Abort the forward right after ``layer``'s neuron site (the blocks above and the LM
    head would be wasted work); the caller catches :class:`_StopForward`."""
    module, side = family.neuron_hook_module(layer)

    def stop(*_args):
        raise _StopForward

    handle = module.register_forward_pre_hook(stop) if side == "input" else module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def neuron_vectors(family: ModelFamily, input_ids: torch.Tensor, position: int, layers: Sequence[int], batch_size: int = 64) -> torch.Tensor:
    """Neuron vectors at ``position`` of every input row: input_ids [B, n] -> [B, L, W] float32.
    The forward stops at the last requested layer's neuron site."""
    out = []
    device = family.device()
    for start in range(0, input_ids.shape[0], batch_size):
        chunk = input_ids[start:start + batch_size].to(device)
        capture = {layer: [] for layer in layers}
        # NeuronHooks first: hooks run in registration order, so the capture precedes the stop
        with torch.no_grad(), NeuronHooks(family, capture=capture), _stop_after(family, max(layers)):
            try:
                family.model(input_ids=chunk[:, : position + 1] if family.kind == "causal" else chunk)
            except _StopForward:
                pass
        out.append(_stacked(capture, position, layers))
    return torch.cat(out, dim=0)


def masked_baseline_inputs(query: EncodedQuery, baseline_token_id: int) -> torch.Tensor:
    """[n', n]: row j = the input with prompt token ``baseline_positions[j]`` replaced."""
    positions = query.baseline_positions
    if positions.numel() == 0:
        raise ValueError(f"prompt {query.prompt!r} has no ordinary tokens to mask for AMIG's baseline")
    inputs = query.input_ids.unsqueeze(0).repeat(positions.numel(), 1)
    inputs[torch.arange(positions.numel()), positions] = baseline_token_id
    return inputs


# ----------------------------------------------------------------------------------------
# public API


def attribute_query(
    family: ModelFamily,
    query: EncodedQuery,
    tokenizer=None,
    *,
    method: Method = "amig",
    steps: int = DEFAULT_STEPS,
    objective: Objective = "prob",
    layers: Sequence[int] | None = None,
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
    quadrature: Quadrature = DEFAULT_QUADRATURE,
    amig_mode: str = "mean",
    strategy: str = "auto",
    progress: bool = False,
) -> AttributionResult:
    """IG attributions for an already encoded query (see :func:`neuron_attributions`)."""
    method = _validate(method, objective, steps, quadrature, amig_mode, ig_batch_size)
    layers = list(range(family.num_layers)) if layers is None else [family.check_layer(l) for l in layers]
    if not layers:
        raise ValueError("layers is empty; give at least one layer index or None for all")
    model = family.model
    tp = query.target_position
    with frozen_eval(model), family.fused_activations():
        runner = make_runner(family, query, objective, strategy, need_clean=True)
        activations = runner.clean_vectors_at(layers)  # [L, W]
        clean = None  # F(a): from the clean row where one runs
        if method == "kn":
            per_baseline = torch.zeros_like(activations).unsqueeze(0)  # [1, L, W]
        else:
            if tokenizer is None:
                raise ValueError("AMIG needs the tokenizer (for its [MASK]/EOS baseline token)")
            inputs = masked_baseline_inputs(query, family.baseline_token_id(tokenizer))
            per_baseline = neuron_vectors(family, inputs, tp, layers, batch_size=ig_batch_size)  # [n', L, W]
            if amig_mode == "mean":
                per_baseline = per_baseline.mean(0, keepdim=True)

        alphas, weights = quadrature_rule(steps, quadrature)
        alphas = alphas.float()
        n_base, L, W = per_baseline.shape
        layer_ids = torch.tensor(layers)
        diff = activations.unsqueeze(0) - per_baseline  # [B, L, W]
        path = per_baseline.unsqueeze(2) + alphas.view(1, 1, -1, 1) * diff.unsqueeze(2)  # [B, L, m, W]
        # Path points at α = 1 are the clean input for every layer and baseline: one clean
        # row with an offset at every layer gives all their gradients (linspace, right).
        # Path points at α = 0 are the baseline endpoints, whose scores F(a') the
        # completeness check needs; without one, endpoint rows are added (after the path).
        # The extra rows ride along (the clean row in the first batch, which holds the lowest
        # layers' rows, so it never runs alone through a block; endpoint rows in the last):
        # a batch of their own would cost a whole extra pass over the weights.
        at_clean = alphas == 1.0
        zero_step = int(torch.nonzero(alphas == 0.0)[0]) if bool((alphas == 0.0).any()) else None
        kept_steps = torch.nonzero(~at_clean).squeeze(-1)  # path points that need their own row
        n_path = n_base * L * kept_steps.numel()
        row_layers = layer_ids.view(1, L, 1).expand(n_base, L, kept_steps.numel()).reshape(-1)
        rows = path[:, :, kept_steps].reshape(-1, W)
        if zero_step is None:
            rows = torch.cat([rows, per_baseline.reshape(-1, W)])
            row_layers = torch.cat([row_layers, layer_ids.view(1, L).expand(n_base, L).reshape(-1)])
        grads = torch.empty(n_base, L, steps, W, device=activations.device)
        kept_grads = torch.empty(n_path, W, device=activations.device)
        scores = torch.empty(rows.shape[0])
        clean_grads = None
        batches = list(range(0, rows.shape[0], ig_batch_size))
        for start in tqdm(batches, desc="IG", disable=not progress, leave=False):
            stop = min(start + ig_batch_size, rows.shape[0])
            is_path = torch.arange(start, stop) < n_path
            out = runner.run(row_layers[start:stop], rows[start:stop], need_grad=bool(is_path.any()),
                             grad_rows=None if bool(is_path.all()) else is_path,
                             clean_layers=layers if (start == 0 and bool(at_clean.any())) else None)
            scores[start:stop] = out.scores.float().cpu()
            if out.grads is not None:
                kept_grads[start:min(stop, n_path)] = out.grads[is_path.to(out.grads.device)].to(kept_grads.device)
            if out.clean_grads is not None:
                clean_grads = out.clean_grads.to(grads.device)  # [L, W]
                clean = out.clean_score
        if clean is None:
            clean = runner.clean_score()
        grads[:, :, kept_steps] = kept_grads.view(n_base, L, kept_steps.numel(), W)
        if clean_grads is not None:
            grads[:, :, at_clean] = clean_grads.view(1, L, 1, W)
        if zero_step is None:
            end_scores = scores[n_path:].view(n_base, L)
        else:
            position = int(torch.nonzero(kept_steps == zero_step)[0])
            end_scores = scores[:n_path].view(n_base, L, kept_steps.numel())[:, :, position]
        mean_grad = torch.einsum("blmw,m->blw", grads, weights.to(grads.device, grads.dtype))  # Σ_k w_k ∂F/∂z
        attributions = (diff * mean_grad).mean(0)  # average over baselines (1 unless per_position)
        baseline_scores = end_scores.mean(0)
    return AttributionResult(
        attributions=attributions.float().cpu(),
        layers=layers,
        activations=activations.cpu(),
        baselines=per_baseline.mean(0).cpu(),
        score=clean,
        baseline_scores=baseline_scores.float(),
        method=method,
        objective=objective,
        steps=steps,
        quadrature=quadrature,
        amig_mode=amig_mode if method == "amig" else "-",
        prompt=query.prompt,
        target=query.target,
        target_ids=query.target_ids.tolist(),
        num_baseline_inputs=int(query.baseline_positions.numel()) if method == "amig" else 0,
    )


def refine_unconverged(
    family: ModelFamily,
    query: EncodedQuery,
    result: AttributionResult,
    tokenizer=None,
    *,
    max_steps: int = 96,
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
    strategy: str = "auto",
) -> AttributionResult:
    """``result`` with its unconverged layers re-attributed by the ``steep`` rule at doubling
    m (from max(2m, 24)) until each is within ``result.tolerance`` or m would exceed
    ``max_steps``. Per-layer IG is independent across layers, so only those layers run again;
    ``refined`` records the rule each replaced layer got. Converged results come back as is."""
    steps = max(2 * result.steps, 24)
    while not result.converged and steps <= max_steps:
        todo = result.unconverged_layers
        again = attribute_query(family, query, tokenizer, method=result.method, steps=steps,
                                objective=result.objective, layers=todo, ig_batch_size=ig_batch_size,
                                quadrature="steep", amig_mode=result.amig_mode if result.method == "amig" else "mean",
                                strategy=strategy)
        rows = [result.layers.index(layer) for layer in todo]
        attributions, baselines = result.attributions.clone(), result.baselines.clone()
        baseline_scores = result.baseline_scores.clone()
        attributions[rows], baselines[rows] = again.attributions, again.baselines
        baseline_scores[rows] = again.baseline_scores
        refined = {**result.refined, **{layer: f"steep/{steps}" for layer in todo}}
        result = replace(result, attributions=attributions, baselines=baselines, baseline_scores=baseline_scores,
                         refined=refined)
        steps *= 2
    return result


def neuron_attributions(
    model: nn.Module | ModelFamily,
    tokenizer,
    prompt: str,
    target: str,
    *,
    method: Method = "amig",
    steps: int = DEFAULT_STEPS,
    objective: Objective = "prob",
    layers: Sequence[int] | None = None,
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
    quadrature: Quadrature = DEFAULT_QUADRATURE,
    amig_mode: str = "mean",
    neuron_site: str = "ffn_hidden",
    strategy: str = "auto",
    progress: bool = False,
) -> AttributionResult:
    """Integrated-gradients attribution of ``target`` after ``prompt`` to every FFN neuron.

    ``prompt`` holds ``<mask>`` where the target goes (required for masked LMs; for causal
    LMs the prompt is cut there, or used as the prefix when it has no mask). Returns an
    :class:`AttributionResult` with ``attributions`` [L, W] and the completeness residual.
    """
    family = get_family(model, neuron_site=neuron_site)
    query = family.encode(tokenizer, prompt, target)
    return attribute_query(
        family, query, tokenizer, method=method, steps=steps, objective=objective, layers=layers,
        ig_batch_size=ig_batch_size, quadrature=quadrature, amig_mode=amig_mode, strategy=strategy,
        progress=progress,
    )
