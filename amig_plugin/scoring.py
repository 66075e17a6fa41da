"""The target score F and its gradient, from logits or straight from the last hidden state.

F for a target of T tokens t_1..t_T, teacher-forced:

    logprob:  F = Σ_k log P(t_k | prefix, t_<k) = Σ_k (logit_k[t_k] − logsumexp(logit_k))
    prob:     F = exp(logprob)  (the product of the token probabilities; the paper's)

    ∂F/∂logit_k = g · (onehot(t_k) − softmax(logit_k)),  g = 1 (logprob) or F (prob)

Both functions below have this backward written by hand. :func:`head_scores` also folds the
LM head into it (logits = h Wᵀ + b): one vocabulary-sized tensor per call, turned into the
softmax and then into ∂F/∂logits in place, instead of the logits plus the three or four
vocabulary-sized temporaries of autograd's log-softmax, gather and linear backward. For the
IG engine the LM head is about half of all multiply-adds, and on a CPU every fresh
vocabulary-sized tensor costs page faults on top of the arithmetic.
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


class _HeadScore(torch.autograd.Function):
    """F [R] from the final hidden states [R, T, H] through the LM head, with one
    vocabulary-sized tensor: logits, then (in place) the softmax, then ∂F/∂logits."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target_ids: torch.Tensor, prob: bool) -> torch.Tensor:
        R, T, H = hidden.shape
        flat = hidden.reshape(R * T, H)
        probs = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())  # [RT, V]
        index = target_ids.view(1, T).expand(R, T).reshape(R * T, 1)
        target_logit = probs.gather(1, index).view(R, T)
        top = probs.amax(1, keepdim=True)
        probs.sub_(top).exp_()
        total = probs.sum(1, keepdim=True)
        probs.div_(total)  # softmax, in place
        logp = (target_logit - top.view(R, T) - total.log().view(R, T)).sum(-1)  # Σ_k log P(t_k)
        score = logp.exp() if prob else logp
        ctx.save_for_backward(probs, weight, index, score)
        ctx.prob, ctx.shape = prob, (R, T, H)
        return score

    @staticmethod
    def backward(ctx, grad_score: torch.Tensor):
        probs, weight, index, score = ctx.saved_tensors
        R, T, H = ctx.shape
        g = grad_score * score if ctx.prob else grad_score  # [R]
        g = g.repeat_interleave(T).view(R * T, 1).to(probs.dtype)
        probs.mul_(-g).scatter_add_(1, index, g)  # ∂F/∂logits, in place of the softmax
        return torch.mm(probs, weight).view(R, T, H), None, None, None, None


def head_scores(hidden: torch.Tensor, head: LMHead, target_ids: torch.Tensor, objective: str) -> torch.Tensor:
    """hidden [R, T, H] at the score positions (after the final norm) -> F [R], with the LM head
    folded into the score's backward. Gradients flow to ``hidden`` only (the head is frozen);
    half-precision models and heads that need gradients take the plain path. One backward per
    forward: the backward reuses the saved softmax in place (a second one raises)."""
    weight, bias = head.weight, head.bias
    fused = (hidden.dtype == weight.dtype and weight.dtype in (torch.float32, torch.float64)
             and not weight.requires_grad and (bias is None or not bias.requires_grad))
    if not fused:
        return target_scores(torch.nn.functional.linear(hidden, weight, bias), target_ids, objective)
    return _HeadScore.apply(hidden, weight, bias, target_ids.to(hidden.device), objective == "prob")
