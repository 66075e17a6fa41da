"""Row evaluators: F (and ∂F/∂z) for a batch of rows, row r having layer[r]'s neuron vector at
the target position replaced by value[r]; optionally one extra clean row whose neuron vectors
get a zero offset δ_l at every requested layer (∂F/∂δ_l = ∂F/∂a_l at the clean input, with
the layers above responding: the gradient of every layer's α = 1 path point at once).

This module holds the runner interface (:class:`_RowRunner`: scoring, gradients, the clean
row) and the reference strategy, a whole-model forward per row (:class:`_FullRunner`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..models import EncodedQuery, ModelFamily, NeuronHooks, _NeuronPatch
from ..models.kv_cache import cache_keyword, returned_cache
from ..models.logits import takes_logits_to_keep
from ..scoring import head_scores, target_scores
from .activations import neuron_vectors


def _last_logits_only(model: nn.Module, n: int) -> dict:
    """``logits_to_keep=n`` where the model's forward takes it (the LM head on the last n
    positions only), else nothing."""
    return {"logits_to_keep": n} if takes_logits_to_keep(model) else {}


@dataclass
class _RowOutputs:
    """A runner's outputs at the score positions: ``values`` are logits [R', T, V], or the
    final hidden states [R', T, H] when ``hidden`` (the runner's plain LM head is folded into
    the score). The requested rows are ``first_row .. first_row + R - 1``, in the runner's
    order, which ``inverse`` maps back to the requested one (None: already in order);
    ``clean_row`` is the index of the clean row (or None)."""

    values: torch.Tensor
    inverse: torch.Tensor | None = None
    clean_row: int | None = None
    hidden: bool = False
    first_row: int = 0


@dataclass
class RowResult:
    """F [R] of the rows; ∂F/∂z [R, W] when asked; the clean row's F(a) and ∂F/∂a [L, W]
    (layers in the order asked) when asked."""

    scores: torch.Tensor
    grads: torch.Tensor | None = None
    clean_score: float | None = None
    clean_grads: torch.Tensor | None = None


def _offset_patches(clean_deltas: dict[int, torch.Tensor], rows, position: int) -> dict[int, list[_NeuronPatch]]:
    """act[rows, position] += δ_l at every layer l (the value is unchanged: δ = 0)."""
    return {layer: [_NeuronPatch(rows=rows, position=position, fn=lambda old, d=delta: old + d)]
            for layer, delta in clean_deltas.items()}


def _merge(*patch_sets: dict[int, list[_NeuronPatch]]) -> dict[int, list[_NeuronPatch]]:
    out: dict[int, list[_NeuronPatch]] = {}
    for patches in patch_sets:
        for layer, items in patches.items():
            out.setdefault(layer, []).extend(items)
    return out


class _RowRunner:
    def __init__(self, family: ModelFamily, query: EncodedQuery, objective: str):
        self.family = family
        self.model = family.model
        self.query = query
        self.objective = objective
        self.device = family.device()
        self.ids = query.input_ids.to(self.device)
        self.target_ids = query.target_ids.to(self.device)
        body_and_head = family.body_and_head()
        self.body, self.head = body_and_head if body_and_head is not None else (None, None)
        self.cache_keyword = cache_keyword(self.body if self.head is not None else self.model)

    def _forward(self, keep_last: int | None = None, **inputs) -> tuple[torch.Tensor, bool, object]:
        """(final hidden states [B, n, H] if the head is folded into the score, else logits
        [B, n, V]; which of the two; the returned key/value cache). ``keep_last``: only the
        last positions' logits are needed (the model's LM head runs on those alone).
        A ``past_key_values`` input goes to the model under the keyword its forward takes."""
        if "past_key_values" in inputs and self.cache_keyword != "past_key_values":
            inputs[self.cache_keyword] = inputs.pop("past_key_values")
        if self.head is not None:
            out = self.body(**inputs)
            return out.last_hidden_state, True, returned_cache(out)
        out = self.model(**inputs, **(_last_logits_only(self.model, keep_last) if keep_last else {}))
        return out.logits, False, returned_cache(out)

    def _score(self, outputs: torch.Tensor, hidden: bool) -> torch.Tensor:
        """F [R] from :meth:`_forward`'s outputs at the score positions."""
        if hidden:
            return head_scores(outputs, self.head, self.target_ids, self.objective)
        return target_scores(outputs, self.target_ids, self.objective)

    def _patches(self, row_layers: torch.Tensor, z: torch.Tensor, position: int, row_offset: int = 0):
        patches: dict[int, list[_NeuronPatch]] = {}
        for layer in torch.unique(row_layers).tolist():
            rows = torch.nonzero(row_layers == layer).squeeze(-1)
            values = z[rows]
            patches[int(layer)] = [_NeuronPatch(rows=rows + row_offset, position=position, fn=lambda _old, v=values: v)]
        return patches

    def logits(self, row_layers: torch.Tensor, z: torch.Tensor,
               clean_deltas: dict[int, torch.Tensor] | None = None) -> _RowOutputs:
        """Outputs of the rows, plus the clean row appended last when ``clean_deltas`` is
        given (runners that reorder rows override this)."""
        R = z.shape[0]
        if clean_deltas is None:
            return self.patched_logits(R, lambda pos: self._patches(row_layers, z, pos))
        clean_rows = torch.tensor([R])
        out = self.patched_logits(R + 1, lambda pos: _merge(self._patches(row_layers, z, pos),
                                                           _offset_patches(clean_deltas, clean_rows, pos)))
        out.clean_row = R
        return out

    def patched_logits(self, R: int, patches_at: "Callable[[int], dict]") -> _RowOutputs:
        """Outputs at the score positions of R copies of the query with ``patches_at(position)``
        applied (position = where the target position sits in this runner's input)."""
        raise NotImplementedError

    def scaled_scores(self, multipliers: dict[int, torch.Tensor]) -> torch.Tensor:
        """F [R] with the neuron vector at the target position multiplied elementwise by
        ``multipliers[layer]`` [R, W] (1 = untouched, 0 = suppressed, 2 = enhanced)."""
        R = next(iter(multipliers.values())).shape[0]

        def patches_at(position: int):
            return {layer: [_NeuronPatch(rows=slice(None), position=position,
                                         fn=lambda old, m=m: old * m.to(old.device, old.dtype))]
                    for layer, m in multipliers.items()}

        with torch.no_grad():
            out = self.patched_logits(R, patches_at)
            return self._score(out.values, out.hidden)

    def _scores(self, row_layers: torch.Tensor, z: torch.Tensor,
                clean_deltas: dict[int, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(F [R] in row order, F of the clean row or None). Runners that reorder rows (layer
        skipping) return logits in their own order plus the inverse permutation, applied to
        the [R] scores rather than to the [R, T, V] logits (whose indexing backward would
        allocate a vocab-sized zero tensor per batch)."""
        out = self.logits(row_layers, z, clean_deltas)
        scores = self._score(out.values, out.hidden)
        clean = None if out.clean_row is None else scores[out.clean_row]
        requested = scores[out.first_row:out.first_row + z.shape[0]]
        return (requested if out.inverse is None else requested[out.inverse]), clean

    def run(self, row_layers: torch.Tensor, values: torch.Tensor, need_grad: bool,
            grad_rows: torch.Tensor | None = None, clean_layers: Sequence[int] | None = None) -> RowResult:
        """F [R] of the rows, and ∂F/∂z [R, W] when ``need_grad`` (rows outside the boolean
        mask ``grad_rows`` ride along for their score only: their gradient rows are 0).
        ``clean_layers``: one more row, the clean input, rides along and gives F(a) and
        ∂F/∂a_l for each of these layers (the α = 1 path points of every layer in one row);
        an empty list asks for F(a) alone (a rule without α = 1 then needs no pass of its own)."""
        dtype = next(self.model.parameters()).dtype
        z = values.to(self.device, dtype).detach().clone()
        if not need_grad and clean_layers is None:
            with torch.no_grad():
                return RowResult(self._scores(row_layers, z)[0])
        deltas = None
        if clean_layers is not None:
            width = z.shape[-1]
            deltas = {int(l): torch.zeros(1, width, device=self.device, dtype=dtype, requires_grad=True)
                      for l in clean_layers}
        z.requires_grad_(need_grad)
        with torch.enable_grad():
            scores, clean = self._scores(row_layers, z, deltas)
            total = scores.new_zeros(())
            if need_grad:
                total = total + (scores.sum() if grad_rows is None else scores[grad_rows.to(scores.device)].sum())
            leaves = ([z] if need_grad else []) + (list(deltas.values()) if deltas else [])
            if deltas:
                total = total + clean
            grads = torch.autograd.grad(total, leaves) if leaves else ()
        result = RowResult(scores.detach())
        if need_grad:
            result.grads = grads[0].float()
        if clean_layers is not None:
            result.clean_score = float(clean.detach())
        if deltas:
            result.clean_grads = torch.cat([g.float() for g in grads[int(need_grad):]])  # [L, W]
        return result

    def clean_vectors_at(self, layers: Sequence[int]) -> torch.Tensor:
        """The clean neuron vectors at the target position [L, W] float32."""
        return neuron_vectors(self.family, self.query.input_ids.unsqueeze(0), self.query.target_position, layers)[0]

    def clean_score(self) -> float:
        """F(a) of the clean input (IG takes it from the clean row where one runs)."""
        value = self.clean_vectors_at([0])
        with torch.no_grad():
            return float(self.run(torch.tensor([0]), value, need_grad=False).scores[0])


class _FullRunner(_RowRunner):
    """Whole-model forward per row (any family; the reference strategy)."""

    def patched_logits(self, R, patches_at):
        with NeuronHooks(self.family, patches_at(self.query.target_position)):
            values, hidden, _ = self._forward(input_ids=self.ids.unsqueeze(0).expand(R, -1))
        return _RowOutputs(values[:, self.query.score_positions.to(self.device)], hidden=hidden)
