"""Activation-level interventions: multiply chosen FFN neurons at one position by a factor
(suppress = ×0, enhance = ×2, any scale) inside a ``with`` block, and score a query under
many such interventions in batched forwards. Forward hooks only: weights are never
touched, so the model is restored exactly."""

from __future__ import annotations

import operator
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..attribution import frozen_eval, make_runner
from ..errors import UsageError
from ..models import EncodedQuery, ModelFamily, NeuronHooks, _NeuronPatch, get_family
from ..neurons import Neuron

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
