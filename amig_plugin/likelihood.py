"""log P(target | prompt) with plain forwards (no attribution): teacher-forced, summed over
the target's tokens, with the engine's encoding (:meth:`ModelFamily.encode`).

:func:`likelihood` scores one pair and says whether greedy decoding reproduces it (the
fact-checking baselines); :func:`score_pairs` scores many pairs in padded batches (the LIKN
protocols' candidate ranking).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .attribution import frozen_eval, target_scores
from .models import get_family
from .models.logits import batched_logits_at


def likelihood(model, tokenizer, prompt: str, candidate: str) -> dict:
    """log P(candidate | prompt) (teacher-forced, summed over its tokens) and whether the
    model's greedy prediction reproduces it (argmax at every target step: exactly when
    greedy generation's first T tokens are the candidate's)."""
    family = get_family(model)
    query = family.encode(tokenizer, prompt, candidate)
    device = family.device()
    with frozen_eval(family.model), torch.no_grad():
        logits = family.model(input_ids=query.input_ids.to(device).unsqueeze(0)).logits[:, query.score_positions.to(device)]
        logp = float(target_scores(logits, query.target_ids, "logprob")[0])
        greedy = logits[0].argmax(-1).cpu()
    return {"logprob": logp, "exact_match": bool(torch.equal(greedy, query.target_ids)), "greedy": greedy.tolist(),
            "n_tokens": int(query.target_ids.numel())}


def score_pairs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> list[float]:
    """Σ log P(target tokens) (teacher-forced) of each (prompt, target), in padded batches.

    Same encoding as the engine (:meth:`ModelFamily.encode`); right padding, so causal
    positions are unchanged; only the needed positions' logits are computed when the model
    accepts ``logits_to_keep``."""
    family = get_family(model)
    queries = [family.encode(tokenizer, p, t) for p, t in pairs]
    order = sorted(range(len(queries)), key=lambda k: len(queries[k].input_ids))
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = family.baseline_token_id(tokenizer) if family.kind == "causal" else 0
    out = [0.0] * len(queries)
    with frozen_eval(family.model), torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            logits = batched_logits_at(family.model, [(queries[k].input_ids, queries[k].score_positions)
                                                      for k in chunk], pad_id=int(pad))
            for k, rows in zip(chunk, logits):
                logp = torch.log_softmax(rows, dim=-1)  # [T, V] at the target's positions
                out[k] = float(logp.gather(-1, queries[k].target_ids.to(logp.device)[:, None]).sum())
    return out
