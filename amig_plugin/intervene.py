"""Interventions on knowledge neurons and the localization effect.

Activation-level interventions multiply chosen neurons of the FFN hidden vector at one
position (the target position) by a factor: suppress = ×0, enhance = ×2, or any scale.
They are forward hooks installed by a context manager and removed on exit; weights are
never touched, so the model is restored exactly.

The localization effect (the paper's table shape): for each fact, suppress / enhance its
neurons and measure the relative change of P(gold),  (P_after − P_before) / P_before,
on the fact's own prompts ("related") and on other facts' prompts ("unrelated"), with the
same neurons; methods (AMIG, KN, ...) compared with random neuron sets of equal size.
"""

from __future__ import annotations

import math
import operator
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .attribution import frozen_eval, make_runner
from .errors import UsageError
from .models import EncodedQuery, ModelFamily, NeuronHooks, _NeuronPatch, get_family
from .stats import mean_ci, median, paired_difference, trimmed_mean  # noqa: F401  (mean_ci re-exported)

Neuron = tuple[int, int]

MODE_FACTORS = {"suppress": 0.0, "enhance": 2.0}


def _multipliers(family: ModelFamily, neurons: Sequence[Neuron], factor: float) -> dict[int, torch.Tensor]:
    mult: dict[int, torch.Tensor] = {}
    width = family.ffn_width
    for layer, index in neurons:
        family.check_layer(layer)
        if not 0 <= index < width:
            raise ValueError(f"neuron index {index} out of range: the FFN hidden vector has {width} units")
        mult.setdefault(layer, torch.ones(width))[index] = factor
    return mult


class _Required:
    def __repr__(self) -> str:
        return "<required>"


#: The default of ``position``: none; the caller says where (see :func:`scale_neurons`).
REQUIRED = _Required()


def _position(position) -> int | slice:
    """``position`` as an index or slice: an EncodedQuery gives its target position."""
    if position is REQUIRED:
        raise UsageError(
            "give position=: the token position to intervene at; the query's target position is "
            "position=target_position(model, tokenizer, prompt, target) (or an EncodedQuery), "
            "None intervenes at every position")
    if isinstance(position, EncodedQuery):
        return position.target_position
    if position is None:
        return slice(None)
    try:
        return operator.index(position)
    except TypeError:
        raise UsageError(f"position must be an int, None or an EncodedQuery, got {position!r}") from None


def target_position(model: nn.Module | ModelFamily, tokenizer, prompt: str, target: str) -> int:
    """The index of the query's target position: the first ``[MASK]`` of a masked LM, the last
    prompt token (which predicts the target's first token) of a causal LM; where knowledge
    neurons are attributed, and where :func:`suppress_neurons` and friends act."""
    return get_family(model).encode(tokenizer, prompt, target).target_position


@contextmanager
def scale_neurons(model: nn.Module | ModelFamily, neurons: Sequence[Neuron], factor: float,
                  position: int | EncodedQuery | None = REQUIRED) -> Iterator[None]:
    """Multiply ``neurons`` by ``factor`` at ``position`` in every forward pass inside the
    ``with`` block.

    ``position``, required: the query's target position (``target_position(model, tok,
    prompt, target)``, or the :class:`~amig_plugin.models.EncodedQuery` itself), any index
    into the sequence (-1 = the last token, which is ``[SEP]`` on BERT and the last
    teacher-forced token of a multi-token causal target: rarely what is meant), or ``None``
    for every position. There is no default because no index is right for every model."""
    pos = _position(position)
    family = get_family(model)
    patches = {
        layer: [_NeuronPatch(rows=slice(None), position=pos, fn=lambda old, m=m: old * m.to(old.device, old.dtype))]
        for layer, m in _multipliers(family, neurons, factor).items()
    }
    with NeuronHooks(family, patches):
        yield


def suppress_neurons(model, neurons: Sequence[Neuron], position: int | EncodedQuery | None = REQUIRED):
    """Set ``neurons`` to 0 at ``position`` (context manager; ``position`` as in :func:`scale_neurons`)."""
    return scale_neurons(model, neurons, 0.0, position)


def enhance_neurons(model, neurons: Sequence[Neuron], position: int | EncodedQuery | None = REQUIRED):
    """Double ``neurons`` at ``position`` (context manager; ``position`` as in :func:`scale_neurons`)."""
    return scale_neurons(model, neurons, 2.0, position)


def scores_under_interventions(model, tokenizer, prompt: str, target: str,
                               interventions: Sequence[tuple[Sequence[Neuron], float]],
                               objective: str = "prob", batch_size: int = 64) -> tuple[float, torch.Tensor]:
    """(F clean, F [len(interventions)]) with each (neurons, factor) applied at the target
    position of this prompt, in batched forwards."""
    family = get_family(model)
    query = family.encode(tokenizer, prompt, target)
    with frozen_eval(family.model):
        runner = make_runner(family, query, objective, "auto")
        rows = [([], 1.0)] + list(interventions)
        out = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            mult: dict[int, torch.Tensor] = {}
            for r, (neurons, factor) in enumerate(chunk):
                for layer, index in neurons:
                    if layer not in mult:
                        mult[layer] = torch.ones(len(chunk), family.ffn_width)
                    mult[layer][r, index] = factor
            if not mult:
                mult = {0: torch.ones(len(chunk), family.ffn_width)}
            out.append(runner.scaled_scores(mult).float().cpu())
        scores = torch.cat(out)
    return float(scores[0]), scores[1:]


