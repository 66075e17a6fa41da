"""The prefix-cache strategy for causal LMs: the key/value cache of the positions before the
target position is computed once (from the clean pass) and shared by every row, so a row
recomputes only the target position onwards."""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..models import NeuronHooks
from .activations import _stacked
from .rows import _RowOutputs, _RowRunner


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


def _cuttable(layer) -> bool:
    """A cache layer that holds every position it has seen as plain tensors: a
    ``DynamicLayer``, or a ``DynamicSlidingWindowLayer`` whose window has not yet dropped any
    position (its length counter equals the positions it keeps) and that is not recording."""
    name = type(layer).__name__
    keys = getattr(layer, "keys", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(getattr(layer, "values", None), torch.Tensor):
        return False
    if name == "DynamicLayer":
        return True
    return (name == "DynamicSlidingWindowLayer" and not getattr(layer, "record_past", True)
            and getattr(layer, "cumulative_length", None) == keys.shape[-2])


def _cut_cache(cache, length: int):
    """The key/value cache of the first ``length`` positions, cut in place from a longer
    one: legacy tuples, plain ``DynamicLayer`` caches and sliding-window layers that have
    dropped nothing yet (the prompt is shorter than the window: Gemma-2/3's local layers);
    None for anything else, which the caller recomputes."""
    if isinstance(cache, tuple):
        return tuple(tuple(t[..., :length, :].contiguous() for t in layer) for layer in cache)
    layers = getattr(cache, "layers", None)
    if not layers or not all(_cuttable(layer) for layer in layers):
        return None
    for layer in layers:
        layer.keys = layer.keys[..., :length, :].contiguous()
        layer.values = layer.values[..., :length, :].contiguous()
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = length
    return cache if cache.get_seq_length() == length else None


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
