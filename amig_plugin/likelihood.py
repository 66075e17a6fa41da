"""log P(target | prompt) with plain forwards (no attribution): teacher-forced, summed over
the target's tokens, with the engine's encoding (:meth:`ModelFamily.encode`).

:func:`likelihood` scores one pair and says whether greedy decoding reproduces it (the
fact-checking baselines); :func:`score_pairs` scores many pairs in padded batches (the LIKN
protocols' candidate ranking).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch

from .attribution import frozen_eval, target_scores
from .models import get_family


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


def _accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


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
    device = family.device()
    keep_ok = family.kind == "causal" and _accepts_logits_to_keep(family.model)
    out = [0.0] * len(queries)
    with frozen_eval(family.model), torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(queries[k].input_ids) for k in chunk)
            ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, k in enumerate(chunk):
                n = len(queries[k].input_ids)
                ids[r, :n] = queries[k].input_ids
                mask[r, :n] = 1
            kwargs = {}
            if keep_ok:
                keep = sorted({int(p) for k in chunk for p in queries[k].score_positions})
                col = {p: c for c, p in enumerate(keep)}
                kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
            logits = family.model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for r, k in enumerate(chunk):
                q = queries[k]
                total = 0.0
                for p, t in zip(q.score_positions.tolist(), q.target_ids.tolist()):
                    total += float(logp[r, col[p] if keep_ok else p, t])
                out[k] = total
    return out
