"""Weight-level edits of value vectors (the output projection's weights fed by a neuron):
Dai et al.'s update rule and erasure, with a bit-for-bit backup."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from ..models import ModelFamily, get_family
from ..neurons import Neuron
from .activations import _multipliers


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
    from ..models import _tokenize_target

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
