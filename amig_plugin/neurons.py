"""Selecting knowledge neurons from attributions, and the saved result.

Selection (Dai et al. 2022; Chen et al. 2024):
  1. per prompt, keep neuron (l, i) when IG_{l,i} > τ · max_{l', i'} IG_{l', i'} (max over
     all attributed layers); τ per language: 0.3 en, 0.2 zh (the paper), 0.2 otherwise;
  2. with several prompts of the same fact, keep the neurons selected for more than a
     fraction p of the prompts (``share_p``; Dai et al. use 0.7).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .attribution import AttributionResult, attribute_query, refine_unconverged
from .defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_RESIDUAL_TOLERANCE, DEFAULT_STEPS
from .errors import AmigError

ON_UNCONVERGED = ("warn", "refine", "refuse")


class UnconvergedError(AmigError, ArithmeticError):
    """An IG result whose completeness residual exceeds the tolerance, where it was refused."""
from .models import ModelFamily, get_family

Neuron = tuple[int, int]  # (layer, index in the FFN hidden vector)

DEFAULT_TAU = {"en": 0.3, "zh": 0.2}
FALLBACK_TAU = 0.2


def default_tau(lang: str | None) -> float:
    """The paper's τ: 0.3 for English, 0.2 for Chinese, 0.2 for any other language."""
    return DEFAULT_TAU.get((lang or "").lower(), FALLBACK_TAU)


def check_tau(tau: float) -> float:
    if not isinstance(tau, (int, float)) or not 0.0 < float(tau) <= 1.0:
        raise ValueError(f"tau must lie in (0, 1] (a fraction of the maximum attribution), got {tau!r}")
    return float(tau)


def threshold_neurons(attributions: torch.Tensor, layers: Sequence[int], tau: float) -> list[tuple[Neuron, float]]:
    """[(neuron, score)] with score > τ · max over all layers, best first.

    attributions: [L, W], row r ↔ ``layers[r]``. Empty when no attribution is positive.
    """
    tau = check_tau(tau)
    if attributions.dim() != 2 or attributions.shape[0] != len(layers):
        raise ValueError(f"attributions must be [len(layers), W], got {tuple(attributions.shape)} for {len(layers)} layers")
    top = float(attributions.max())
    if top <= 0:
        return []
    rows, cols = torch.nonzero(attributions > tau * top, as_tuple=True)
    picked = [((int(layers[r]), int(c)), float(attributions[r, c])) for r, c in zip(rows.tolist(), cols.tolist())]
    return sorted(picked, key=lambda item: -item[1])


