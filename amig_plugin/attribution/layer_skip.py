"""The layer-skipping strategies: a row patched at layer l joins the batch at layer l's neuron
site (causal LMs, on top of the prefix cache) or at the clean hidden state entering layer l
(BERT), so the blocks below l never run for it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..models import NeuronHooks, _NeuronPatch
from .activations import _layer_output, _stacked
from .prefix_cache import _CachedCausalRunner, _broadcast_layer
from .rows import _offset_patches, _RowOutputs, _RowRunner


@dataclass
class _Join:
    """Block l's FFN module and what its output meets for a row joining at its neuron site
    (clean pass, suffix positions): the residual stream r [1, T, H] and the tail after the FFN."""

    ffn: nn.Module
    residual: torch.Tensor
    tail: Callable[[torch.Tensor], torch.Tensor]


class _LayerSkipCausalRunner(_CachedCausalRunner):
    """Causal LMs, on top of the prefix cache: a row patched at layer l joins the batch at
    layer l's neuron site, with the clean model's values at the other suffix positions; its
    block output is r_l + tail(FFN output), r_l being the clean residual stream entering
    the FFN (:class:`amig_plugin.models.FFNJoin`). Blocks below l and the part of block l
    before the site (attention, norms, the FFN's input projections) never run for it: they
    are unchanged. Row 0 is the clean suffix, run from the embeddings (with the zero
    offsets δ_l when the clean row is asked for); each block's key/value cache is broadcast
    to the rows its attention sees. Families without an FFN join, or whose blocks do not
    match it on the clean pass, run on the plain prefix cache.
    """

    capture_joins = True

    @staticmethod
    def supported(cache) -> bool:
        return hasattr(cache, "layers") and all(hasattr(l, "batch_repeat_interleave") for l in cache.layers)

    def _capture_joins(self) -> dict | None:
        joins = [self.family.ffn_join(k) for k in range(self.family.num_layers)]
        if any(j is None for j in joins):
            return None
        seen = {"residual": {}, "ffn": {}, "out": {}, "joins": joins, "handles": []}

        def keep(kind, k, tensor):
            seen[kind].setdefault(k, tensor.detach())

        for k, (join, block) in enumerate(zip(joins, self.family.blocks())):
            seen["handles"] += [
                join.residual_input_of.register_forward_pre_hook(lambda _m, args, k=k: keep("residual", k, args[0])),
                join.ffn.register_forward_hook(lambda _m, _a, out, k=k: keep("ffn", k, out)),
                block.register_forward_hook(lambda _m, _a, out, k=k: keep("out", k, _layer_output(out))),
            ]
        return seen

    def _checked_joins(self, seen: dict, tp: int) -> list[_Join] | None:
        """The joins, once out = r + tail(ffn) holds on the clean pass at every block (to
        float rounding); None (whole blocks) where it does not."""
        out = []
        for k, join in enumerate(seen["joins"]):
            tensors = [seen[kind].get(k) for kind in ("residual", "ffn", "out")]
            if any(not isinstance(t, torch.Tensor) for t in tensors):
                return None
            residual, ffn, block_out = (t[:, tp:] for t in tensors)
            if residual.shape != block_out.shape or ffn.shape[:-1] != block_out.shape[:-1]:
                return None
            with torch.no_grad():
                expected = residual + join.tail(ffn)
            scale = float(block_out.abs().max()) or 1.0
            if float((expected - block_out).abs().max()) > 16 * torch.finfo(block_out.dtype).eps * scale:
                return None
            out.append(_Join(ffn=join.ffn, residual=residual, tail=join.tail))
        return out

    def logits(self, row_layers, z, clean_deltas=None):
        if self.joins is None or not self.supported(self.cache):  # legacy caches / unknown blocks
            return super().logits(row_layers, z, clean_deltas)
        order = torch.argsort(row_layers, stable=True)
        inverse = None
        if not torch.equal(order, torch.arange(order.numel(), device=order.device)):  # (IG's rows come sorted)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            row_layers, z = row_layers[order], z[order]
        blocks = self.family.blocks()
        L = len(blocks)
        counts = torch.bincount(row_layers, minlength=L).tolist()
        joining = dict(zip(range(L), torch.split(z, counts)))  # views: their backward is one cat
        entering = [1] * L  # rows entering block k: the clean row and those joined below k
        for k in range(1, L):
            entering[k] = entering[k - 1] + counts[k - 1]
        cache = copy.deepcopy(self.cache)
        for k, layer_cache in enumerate(cache.layers):
            if entering[k] > 1:
                _broadcast_layer(layer_cache, entering[k])
        deltas = clean_deltas or {}
        joined: dict[int, torch.Tensor] = {}  # FFN outputs of the rows joining block k
        handles = []

        def at_site(k: int, act: torch.Tensor) -> torch.Tensor:
            """act [A, T, W] -> the clean row offset by δ_k, then the rows joining here."""
            if k in deltas:  # (split, not slicing: a slice's backward writes a zero tensor of the whole)
                row0, others = act.split([1, act.shape[0] - 1])
                at_target, later = row0.split([1, row0.shape[1] - 1], dim=1)
                row0 = torch.cat([at_target + deltas[k].view(1, 1, -1).to(act.dtype), later], dim=1)
                act = torch.cat([row0, others])
            if counts[k]:
                values = joining[k].unsqueeze(1)  # [c, 1, W] at the target position
                rest = self.site_values[k][:, 1:]
                if rest.shape[1]:
                    values = torch.cat([values, rest.expand(values.shape[0], -1, -1)], dim=1)
                act = torch.cat([act, values.to(act.dtype)])
            return act

        def site_hook(k: int, side: str):
            if side == "input":
                return lambda _m, args: (at_site(k, args[0]),) + tuple(args[1:])
            return lambda _m, _args, output: at_site(k, output)

        def split_ffn(k: int):
            def hook(_m, _args, output):
                kept, joined[k] = output.split([entering[k], output.shape[0] - entering[k]])
                return kept
            return hook

        def join_block(k: int):
            def hook(_m, _args, output):
                hidden = _layer_output(output)
                extra = self.joins[k].residual + self.joins[k].tail(joined.pop(k))
                hidden = torch.cat([hidden, extra])
                return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden
            return hook

        try:
            for k in range(L):
                if k in deltas or counts[k]:
                    module, side = self.family.neuron_hook_module(k)
                    handles.append(module.register_forward_pre_hook(site_hook(k, side)) if side == "input"
                                   else module.register_forward_hook(site_hook(k, side)))
                if counts[k]:
                    handles.append(self.joins[k].ffn.register_forward_hook(split_ffn(k)))
                    handles.append(blocks[k].register_forward_hook(join_block(k)))
            values, hidden, _ = self._forward(input_ids=self.suffix.unsqueeze(0), past_key_values=cache, use_cache=True)
        finally:
            for h in handles:
                h.remove()
        return _RowOutputs(self._keep_scored(values), inverse=inverse, first_row=1,
                           clean_row=0 if clean_deltas is not None else None, hidden=hidden)


class _LayerSkipMaskedRunner(_RowRunner):
    """BERT: a row patched at layer l starts at the clean hidden state entering layer l
    (layers below are unchanged); rows join the batch at their own layer; the MLM head runs
    on the mask positions only."""

    def __init__(self, family, query, objective):
        super().__init__(family, query, objective)
        capture = {layer: [] for layer in range(family.num_layers)}
        with torch.no_grad(), NeuronHooks(family, capture=capture):
            out = self.model.bert(input_ids=self.ids.unsqueeze(0), output_hidden_states=True)
        self.hidden_in = out.hidden_states  # L+1 tensors [1, n, H]; [l] enters layer l
        self.score_positions = query.score_positions.to(self.device)
        self.clean_vectors = _stacked(capture, query.target_position, sorted(capture))[0]  # [L, W]
        mlm = family.mlm_transform_and_head()  # None: the model's own MLM head gives logits
        self.mlm_transform, self.head = mlm if mlm is not None else (None, None)

    def _mlm_outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(transformed hidden states at the score positions and True when the decoder is
        folded into the score, else (logits, False))."""
        h = h[:, self.score_positions]
        if self.mlm_transform is None:
            return self.model.cls(h), False
        return self.mlm_transform(h), True

    def clean_vectors_at(self, layers):
        return self.clean_vectors[list(layers)]

    def clean_score(self) -> float:
        with torch.no_grad():
            return float(self._score(*self._mlm_outputs(self.hidden_in[-1]))[0])

    def logits(self, row_layers, z, clean_deltas=None):
        order = torch.argsort(row_layers, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        sorted_layers = row_layers[order]
        z_sorted = z[order]
        blocks = self.family.blocks()
        h = None
        first = int(sorted_layers.min())
        if clean_deltas is not None:  # the clean row, row 0, enters at the lowest offset (or path) layer
            first = min(first, min(clean_deltas, default=first))
            h = self.hidden_in[first]
        for layer in range(first, len(blocks)):
            rows = torch.nonzero(sorted_layers == layer).squeeze(-1)
            patches = {}
            if clean_deltas is not None and layer in clean_deltas:
                patches = _offset_patches({layer: clean_deltas[layer]}, torch.tensor([0]), self.query.target_position)
            if rows.numel():
                start = self.hidden_in[layer].expand(rows.numel(), -1, -1)
                offset = 0 if h is None else h.shape[0]
                h = start if h is None else torch.cat([h, start], dim=0)
                values = z_sorted[rows]
                patches.setdefault(layer, []).append(_NeuronPatch(rows=torch.arange(rows.numel()) + offset,
                                                                  position=self.query.target_position,
                                                                  fn=lambda _o, v=values: v))
            with NeuronHooks(self.family, patches):
                h = _layer_output(blocks[layer](h))
        values, hidden = self._mlm_outputs(h)
        clean_row = 0 if clean_deltas is not None else None
        return _RowOutputs(values, inverse=inverse, clean_row=clean_row, first_row=int(clean_row is not None), hidden=hidden)

    def patched_logits(self, R, patches_at):
        patches = patches_at(self.query.target_position)
        blocks = self.family.blocks()
        first = min(patches) if patches else len(blocks)
        h = self.hidden_in[first].expand(R, -1, -1)
        for layer in range(first, len(blocks)):
            with NeuronHooks(self.family, {layer: patches[layer]} if layer in patches else {}):
                h = _layer_output(blocks[layer](h))
        values, hidden = self._mlm_outputs(h)
        return _RowOutputs(values, hidden=hidden)
