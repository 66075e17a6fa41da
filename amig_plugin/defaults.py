"""Defaults shared by the engine, the CLI, the EasyEdit hparams and run configs (no torch
import here: the CLI and the hparams validation read them before any model is loaded)."""

#: Path points per forward/backward batch of the IG engine. An execution setting: it changes
#: speed and memory, never the attributions (caches and stores leave it out of their keys).
#: Each batch reads every weight twice, and for causal LMs one batch that holds all of a
#: fact's path points (m = 20 x 12 GPT-2-small layers = 240 rows) never runs a block on a
#: single row; 256 rows of Gemma-3-270M's 262k-token vocabulary take 268 MB.
DEFAULT_IG_BATCH_SIZE = 256

#: Version of the attribution and selection algorithms (IG engine, AMIG baselines, τ/sharing
#: selection, DKN detection). Part of every cache key: raise it whenever a change alters the
#: neurons or scores a localization returns, so records computed before are never served.
ATTRIBUTION_VERSION = 2

#: IG path points m and the quadrature rule (:func:`amig_plugin.attribution.quadrature_rule`)
#: used wherever none is given: the engine, the CLI, EasyEdit hparams, run configs and studies.
#: Both are part of every result's key (caches and stores keep results of other rules apart).
#: ``gauss-adaptive`` from 6 points: Gauss-Legendre at 6 points on every layer, and twice the
#: points, again and again, on the layers whose relative completeness residual stays above
#: ADAPTIVE_TOLERANCE. The cheapest rule of ``benchmarks/ig_accuracy.py`` whose error against a
#: 256-point reference is at most the paper's midpoint m = 20's on every converged case
#: (GPT-2-, BERT- and Llama-style models and Gemma-3-270M on four facts in en and zh, AMIG and
#: KN), see docs/performance.md. Plain Gauss-Legendre needs 12 points for that (8 fail Gemma-3
#: in Chinese): the steep part of a path sits in one or two layers, which alone get more points.
DEFAULT_STEPS = 6
DEFAULT_QUADRATURE = "gauss-adaptive"

#: The engine's quadrature rules (``amig_plugin.attribution.quadrature_rule``), for validation
#: before torch is imported.
QUADRATURE_NAMES = ("midpoint", "left", "right", "linspace", "gauss", "steep", "gauss-adaptive")

#: The ``gauss-adaptive`` rule: Gauss-Legendre at m points on every layer, then, on the layers whose
#: relative completeness residual exceeds ADAPTIVE_TOLERANCE, 2m, 4m, … points up to
#: ADAPTIVE_MAX_STEPS, while each doubling at least halves (ADAPTIVE_MIN_GAIN) the residual.
ADAPTIVE_TOLERANCE = 5e-4
ADAPTIVE_MAX_STEPS = 64
ADAPTIVE_MIN_GAIN = 0.5

#: The rest of a localization's defaults (:class:`amig_plugin.localization.LocalizationSettings`,
#: :func:`amig_plugin.neurons.localize`, run configs): a neuron must pass τ in more than this
#: share of a fact's prompts, the score is P(target) (the paper's), AMIG's baseline is the mean
#: over masked inputs, and the best 50 neurons are kept in every record (DKN's top-k, plots).
DEFAULT_SHARE_P = 0.7
DEFAULT_OBJECTIVE = "prob"
DEFAULT_AMIG_MODE = "mean"
DEFAULT_TOP_K = 50

#: A result is converged when every layer's relative completeness residual
#: |Σ IG − ΔF_l| / max(|ΔF_l|, RESIDUAL_FLOOR · max_l |ΔF_l|) is at most this.
DEFAULT_RESIDUAL_TOLERANCE = 0.05

#: Layers whose ΔF is below this fraction of the largest layer's are judged against that
#: fraction instead (a relative residual of a ΔF ~ 0 would be noise over noise).
RESIDUAL_FLOOR = 0.01

#: ΔF below this fraction of |F(a)| is within float32 noise: residuals are judged against at least
#: this. F(a) and F(a'_l) come from different rows and batches, and Σ_i IG_i sums thousands of float32
#: terms; on a random-weight BERT-tiny (P(target) 3.6e-4, ΔF ~ 1e-8 per layer) that noise reached
#: 2e-6 · F, a "residual" of 7 % of ΔF for attributions whose error against a 256-point reference is
#: 3e-7. A layer whose whole effect is under 1e-4 of F is then judged to 5e-6 · F.
FLOAT_NOISE = 1e-4

#: τ (a neuron is selected when its attribution exceeds τ · max) for AMIG, per language: the
#: paper's 0.3 for English and 0.2 for Chinese; other languages use :data:`FALLBACK_TAU`.
DEFAULT_TAU = {"en": 0.3, "zh": 0.2}
FALLBACK_TAU = 0.2
#: Dai et al.'s τ for their zero-baseline KN (every language).
KN_TAU = 0.2


def default_tau(lang: "str | None", method: str = "amig") -> float:
    """τ when none is given: KN 0.2 (Dai et al.); AMIG the paper's 0.3 for English, 0.2 for
    Chinese, 0.2 for any other language. ``lang`` is a code such as ``en`` or ``zh-CN``
    (the part before ``-`` counts, case-insensitive)."""
    if method == "kn":
        return KN_TAU
    return DEFAULT_TAU.get((lang or "").split("-")[0].lower(), FALLBACK_TAU)

#: The method labels ``amig compare`` runs by default (each a folder of YAMLs under ``hparams/``).
DEFAULT_COMPARE_METHODS = ("AMIG", "KN", "ROME", "MEMIT", "FT-L")