@dataclass
class EffectCase:
    """One fact for :func:`localization_effect`: its prompts, gold target, neuron sets."""

    fact_id: str
    prompts: list[str]
    target: str
    neuron_sets: dict[str, list[Neuron]]


@dataclass
class EffectReport:
    rows: list[dict]
    per_fact: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        head = ("| method | mode | facts | mean #neurons | related Δp (95% t-CI) | unrelated Δp (95% t-CI) | "
                "related − unrelated (bootstrap 95%) | median related Δp |\n")
        head += "|---|---|---|---|---|---|---|---|\n"
        lines = []
        for r in self.rows:
            lines.append(
                f"| {r['method']} | {r['mode']} | {r['facts']} | {r['mean_size']:.1f} | "
                f"{100 * r['related_mean']:+.1f}% ± {100 * r['related_ci']:.1f} | "
                f"{100 * r['unrelated_mean']:+.1f}% ± {100 * r['unrelated_ci']:.1f} | "
                f"{100 * r['specific_mean']:+.1f}% [{100 * r['specific_low']:+.1f}, {100 * r['specific_high']:+.1f}] | "
                f"{100 * r['related_median']:+.1f}% |"
            )
        return head + "\n".join(lines)


def random_neuron_set(family: ModelFamily, size: int, rng: random.Random, layers: Sequence[int] | None = None) -> list[Neuron]:
    """``size`` distinct neurons drawn uniformly over (layers × FFN width)."""
    layers = list(range(family.num_layers)) if layers is None else list(layers)
    width = family.ffn_width
    picks = rng.sample(range(len(layers) * width), size)
    return sorted((layers[p // width], p % width) for p in picks)


def localization_effect(model, tokenizer, cases: Sequence[EffectCase], *, modes: Sequence[str] = ("suppress", "enhance"),
                        n_unrelated: int = 5, random_like: str | None = "amig", seed: int = 0,
                        objective: str = "prob", progress: bool = True) -> EffectReport:
    """Relative change of P(gold) on related and unrelated prompts under each neuron set.

    For each case f and method M: related = mean over f's prompts of (P' − P)/P with M's
    neurons of f scaled at the target position; unrelated = the same on the first prompt
    of ``n_unrelated`` other facts (seeded sample). ``random_like`` adds a ``random``
    method: per fact, a uniform random neuron set as large as that method's set.
    """
    for mode in modes:
        if mode not in MODE_FACTORS:
            raise ValueError(f"unknown mode {mode!r}; use {sorted(MODE_FACTORS)}")
    if len(cases) < 2 and n_unrelated > 0:
        raise ValueError("localization_effect needs at least 2 facts to measure unrelated prompts")
    family = get_family(model)
    rng = random.Random(seed)
    # work on copies: the caller's cases are never modified
    cases = [EffectCase(c.fact_id, list(c.prompts), c.target, dict(c.neuron_sets)) for c in cases]
    methods = list(dict.fromkeys(m for c in cases for m in c.neuron_sets))
    if random_like is not None:
        if "random" in methods:
            raise ValueError("the cases already have a 'random' neuron set; pass random_like=None to use it")
        if random_like not in methods:
            raise ValueError(f"random_like={random_like!r} is not among the methods {methods}")
        for c in cases:
            c.neuron_sets["random"] = random_neuron_set(family, len(c.neuron_sets[random_like]), rng)
        methods.append("random")
    # jobs per query: (query) -> list of (source case, method, mode)
    unrelated_of = {}
    for i in range(len(cases)):
        others = [j for j in range(len(cases)) if j != i]
        unrelated_of[i] = rng.sample(others, min(n_unrelated, len(others)))
    queries: dict[tuple[int, int], list[tuple[int, str, str, str]]] = {}
    for i, c in enumerate(cases):
        for p in range(len(c.prompts)):
            queries.setdefault((i, p), []).extend((i, m, mode, "related") for m in methods for mode in modes)
        for j in unrelated_of[i]:
            queries.setdefault((j, 0), []).extend((i, m, mode, "unrelated") for m in methods for mode in modes)
    changes: dict[tuple[int, str, str, str], list[float]] = {}
    for (j, p), jobs in tqdm(queries.items(), desc="interventions", disable=not progress):
        interventions = [(cases[i].neuron_sets.get(m, []), MODE_FACTORS[mode]) for i, m, mode, _ in jobs]
        clean, after = scores_under_interventions(family, tokenizer, cases[j].prompts[p], cases[j].target,
                                                  interventions, objective=objective)
        for (i, m, mode, kind), value in zip(jobs, after.tolist()):
            rel = (value - clean) / clean if clean > 0 else float("nan")
            changes.setdefault((i, m, mode, kind), []).append(rel)
    rows, per_fact = [], []
    for m in methods:
        for mode in modes:
            related = [sum(changes[(i, m, mode, "related")]) / len(changes[(i, m, mode, "related")]) for i in range(len(cases))]
            unrel_by = [sum(v) / len(v) if (v := changes.get((i, m, mode, "unrelated"))) else float("nan")
                        for i in range(len(cases))]
            unrelated = [u for u in unrel_by if not math.isnan(u)]
            spec = paired_difference(related, unrel_by, seed=seed)
            rmean, rci = mean_ci(related)
            umean, uci = mean_ci(unrelated)
            sizes = [len(c.neuron_sets.get(m, [])) for c in cases]
            rows.append(dict(method=m, mode=mode, facts=len(cases), mean_size=sum(sizes) / len(sizes),
                             empty_sets=sum(s == 0 for s in sizes), related_mean=rmean, related_ci=rci,
                             unrelated_mean=umean, unrelated_ci=uci, related_median=median(related),
                             related_trimmed=trimmed_mean(related), specific_mean=spec["mean"],
                             specific_low=spec["low"], specific_high=spec["high"]))
            for i, c in enumerate(cases):
                per_fact.append(dict(fact_id=c.fact_id, method=m, mode=mode, related=related[i],
                                     size=len(c.neuron_sets.get(m, []))))
    return EffectReport(rows=rows, per_fact=per_fact)


# ----------------------------------------------------------------------------------------
# weight-level edits of value vectors


@dataclass
class WeightBackup:
    """Original tensors of edited parameters, ``{param_name: tensor}``; ``restore()`` copies
    them back bit for bit."""

    model: nn.Module
    originals: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, name: str, param: torch.Tensor) -> None:
        if name not in self.originals:
            self.originals[name] = param.detach().clone()

    def restore(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, original in self.originals.items():
                params[name].copy_(original)


def _param_name(model: nn.Module, param: torch.Tensor) -> str:
    for name, p in model.named_parameters():
        if p is param:
            return name
    raise ValueError("parameter not found in the model")


def target_embedding(family: ModelFamily, tokenizer, text: str) -> torch.Tensor:
    """Mean input word embedding [hidden] of ``text``'s tokens (no special tokens).

    The real input word embeddings (``model.get_input_embeddings()``), not position
    embeddings (EleutherAI's GPT code used ``wpe``: a bug)."""
    from .models import _tokenize_target

    ids = torch.tensor(_tokenize_target(tokenizer, text))
    emb = family.input_embeddings().weight
    return emb[ids.to(emb.device)].float().mean(0)


def edit_value_vectors(model, tokenizer, neurons: Sequence[Neuron], *, mode: str = "update",
                       old_target: str | None = None, new_target: str | None = None,
                       lambda_old: float = 1.0, lambda_new: float = 8.0,
                       backup: WeightBackup | None = None) -> WeightBackup:
    """Edit the value vectors v_i (the output projection's weights fed by neuron i).

    mode ``update`` (Dai et al. 2022): v_i ← v_i − λ_old·e(old) + λ_new·e(new), with e(·)
    the mean input word embedding of the target's tokens (multi-token targets: the mean
    over their tokens; λ_old = 1, λ_new = 8 as in Dai et al.).
    mode ``erase``: v_i ← 0.
    Returns a :class:`WeightBackup` (``{param_name: original}``); pass an existing one to
    accumulate several edits and restore them all at once.
    """
    family = get_family(model)
    backup = backup or WeightBackup(family.model)
    if mode not in ("update", "erase"):
        raise ValueError(f"unknown edit mode {mode!r}; use 'update' (Dai et al.'s rule) or 'erase'")
    if mode == "update":
        if not old_target or not new_target:
            raise ValueError("mode='update' needs old_target (the ground truth) and new_target")
        delta = lambda_new * target_embedding(family, tokenizer, new_target) - lambda_old * target_embedding(family, tokenizer, old_target)
    _multipliers(family, neurons, 1.0)  # validates layers and indices
    with torch.no_grad():
        for layer, index in neurons:
            proj = family.output_projection(layer)
            backup.save(_param_name(family.model, proj.weight), proj.weight)
            values = family.value_vectors(layer)  # [ffn, hidden] view
            if mode == "erase":
                values[index] = 0
            else:
                values[index] += delta.to(values.device, values.dtype)
    return backup


@contextmanager
def edited_value_vectors(model, tokenizer, neurons: Sequence[Neuron], **kwargs) -> Iterator[WeightBackup]:
    """:func:`edit_value_vectors` for the ``with`` block; weights restored bit for bit after."""
    backup = edit_value_vectors(model, tokenizer, neurons, **kwargs)
    try:
        yield backup
    finally:
        backup.restore()
