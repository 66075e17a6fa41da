"""Logits at chosen positions only, for one sequence or several in one right-padded forward.

A causal LM's LM head is most of a short forward's cost when the vocabulary is large
(Gemma-3: 262k entries × 640), and a score reads a few positions of it. For one sequence,
models whose forward takes ``logits_to_keep`` (an index tensor) apply the head to those rows
alone; others compute every row and the wanted ones are kept. Several sequences go through one forward, right-padded
under an attention mask: padding follows every real token, so no real position attends to it
and each real position's logits are those of its sequence alone (up to float rounding of the
batched matrix products).
"""

from __future__ import annotations

import functools
import inspect
from typing import Sequence

import torch
from torch import nn

__all__ = ["takes_logits_to_keep", "logits_at", "batched_logits_at"]


@functools.lru_cache(maxsize=None)
def _class_takes_logits_to_keep(model_class: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return False


def takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` (transformers' causal LMs)."""
    return _class_takes_logits_to_keep(type(model))


def logits_at(model: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits ``[k, V]`` (float32) at ``positions`` [k] of the sequence ``ids`` [n]."""
    device = next(model.parameters()).device
    if takes_logits_to_keep(model):
        return model(input_ids=ids.unsqueeze(0).to(device), logits_to_keep=positions.to(device)).logits[0].float()
    out = model(input_ids=ids.unsqueeze(0).to(device)).logits[0]
    return out[positions.to(out.device)].float()


def batched_logits_at(model: nn.Module, seqs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      pad_id: int = 0) -> list[torch.Tensor]:
    """:func:`logits_at` of each ``(ids [n_i], positions [k_i])`` from one forward: the
    sequences right-padded with ``pad_id`` (masked out) to the longest; the LM head (the
    model's output embeddings) is applied to exactly the wanted (row, position) pairs: a hook
    hands it those N hidden states as one ``[1, N, H]`` input, so what the model does after
    the head (e.g. Gemma's logit soft-capping) applies to them unchanged. Models without
    output embeddings compute every row and keep the wanted ones. Returns one ``[k_i, V]``
    tensor per sequence."""
    if len(seqs) == 1:
        return [logits_at(model, *seqs[0])]
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for row, (seq, _) in enumerate(seqs):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    rows = torch.cat([torch.full((len(pos),), row, dtype=torch.long) for row, (_, pos) in enumerate(seqs)])
    cols = torch.cat([pos.long() for _, pos in seqs])
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if not isinstance(head, nn.Module):
        logits = model(**kwargs).logits
        wanted = logits[rows.to(logits.device), cols.to(logits.device)]
    else:
        def gather(_module, args):
            hidden = args[0]
            return (hidden[rows.to(hidden.device), cols.to(hidden.device)].unsqueeze(0), *args[1:])

        handle = head.register_forward_pre_hook(gather)
        try:
            wanted = model(**kwargs).logits[0]
        finally:
            handle.remove()
        if wanted.shape[0] != len(rows):
            raise RuntimeError(f"{type(model).__name__}: the LM head saw {wanted.shape[0]} rows, not the "
                               f"{len(rows)} gathered ones")
    return [part.float() for part in torch.split(wanted, [len(pos) for _, pos in seqs])]
