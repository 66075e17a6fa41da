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
|Σ_i IG_i − ΔF_l| / max(|ΔF_l|, ε · max_l' |ΔF_l'|, 1e-4 · |F(a)|) (ε = ``RESIDUAL_FLOOR``, so
a layer whose ΔF is ~0 is judged against a small fraction of the largest layer's instead of 0,
and nothing against less than the float32 noise of the scores, ``FLOAT_NOISE``) and is
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

Modules (imports run downwards only: ``ig`` -> ``strategies`` -> ``layer_skip`` ->
``prefix_cache`` -> ``rows`` -> ``activations``; ``quadrature`` and ``result`` stand alone):

* ``result``       :class:`AttributionResult` and the completeness residuals; method names.
* ``quadrature``   the rules (α_k, w_k): Riemann, Gauss-Legendre, ``steep``.
* ``activations``  clean neuron vectors, AMIG's masked baseline inputs, :func:`frozen_eval`.
* ``ig``           the public entry points :func:`attribute_query`, :func:`neuron_attributions`,
                   :func:`refine_unconverged` (the IG sum over path points and baselines).
* execution strategies (how the path-point rows run; same numbers, different cost):
  ``rows`` (the runner interface and the whole-model reference), ``prefix_cache`` (causal
  LMs' shared prefix key/value cache), ``layer_skip`` (rows joining at their own layer),
  ``strategies`` (:func:`make_runner`: which runner for ``strategy``).
"""

from ..defaults import (DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_RESIDUAL_TOLERANCE, DEFAULT_STEPS,
                        QUADRATURE_NAMES, RESIDUAL_FLOOR)
from ..models import EncodedQuery, ModelFamily, NeuronHooks, get_family
from ..scoring import LMHead, head_scores, target_scores
from .activations import frozen_eval, masked_baseline_inputs, neuron_vectors
from .ig import attribute_query, neuron_attributions, refine_unconverged
from .quadrature import (QUADRATURES, STEEP_PANEL_POINTS, STEEP_PANEL_RATIO, Quadrature, gauss_legendre, path_alphas,
                         quadrature_rule, steep_rule)
from .result import (AMIG_MODES, FLOAT_NOISE, METHODS, OBJECTIVES, AttributionResult, Method, Objective,
                     layer_relative_residuals)
from .rows import RowResult
from .strategies import make_runner

__all__ = [
    "AMIG_MODES", "AttributionResult", "FLOAT_NOISE", "METHODS", "Method", "OBJECTIVES", "Objective",
    "QUADRATURES", "Quadrature", "RowResult", "STEEP_PANEL_POINTS", "STEEP_PANEL_RATIO",
    "attribute_query", "frozen_eval", "gauss_legendre", "layer_relative_residuals", "make_runner",
    "masked_baseline_inputs", "neuron_attributions", "neuron_vectors", "path_alphas", "quadrature_rule",
    "refine_unconverged", "steep_rule",
    # names this module has always passed on from models, scoring and defaults
    "DEFAULT_IG_BATCH_SIZE", "DEFAULT_QUADRATURE", "DEFAULT_RESIDUAL_TOLERANCE", "DEFAULT_STEPS", "EncodedQuery",
    "LMHead", "ModelFamily", "NeuronHooks", "QUADRATURE_NAMES", "RESIDUAL_FLOOR", "get_family", "head_scores",
    "target_scores",
]
