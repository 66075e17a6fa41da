"""The public IG entry points: :func:`attribute_query` (an encoded query), :func:`neuron_attributions`
(a prompt and target) and :func:`refine_unconverged` (re-running the layers whose completeness
residual exceeds the tolerance with a finer rule). The path points come from the quadrature
rule; how their rows run is the execution strategy's business (:func:`make_runner`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..defaults import (ADAPTIVE_MAX_STEPS, ADAPTIVE_MIN_GAIN, ADAPTIVE_TOLERANCE, DEFAULT_IG_BATCH_SIZE,
                        DEFAULT_QUADRATURE, DEFAULT_RESIDUAL_TOLERANCE, DEFAULT_STEPS)
from ..models import EncodedQuery, ModelFamily, get_family
from .activations import frozen_eval, masked_baseline_inputs, neuron_vectors
from .quadrature import QUADRATURES, Quadrature, quadrature_rule
from .result import AMIG_MODES, METHODS, OBJECTIVES, AttributionResult, Method, Objective, layer_relative_residuals
from .strategies import make_runner


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
        if method == "kn":
            per_baseline = torch.zeros_like(activations).unsqueeze(0)  # [1, L, W]
        else:
            if tokenizer is None:
                raise ValueError("AMIG needs the tokenizer (for its [MASK]/EOS baseline token)")
            inputs = masked_baseline_inputs(query, family.baseline_token_id(tokenizer))
            per_baseline = neuron_vectors(family, inputs, tp, layers, batch_size=ig_batch_size)  # [n', L, W]
            if amig_mode == "mean":
                per_baseline = per_baseline.mean(0, keepdim=True)

        attributions, baseline_scores, clean = _integrate(runner, layers, activations, per_baseline,
                                                          *quadrature_rule(steps, quadrature), ig_batch_size, progress)
        refined: dict = {}
        refined_points = 0
        if quadrature == "gauss-adaptive":
            jump_at_zero = method == "kn" and family.ffn_output_normalized()
            refined_points = _refine_adaptively(runner, layers, activations, per_baseline, steps, ig_batch_size,
                                                attributions, baseline_scores, clean, refined, jump_at_zero)
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
        refined=refined,
        refined_points=refined_points,
        prompt=query.prompt,
        target=query.target,
        target_ids=query.target_ids.tolist(),
        num_baseline_inputs=int(query.baseline_positions.numel()) if method == "amig" else 0,
    )


def _integrate(runner, layers: list[int], activations: torch.Tensor, per_baseline: torch.Tensor,
               alphas: torch.Tensor, weights: torch.Tensor, ig_batch_size: int, progress: bool = False,
               scores_known: bool = False):
    """IG of ``layers`` (rows of ``activations`` [L, W] and ``per_baseline`` [B, L, W]) under the
    rule (α_k, w_k): attributions [L, W] = mean_b (a − a'_b) ⊙ Σ_k w_k ∂F/∂z(a'_b + α_k (a − a'_b)),
    the baseline scores F(a'_l) [L] and the clean score F(a). ``scores_known``: the caller has
    both scores already (a refinement): no endpoint rows, and (None, None) in their place."""
    alphas = alphas.float()
    steps = alphas.numel()
    clean = None  # F(a): from the clean row, which rides along in the first batch
    layer_ids = torch.tensor(layers)
    n_base, L, W = per_baseline.shape
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
    if zero_step is None and not scores_known:
        rows = torch.cat([rows, per_baseline.reshape(-1, W)])
        row_layers = torch.cat([row_layers, layer_ids.view(1, L).expand(n_base, L).reshape(-1)])
    clean_row = None if scores_known else (layers if bool(at_clean.any()) else [])  # [] = F(a) only
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
                         clean_layers=clean_row if start == 0 else None)
        scores[start:stop] = out.scores.float().cpu()
        if out.grads is not None:
            kept_grads[start:min(stop, n_path)] = out.grads[is_path.to(out.grads.device)].to(kept_grads.device)
        if out.clean_grads is not None:
            clean_grads = out.clean_grads.to(grads.device)  # [L, W]
        if out.clean_score is not None:
            clean = out.clean_score
    grads[:, :, kept_steps] = kept_grads.view(n_base, L, kept_steps.numel(), W)
    if clean_grads is not None:
        grads[:, :, at_clean] = clean_grads.view(1, L, 1, W)
    if scores_known:
        end_scores = None
    elif zero_step is None:
        end_scores = scores[n_path:].view(n_base, L)
    else:
        position = int(torch.nonzero(kept_steps == zero_step)[0])
        end_scores = scores[:n_path].view(n_base, L, kept_steps.numel())[:, :, position]
    mean_grad = torch.einsum("blmw,m->blw", grads, weights.to(grads.device, grads.dtype))  # Σ_k w_k ∂F/∂z
    attributions = (diff * mean_grad).mean(0)  # average over baselines (1 unless per_position)
    baseline_scores = None if end_scores is None else end_scores.mean(0)
    return attributions, baseline_scores, clean


def _refine_adaptively(runner, layers: list[int], activations: torch.Tensor, per_baseline: torch.Tensor,
                       steps: int, ig_batch_size: int, attributions: torch.Tensor, baseline_scores: torch.Tensor,
                       clean: float, refined: dict, jump_at_zero: bool = False) -> int:
    """The ``gauss-adaptive`` rule, in place: every layer first took Gauss-Legendre at ``steps``
    points; a layer whose relative completeness residual exceeds the tolerance is integrated
    again at twice the points, and again, up to ADAPTIVE_MAX_STEPS. A layer stops when its
    residual falls below the tolerance or no longer halves: then what is left is not
    quadrature error and more points would be spent for nothing. A refinement whose residual is
    larger than the one it would replace is discarded (Gauss-Legendre is not monotone in m on a
    near-step path, and a worse rule must not win because it came later).

    ``jump_at_zero`` (the zero baseline behind an FFN output with a norm of its own, Gemma-2/3):
    the path jumps at α ≈ 0, which Gauss-Legendre does not resolve at any m, so those layers are
    refined with the ``steep`` rule from max(2m, 24) points, to the guard's tolerance
    (DEFAULT_RESIDUAL_TOLERANCE): the unresolved part of the jump leaves a residual floor
    (Gemma-3: 3.7e-3 at 24 and at 42 points) that no rule removes. ``refined`` gets
    layer -> "<rule>/<m>" of the rule kept. Returns the path points the refinements ran."""
    rule, tolerance = ("steep", DEFAULT_RESIDUAL_TOLERANCE) if jump_at_zero else ("gauss", ADAPTIVE_TOLERANCE)
    todo = list(range(len(layers)))
    previous = None
    m = steps
    spent = 0
    delta = clean - baseline_scores
    while todo:
        m = max(2 * m, 24) if rule == "steep" and m == steps else 2 * m
        if m > ADAPTIVE_MAX_STEPS:
            break
        rel = layer_relative_residuals(attributions.sum(-1) - delta, delta, score=clean)
        todo = [i for i in todo if rel[i] > tolerance
                and (previous is None or rel[i] <= ADAPTIVE_MIN_GAIN * previous[i])]
        if not todo:
            break
        previous = rel
        again, _, _ = _integrate(runner, [layers[i] for i in todo], activations[todo], per_baseline[:, todo],
                                 *quadrature_rule(m, rule), ig_batch_size, scores_known=True)
        spent += m * len(todo)
        trial = attributions.clone()
        trial[todo] = again
        new_rel = layer_relative_residuals(trial.sum(-1) - delta, delta, score=clean)
        better = [k for k, i in enumerate(todo) if new_rel[i] <= rel[i]]  # a worse rule is not kept
        attributions[[todo[k] for k in better]] = again[better]
        refined.update({layers[todo[k]]: f"{rule}/{m}" for k in better})
        todo = [todo[k] for k in better]
    return spent


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
                         refined=refined, refined_points=result.refined_points + steps * len(todo))
        steps *= 2
    return result


def neuron_attributions(
    model: nn.Module | ModelFamily,
    tokenizer,
    prompt: str,
    target: str,
    *,
    neuron_site: str = "ffn_hidden",
    **options,
) -> AttributionResult:
    """Integrated-gradients attribution of ``target`` after ``prompt`` to every FFN neuron.

    ``prompt`` holds ``<mask>`` where the target goes (required for masked LMs; for causal
    LMs the prompt is cut there, or used as the prefix when it has no mask). Returns an
    :class:`AttributionResult` with ``attributions`` [L, W] and the completeness residual.
    ``options`` are :func:`attribute_query`'s keywords, with its defaults: ``method``,
    ``steps``, ``objective``, ``layers``, ``ig_batch_size``, ``quadrature``, ``amig_mode``,
    ``strategy``, ``progress``.
    """
    family = get_family(model, neuron_site=neuron_site)
    query = family.encode(tokenizer, prompt, target)
    return attribute_query(family, query, tokenizer, **options)
