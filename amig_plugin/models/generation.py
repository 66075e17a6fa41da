"""Greedy continuation of a prompt by a causal LM: the model's own answer.

Each step runs the prompt and the tokens so far through the model and applies the LM head to
the last position only (:func:`~amig_plugin.models.logits.logits_at`): with a large
vocabulary (Gemma-3: 262k entries) the head over every position was most of the cost, and
the argmax reads one row.
"""

from __future__ import annotations

import torch
from torch import nn

from .logits import logits_at

__all__ = ["greedy_continuation", "GREEDY_VERSION"]

#: identity of :func:`greedy_continuation`'s rules (stops, blank skipping): part of the key of
#: cached answers, so a change of the rules is never served an old answer
GREEDY_VERSION = "argmax, EOS or newline stop, up to 4 leading blank tokens skipped"


def greedy_continuation(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 8,
                        max_blank_tokens: int = 4) -> str:
    """The model's greedy continuation of ``prompt``, stripped.

    Argmax token by token, stopping at EOS or at the first newline after some text. Leading
    blank tokens (a base model often starts a line break after a question) are skipped and do
    not count: at most ``max_blank_tokens`` of them, then at most ``max_new_tokens`` tokens of
    text. "" when only blanks came. Used as the ground truth where an edit format has none
    (MzsRE, MEND-style files without ``answers``)."""
    ids = list(tokenizer(prompt)["input_ids"])
    start = len(ids)
    eos = tokenizer.eos_token_id
    text_tokens = 0
    with torch.no_grad():
        for _ in range(max_new_tokens + max_blank_tokens):
            last = torch.tensor([len(ids) - 1])
            nxt = int(logits_at(model, torch.tensor(ids, dtype=torch.long), last)[0].argmax())
            if nxt == eos:
                break
            ids.append(nxt)
            text = tokenizer.decode(ids[start:], skip_special_tokens=True)
            if not text.strip():
                if len(ids) - start >= max_blank_tokens:
                    break
                continue
            text_tokens += 1
            if "\n" in text.lstrip() or text_tokens >= max_new_tokens:
                break
    text = tokenizer.decode(ids[start:], skip_special_tokens=True)
    return text.strip().split("\n")[0].strip()
