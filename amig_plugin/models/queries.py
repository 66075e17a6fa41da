"""Queries: one prompt + target tokenized for one model (:class:`EncodedQuery`), the prompt and
target rules they follow, and the errors for pairs that cannot become a query."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import causal_cloze, causal_prompt_and_target, normalize_text
from ..errors import AmigError


class QueryError(AmigError, ValueError):
    """A prompt/target pair cannot be turned into a query (no mask, empty target, ...)."""


class PromptTooLongError(QueryError):
    """A query with more tokens than the model has positions."""


@dataclass
class EncodedQuery:
    """One prompt + target, tokenized for one model.

    input_ids:        LongTensor [n] — what the model reads (causal: prompt + target[:-1],
                      teacher-forced; masked: prompt with one ``[MASK]`` per target token).
    target_position:  index in ``input_ids`` whose FFN neuron vector is attributed/edited.
    target_ids:       LongTensor [T] — gold target tokens.
    score_positions:  LongTensor [T] — position whose logits predict ``target_ids[k]``.
    baseline_positions: LongTensor [n'] — prompt tokens that AMIG replaces one at a time
                      by the baseline token (special tokens and the masks excluded).
    """

    input_ids: torch.Tensor
    target_position: int
    target_ids: torch.Tensor
    score_positions: torch.Tensor
    baseline_positions: torch.Tensor
    prompt: str = ""
    target: str = ""

    @property
    def num_target_tokens(self) -> int:
        return int(self.target_ids.numel())


def causal_prefix_and_target(prompt: str, target: str) -> tuple[str, str]:
    """(prefix, target text) for a causal LM: a prompt with ``<mask>`` is cut there
    (:func:`amig_plugin.data.causal_prompt_and_target`); one without is continued by the
    target as if it ended in ``" <mask>"`` (:func:`amig_plugin.data.causal_cloze`: one space
    before the target, none after Chinese/Japanese text or existing whitespace)."""
    return causal_prompt_and_target(causal_cloze(prompt), target)


def _check_target(target: str) -> None:
    if not isinstance(target, str) or not target.strip():
        raise QueryError(f"target {target!r} is empty; give the object as a non-empty string, e.g. 'Paris'")


def _tokenize_target(tokenizer, target: str) -> list[int]:
    """Token ids of ``target`` (NFC-normalised, no special tokens). Refuses a target that is
    empty or made only of the tokenizer's unknown token: its probability would be that of
    ``[UNK]``, the same for every word the vocabulary lacks."""
    _check_target(target)
    target = normalize_text(target)
    ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if len(ids) == 0:
        raise QueryError(f"target {target!r} tokenizes to no tokens with {type(tokenizer).__name__}; use a different target string")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and all(i == unk for i in ids):
        raise QueryError(f"target {target.strip()!r} is only unknown tokens ({tokenizer.unk_token}) for "
                         f"{type(tokenizer).__name__}: the model cannot tell it from any other unknown word; "
                         "use a target spelled with the model's vocabulary")
    return ids
