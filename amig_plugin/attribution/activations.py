"""Reading neuron vectors: the clean vectors at the target position (the forward stops at the
last layer needed), AMIG's masked baseline inputs, and :func:`frozen_eval` for the model."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..models import EncodedQuery, ModelFamily, NeuronHooks


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