def top_k_neurons(attributions: torch.Tensor, layers: Sequence[int], k: int) -> list[tuple[Neuron, float]]:
    """The k neurons with the largest attribution over all layers, best first."""
    flat = attributions.flatten()
    if not 0 < k <= flat.numel():
        raise ValueError(f"k={k} must lie in 1..{flat.numel()} (number of attributed neurons)")
    values, idx = torch.topk(flat, k)
    W = attributions.shape[1]
    return [((int(layers[i // W]), int(i % W)), float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def shared_neurons(per_prompt: Sequence[Sequence[Neuron]], share_p: float) -> list[Neuron]:
    """Neurons selected for more than ``share_p`` of the prompts (count > p · n_prompts)."""
    if not 0.0 <= share_p < 1.0:
        raise ValueError(f"share_p must lie in [0, 1), got {share_p!r}")
    counts = Counter(n for neurons in per_prompt for n in set(neurons))
    need = share_p * len(per_prompt)
    return sorted(n for n, c in counts.items() if c > need)


@dataclass
class KnowledgeNeurons:
    """A fact's knowledge neurons in one language, with everything needed to reproduce them."""

    neurons: list[Neuron]
    scores: list[float]
    target: str
    prompts: list[str]
    lang: str | None = None
    fact_id: str | None = None
    method: str = "amig"
    model_id: str = ""
    settings: dict = field(default_factory=dict)
    per_prompt: list[list[Neuron]] = field(default_factory=list)
    completeness_residuals: list[float] = field(default_factory=list)
    #: per prompt, per attributed layer: |Σ IG − ΔF_l| / max(|ΔF_l|, floor · max |ΔF|)
    layer_relative_residuals: list[list[float]] = field(default_factory=list)
    residual_tolerance: float = DEFAULT_RESIDUAL_TOLERANCE
    clean_scores: list[float] = field(default_factory=list)
    top: list[list] = field(default_factory=list)  # [[layer, index, mean attribution], ...] best first

    def top_neurons(self, k: int) -> list[Neuron]:
        """The k best neurons by mean attribution (from ``top``, recorded by :func:`localize`)."""
        if k > len(self.top):
            raise ValueError(f"only {len(self.top)} top neurons were recorded; localize with top_k >= {k}")
        return [(int(l), int(i)) for l, i, _ in self.top[:k]]

    def __post_init__(self):
        self.neurons = [tuple(int(x) for x in n) for n in self.neurons]
        self.per_prompt = [[tuple(int(x) for x in n) for n in ns] for ns in self.per_prompt]

    def __len__(self) -> int:
        return len(self.neurons)

    @property
    def relative_residual(self) -> float | None:
        """The worst layer's relative residual over the prompts (None: a record from before it was kept)."""
        values = [r for rs in self.layer_relative_residuals for r in rs]
        return max(values) if values else None

    @property
    def converged(self) -> bool | None:
        """Every prompt's every layer within ``residual_tolerance`` (None: not recorded)."""
        worst = self.relative_residual
        return None if worst is None else worst <= self.residual_tolerance

    @property
    def unconverged_layers(self) -> list[int]:
        layers = self.settings.get("layers") or []
        return sorted({layers[i] for rs in self.layer_relative_residuals for i, r in enumerate(rs)
                       if not r <= self.residual_tolerance and i < len(layers)})

    def layer_counts(self) -> Counter:
        return Counter(layer for layer, _ in self.neurons)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neurons"] = [list(n) for n in self.neurons]
        d["per_prompt"] = [[list(n) for n in ns] for ns in self.per_prompt]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "KnowledgeNeurons":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown or "neurons" not in d:
            raise ValueError(f"not a KnowledgeNeurons record: unknown keys {sorted(unknown)}, expected {sorted(known)}")
        return cls(**d)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KnowledgeNeurons":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def model_id(model: nn.Module) -> str:
    model = getattr(model, "model", model) if isinstance(model, ModelFamily) else model
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def localize(
    model: nn.Module | ModelFamily,
    tokenizer,
    prompts: str | Sequence[str],
    target: str,
    *,
    lang: str | None = None,
    method: str = "amig",
    tau: float | None = None,
    share_p: float = 0.7,
    steps: int = DEFAULT_STEPS,
    objective: str = "prob",
    quadrature: str = DEFAULT_QUADRATURE,
    amig_mode: str = "mean",
    layers: Sequence[int] | None = None,
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
    fact_id: str | None = None,
    top_k: int = 50,
    progress: bool = False,
    return_attributions: bool = False,
    on_unconverged: str = "warn",
    refine_max_steps: int = 96,
):
    """A fact's knowledge neurons: IG per prompt, τ·max threshold, sharing filter.

    Scores of the kept neurons are their mean attribution over the prompts; the ``top_k``
    best neurons by that mean are recorded too (for DKN's top-k and plots). With
    ``return_attributions=True`` returns ``(KnowledgeNeurons, [AttributionResult, ...])``.
    ``on_unconverged``: a prompt whose IG has a layer above the residual tolerance is kept and
    flagged (``warn``, the record's ``converged`` is False), re-attributed on those layers with
    the steep rule up to ``refine_max_steps`` points (``refine``), or raises
    :class:`UnconvergedError` (``refuse``).
    """
    if on_unconverged not in ON_UNCONVERGED:
        raise ValueError(f"on_unconverged must be one of {ON_UNCONVERGED}, got {on_unconverged!r}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt with '<mask>' where the target goes")
    tau = default_tau(lang) if tau is None else check_tau(tau)
    family = get_family(model)
    results: list[AttributionResult] = []
    for prompt in tqdm(prompts, desc="prompts", disable=not progress or len(prompts) == 1, leave=False):
        query = family.encode(tokenizer, prompt, target)
        result = attribute_query(
            family, query, tokenizer, method=method, steps=steps, objective=objective, layers=layers,
            ig_batch_size=ig_batch_size, quadrature=quadrature, amig_mode=amig_mode, progress=progress,
        )
        if not result.converged and on_unconverged == "refine":
            result = refine_unconverged(family, query, result, tokenizer, max_steps=refine_max_steps,
                                        ig_batch_size=ig_batch_size)
        if not result.converged and on_unconverged == "refuse":
            raise UnconvergedError(
                f"IG of {prompt!r} -> {target!r} ({method}, {quadrature}/{steps}) is unconverged: relative "
                f"completeness residual {result.relative_residual:.3g} > {result.tolerance} at layers "
                f"{result.unconverged_layers}; use the steep quadrature, more steps, or on_unconverged='refine'")
        results.append(result)
    per_prompt = [[n for n, _ in threshold_neurons(r.attributions, r.layers, tau)] for r in results]
    kept = per_prompt[0] if len(per_prompt) == 1 else shared_neurons(per_prompt, share_p)
    mean_attr = torch.stack([r.attributions for r in results]).mean(0)
    row = {layer: i for i, layer in enumerate(results[0].layers)}
    scored = sorted(((n, float(mean_attr[row[n[0]], n[1]])) for n in kept), key=lambda item: -item[1])
    kn = KnowledgeNeurons(
        neurons=[n for n, _ in scored],
        scores=[s for _, s in scored],
        target=target,
        prompts=prompts,
        lang=lang,
        fact_id=fact_id,
        method=results[0].method,
        model_id=model_id(family.model),
        settings=dict(tau=tau, share_p=share_p, steps=steps, objective=objective, quadrature=quadrature,
                      amig_mode=results[0].amig_mode, layers=results[0].layers, neuron_site=family.neuron_site,
                      **({"on_unconverged": on_unconverged} if on_unconverged == "refine" else {})),
        per_prompt=per_prompt,
        completeness_residuals=[r.max_abs_residual for r in results],
        layer_relative_residuals=[[round(x, 6) for x in r.layer_relative_residuals.tolist()] for r in results],
        residual_tolerance=results[0].tolerance,
        clean_scores=[r.score for r in results],
        top=[[l, i, s] for (l, i), s in top_k_neurons(mean_attr, results[0].layers, min(top_k, mean_attr.numel()))],
    )
    return (kn, results) if return_attributions else kn
