"""The target score F and its gradient, from logits or straight from the last hidden state.

F for a target of T tokens t_1..t_T, teacher-forced:

    logprob:  F = Σ_k log P(t_k | prefix, t_<k) = Σ_k (logit_k[t_k] − logsumexp(logit_k))
    prob:     F = exp(logprob)  (the product of the token probabilities; the paper's)

    ∂F/∂logit_k = g · (onehot(t_k) − softmax(logit_k)),  g = 1 (logprob) or F (prob)

Both functions below have this backward written by hand. :func:`head_scores` also folds the
LM head into it (logits = h Wᵀ + b) and streams over the vocabulary: each chunk of logits is
made, exponentiated and multiplied back into Σ_v p_v W_v while it sits in the cache, so the
forward yields F and ∂F/∂h together and no vocabulary-sized tensor exists (autograd's path
writes four or five of them per call: logits, log-softmax, the gather's and the softmax's
gradients). For the IG engine the LM head is about half of all multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class _TargetScore(torch.autograd.Function):
    """F [R] from logits [R, T, V]. Autograd's log_softmax + gather would write three
    vocab-sized tensors per row in the backward (a zero fill, a scatter, the softmax
    gradient); this writes one."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, prob: bool) -> torch.Tensor:
        ctx.in_dtype = logits.dtype
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()  # half-precision models: score in float32
        lse = torch.logsumexp(logits, dim=-1)  # [R, T]
        total = (logits.gather(-1, index).squeeze(-1) - lse).sum(-1)  # Σ_k log P(t_k)
        score = total.exp() if prob else total
        ctx.save_for_backward(logits, lse, index, score)
        ctx.prob = prob
        return score

    @staticmethod
    def backward(ctx, grad_score: torch.Tensor):
        logits, lse, index, score = ctx.saved_tensors
        g = grad_score * score if ctx.prob else grad_score  # ∂out/∂(Σ log P) per row, [R]
        grad = torch.exp(logits - lse.unsqueeze(-1))  # softmax
        grad.mul_(-g.view(-1, 1, 1))
        grad.scatter_add_(-1, index, g.view(-1, 1, 1).expand_as(index).to(grad.dtype))
        return grad.to(ctx.in_dtype), None, None


def target_scores(logits: torch.Tensor, target_ids: torch.Tensor, objective: str) -> torch.Tensor:
    """logits [R, T, V] at the score positions, target_ids [T] -> F [R] (float32).

    logprob: Σ_k log P(t_k | teacher-forced prefix);  prob: exp of that (product of probs).
    """
    index = target_ids.to(logits.device).view(1, -1, 1).expand(logits.shape[0], -1, 1)
    return _TargetScore.apply(logits, index, objective == "prob")


@dataclass(frozen=True)
class LMHead:
    """A plain linear LM head: logits = hidden @ weight.T + bias (weight [V, H], bias [V] or
    None), with no soft-capping or scaling after it."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None


CHUNK_VOCAB = 1024
"""Vocabulary entries per chunk in :class:`_HeadScore`: a chunk of head rows (2.5-3 MB in float32
for H = 640-768) stays in the CPU caches between the chunk's two matrix products, so the head is
read from memory once per call (on a 2-core CPU, 1024 ran Gemma-3's 262k-entry head in 0.69 s
for 127 rows and 0.13 s for 13 rows, against 1.00 s and 0.30 s with 16 MB logit chunks)."""

CHUNK_ELEMENTS = 1 << 22
"""At most this many logits per chunk (16 MB in float32): with many rows the chunk shrinks below
:data:`CHUNK_VOCAB`; no vocabulary-sized tensor is ever allocated."""


class _HeadScore(torch.autograd.Function):
    """F [R] from the final hidden states [R, T, H] through the LM head (weight W [V, H], bias
    b), streaming over the vocabulary in chunks. Per scored row h, with a running maximum m:

        u = exp(W_c h + b_c − m),   Z += Σ u,   S += uᵀ W_c     (Z, S rescaled when m grows)
        log P(t) = (W_t h + b_t) − m − log Z,    ∂ log P(t) / ∂h = W_t − S / Z = W_t − Σ_v p_v W_v

    so the forward also yields the gradient direction and the backward is a scaling of it
    (∂F/∂h = g · direction, g = 1 for log P, F for P). The logits exist one chunk at a time."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target_ids: torch.Tensor, prob: bool, backward_follows: bool) -> torch.Tensor:
        R, T, H = hidden.shape
        N, V = R * T, weight.shape[0]
        flat = hidden.reshape(N, H)
        index = target_ids.view(1, T).expand(R, T).reshape(N)
        top = flat.new_full((N, 1), float("-inf"))
        total = flat.new_zeros(N, 1)
        weighted = flat.new_zeros(N, H) if backward_follows else None  # S
        chunk = min(V, max(64, min(CHUNK_VOCAB, CHUNK_ELEMENTS // N)))
        logits = flat.new_empty(N, chunk)
        for v0 in range(0, V, chunk):
            w = weight[v0:v0 + chunk]
            u = logits[:, :w.shape[0]]
            if bias is None:
                torch.mm(flat, w.t(), out=u)
            else:
                torch.addmm(bias[v0:v0 + chunk], flat, w.t(), out=u)
            new_top = torch.maximum(top, u.amax(1, keepdim=True))
            rescale = torch.exp(top - new_top)
            u.sub_(new_top).exp_()
            total.mul_(rescale).add_(u.sum(1, keepdim=True))
            if weighted is not None:
                weighted.mul_(rescale).addmm_(u, w)
            top = new_top
        target_logit = (flat * weight[index]).sum(1) + (0 if bias is None else bias[index])
        logp = (target_logit - top.view(N) - total.log().view(N)).view(R, T).sum(-1)  # Σ_k log P(t_k)
        score = logp.exp() if prob else logp
        if backward_follows:
            direction = weight[index] - weighted / total  # [N, H]
            ctx.save_for_backward(direction, score)
            ctx.prob, ctx.shape = prob, (R, T, H)
        return score

    @staticmethod
    def backward(ctx, grad_score: torch.Tensor):
        direction, score = ctx.saved_tensors
        R, T, H = ctx.shape
        g = grad_score * score if ctx.prob else grad_score  # ∂out/∂(Σ log P) per row, [R]
        grad_hidden = direction.view(R, T, H) * g.view(R, 1, 1).to(direction.dtype)
        return grad_hidden, None, None, None, None, None


def head_scores(hidden: torch.Tensor, head: LMHead, target_ids: torch.Tensor, objective: str) -> torch.Tensor:
    """hidden [R, T, H] at the score positions (after the final norm) -> F [R], with the LM head
    folded into the score (:class:`_HeadScore`). Gradients flow to ``hidden`` only (the head is
    frozen); half-precision models and heads that need gradients take the plain path. The
    gradient direction is made in the forward only when a backward can follow (grad mode on
    and ``hidden`` requiring grad)."""
    weight, bias = head.weight, head.bias
    fused = (hidden.dtype == weight.dtype and weight.dtype in (torch.float32, torch.float64)
             and not weight.requires_grad and (bias is None or not bias.requires_grad))
    if not fused:
        return target_scores(torch.nn.functional.linear(hidden, weight, bias), target_ids, objective)
    backward_follows = torch.is_grad_enabled() and hidden.requires_grad
    return _HeadScore.apply(hidden, weight, bias, target_ids.to(hidden.device), objective == "prob", backward_follows)
