"""Selecting knowledge neurons from attributions, and the saved result.

Selection (Dai et al. 2022; Chen et al. 2024):
  1. per prompt, keep neuron (l, i) when IG_{l,i} > τ · max_{l', i'} IG_{l', i'} (max over
     all attributed layers); τ for AMIG per language: 0.3 en, 0.2 zh (the paper), 0.2
     otherwise; τ for KN: Dai et al.'s 0.2 in every language (:func:`amig_plugin.defaults.default_tau`,
     the one place these defaults live, re-exported here; the localization cache keys on the resolved τ);
  2. with several prompts of the same fact, keep the neurons selected for more than a
     fraction p of the prompts (``share_p``; Dai et al. use 0.7);
  3. optionally (``adaptive=(lo, hi)``), Dai et al.'s adaptive selection: move τ in steps
     of 0.05 until the final set has lo..hi neurons (:func:`adaptive_select`).

An empty set carries its reason (``KnowledgeNeurons.empty_reason``).
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
from .defaults import (DEFAULT_AMIG_MODE, DEFAULT_IG_BATCH_SIZE, DEFAULT_OBJECTIVE, DEFAULT_QUADRATURE,
                       DEFAULT_RESIDUAL_TOLERANCE, DEFAULT_SHARE_P, DEFAULT_STEPS, DEFAULT_TOP_K)
from .defaults import DEFAULT_TAU, FALLBACK_TAU, KN_TAU, default_tau  # noqa: F401  (re-exported)
from .checks import check_share_p, check_size_range, check_steps, check_tau  # noqa: F401  (re-exported)
from .errors import AmigError
from .models import ModelFamily, Neuron, get_family

ON_UNCONVERGED = ("warn", "refine", "refuse")


class UnconvergedError(AmigError, ArithmeticError):
    """An IG result whose completeness residual exceeds the tolerance, where it was refused."""



ADAPTIVE_STEP = 0.05


def select_neurons(attributions: Sequence[torch.Tensor], layers: Sequence[int], tau: float,
                   share_p: float) -> tuple[list[list[Neuron]], list[Neuron]]:
    """(per-prompt sets above τ·max, the final set: shared by > share_p of the prompts)."""
    per_prompt = [[n for n, _ in threshold_neurons(a, layers, tau)] for a in attributions]
    kept = per_prompt[0] if len(per_prompt) == 1 else shared_neurons(per_prompt, share_p)
    return per_prompt, kept


def adaptive_select(attributions: Sequence[torch.Tensor], layers: Sequence[int], tau: float, share_p: float,
                    size_range: tuple[int, int], step: float = ADAPTIVE_STEP) -> tuple[float, list[list[Neuron]], list[Neuron]]:
    """Dai et al.'s adaptive threshold: from ``tau``, raise τ by ``step`` while the final set
    has more than hi neurons, lower it while it has fewer than lo (τ stays in [step, 1]);
    stops in range or at a bound. If a step jumps across the range, the τ whose set size is
    closer to it wins (ties: the larger set). Returns (τ, per-prompt sets, final set)."""
    return _adaptive(lambda t: select_neurons(attributions, layers, t, share_p), tau, size_range, step)


def _adaptive(select, tau: float, size_range, step: float = ADAPTIVE_STEP):
    """The search of :func:`adaptive_select` over any ``select(τ) -> (per_prompt, kept)``."""
    lo, hi = check_size_range(size_range)
    best = None
    t = tau
    direction = 0
    for _ in range(int(round(1 / step)) + 2):
        per_prompt, kept = select(t)
        miss = lo - len(kept) if len(kept) < lo else len(kept) - hi if len(kept) > hi else 0
        if best is None or (miss, -len(kept)) < (best[0], -len(best[3])):
            best = (miss, t, per_prompt, kept)
        if miss == 0:
            break
        d = 1 if len(kept) > hi else -1
        if direction and d != direction:
            break  # jumped across the range
        direction = d
        nxt = round(t + d * step, 10)
        if not step - 1e-9 <= nxt <= 1.0:
            break
        t = nxt
    return best[1], best[2], best[3]


def adaptive_from_record(kn: "KnowledgeNeurons", size_range, step: float = ADAPTIVE_STEP) -> "KnowledgeNeurons | None":
    """The adaptive selection of a ONE-prompt localization rebuilt from its record (no new IG):
    with one prompt the set at τ is {n : IG_n > τ·max}, and ``kn.top`` holds the best
    attributions, enough for every set of up to ``len(kn.top) − 1`` neurons (larger sets are
    only compared with hi). None when the record cannot answer (several prompts, hi too large,
    no positive attribution, already adaptive)."""
    lo, hi = check_size_range(size_range)
    if len(kn.prompts) != 1 or "adaptive" in kn.settings or hi >= len(kn.top) or not kn.top or kn.top[0][2] <= 0:
        return None
    top = [((int(l), int(i)), float(v)) for l, i, v in kn.top]
    peak = top[0][1]

    def select(t: float):
        cut = float(torch.tensor(t * peak, dtype=torch.float32))  # the engine compares in float32
        kept = [n for n, v in top if v > cut]
        return [kept], kept

    tau, per_prompt, kept = _adaptive(select, float(kn.settings["tau"]), (lo, hi), step)
    score = dict(top)
    ranked = sorted(kept, key=lambda n: -score[n])
    return KnowledgeNeurons(
        neurons=ranked, scores=[score[n] for n in ranked], target=kn.target, prompts=list(kn.prompts), lang=kn.lang,
        fact_id=kn.fact_id, method=kn.method, model_id=kn.model_id,
        settings={**kn.settings, "tau": tau, "adaptive": [lo, hi], "tau_start": kn.settings["tau"]},
        per_prompt=per_prompt, completeness_residuals=list(kn.completeness_residuals),
        clean_scores=list(kn.clean_scores), top=[list(t) for t in kn.top],
        empty_reason="" if kept else "no neuron exceeds τ·max at any τ tried",
    )



def empty_reason(per_prompt: Sequence[Sequence[Neuron]], share_p: float, tau: float, any_positive: bool) -> str:
    """Why selection left no neuron (one line naming the fix)."""
    if not any_positive:
        return "no attribution is positive (the target's score falls along every path); nothing passes τ·max"
    sizes = ", ".join(str(len(p)) for p in per_prompt)
    if len(per_prompt) == 1:
        return f"no neuron exceeds τ·max with τ={tau:g}; lower tau"
    need = int(share_p * len(per_prompt)) + 1
    return (f"no neuron is shared by > p={share_p:g} of {len(per_prompt)} prompts (needs {need}; per-prompt sets of "
            f"{sizes} neurons at τ={tau:g}); lower share_p or tau, or use adaptive selection (adaptive=(2, 5); --adaptive 2,5 in the CLI)")



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
    check_share_p(share_p)
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
    empty_reason: str = ""  # why the set is empty ("" when it is not)

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
    share_p: float = DEFAULT_SHARE_P,
    steps: int = DEFAULT_STEPS,
    objective: str = DEFAULT_OBJECTIVE,
    quadrature: str = DEFAULT_QUADRATURE,
    amig_mode: str = DEFAULT_AMIG_MODE,
    layers: Sequence[int] | None = None,
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
    fact_id: str | None = None,
    top_k: int = DEFAULT_TOP_K,
    adaptive: tuple[int, int] | None = None,
    progress: bool = False,
    return_attributions: bool = False,
    on_unconverged: str = "warn",
    refine_max_steps: int = 96,
):
    """A fact's knowledge neurons: IG per prompt, τ·max threshold, sharing filter.

    Scores of the kept neurons are their mean attribution over the prompts; the ``top_k``
    best neurons by that mean are recorded too (for DKN's top-k and plots). ``tau=None``:
    :func:`default_tau` (KN 0.2; AMIG en 0.3 / zh 0.2 / else 0.2). ``adaptive=(lo, hi)``:
    move τ until the set has lo..hi neurons (:func:`adaptive_select`; the τ used is in
    ``settings["tau"]``, the start in ``settings["tau_start"]``). An empty set gets its
    ``empty_reason``. With ``return_attributions=True`` returns
    ``(KnowledgeNeurons, [AttributionResult, ...])``.
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
    tau = default_tau(lang, method) if tau is None else check_tau(tau)
    share_p = check_share_p(share_p)  # checked with one prompt too: before any IG is computed
    if method not in ("amig", "kn"):
        raise ValueError(f"unknown method {method!r}; use 'amig' or 'kn'")
    check_steps(steps)
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
    attrs = [r.attributions for r in results]
    tau_start = tau
    if adaptive is not None:
        tau, per_prompt, kept = adaptive_select(attrs, results[0].layers, tau, share_p, adaptive)
    else:
        per_prompt, kept = select_neurons(attrs, results[0].layers, tau, share_p)
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
                      **({"adaptive": list(adaptive), "tau_start": tau_start} if adaptive is not None else {}),
                      **({"on_unconverged": on_unconverged} if on_unconverged == "refine" else {})),
        per_prompt=per_prompt,
        completeness_residuals=[r.max_abs_residual for r in results],
        layer_relative_residuals=[[round(x, 6) for x in r.layer_relative_residuals.tolist()] for r in results],
        residual_tolerance=results[0].tolerance,
        clean_scores=[r.score for r in results],
        top=[[l, i, s] for (l, i), s in top_k_neurons(mean_attr, results[0].layers, min(top_k, mean_attr.numel()))],
        empty_reason="" if kept else empty_reason(per_prompt, share_p, tau, any(float(a.max()) > 0 for a in attrs)),
    )
    return (kn, results) if return_attributions else kn
