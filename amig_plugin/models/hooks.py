"""Hooks that read or replace neuron vectors during a forward pass (weights are never touched)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .base import ModelFamily


@dataclass
class _NeuronPatch:
    """Replace/transform the neuron vector at one position of selected batch rows."""

    rows: torch.Tensor | slice
    position: int
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class NeuronHooks:
    """Context manager: install forward (pre-)hooks that edit neuron vectors.

    ``patches[layer]`` is a list of ``_NeuronPatch``; the activation [B, S, W] at that
    layer's neuron site gets ``act[rows, position] = fn(act[rows, position])``. Hooks are
    removed on exit (weights are never touched).
    """

    family: ModelFamily
    patches: dict[int, list[_NeuronPatch]] = field(default_factory=dict)
    capture: dict[int, list[torch.Tensor]] | None = None

    def __enter__(self) -> "NeuronHooks":
        self._handles = []
        layers = set(self.patches) | (set(self.capture) if self.capture is not None else set())
        for layer in sorted(layers):
            module, side = self.family.neuron_hook_module(layer)
            if side == "input":
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(layer)))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _apply(self, layer: int, act: torch.Tensor) -> torch.Tensor:
        if self.capture is not None and layer in self.capture:
            self.capture[layer].append(act)
        patches = self.patches.get(layer)
        if not patches:
            return act
        act = act.clone()
        for patch in patches:
            act[patch.rows, patch.position] = patch.fn(act[patch.rows, patch.position]).to(act.dtype)
        return act

    def _pre_hook(self, layer: int):
        def hook(module, args):
            new = self._apply(layer, args[0])
            return (new,) + tuple(args[1:])

        return hook

    def _post_hook(self, layer: int):
        def hook(module, args, output):
            return self._apply(layer, output)

        return hook
