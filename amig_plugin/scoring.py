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

import weakref
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


class _LogitBuffers:
    """The vocabulary-sized tensor of :class:`_HeadScore`, kept for the next call with the same
    head weight (one per weight, dropped when the weight is freed). Tensors above glibc's
    largest mmap threshold (32 MB) go back to the OS when freed and return as fresh zeroed
    pages on the next allocation: ~20 ms of page faults per 46 MB call on the benchmark
    machine. A spare with enough rows lends its first ``rows`` rows."""

    def __init__(self) -> None:
        self._spare: dict[int, tuple[weakref.ref, torch.Tensor]] = {}

    def take(self, weight: torch.Tensor, rows: int) -> torch.Tensor:
        ref, spare = self._spare.pop(id(weight), (None, None))
        if spare is not None and ref() is weight and spare.shape[0] >= rows and spare.dtype == weight.dtype:
            return spare[:rows]
        return torch.empty(rows, weight.shape[0], dtype=weight.dtype, device=weight.device)

    def give_back(self, weight: torch.Tensor, tensor: torch.Tensor) -> None:
        full = tensor if tensor._base is None else tensor._base
        key = id(weight)
        self._spare[key] = (weakref.ref(weight, lambda _ref: self._spare.pop(key, None)), full)


_LOGIT_BUFFERS = _LogitBuffers()


class _HeadScore(torch.autograd.Function):
    """F [R] from the final hidden states [R, T, H] through the LM head, with one
    vocabulary-sized tensor: logits, then (in place) the softmax, then ∂F/∂logits."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target_ids: torch.Tensor, prob: bool, backward_follows: bool) -> torch.Tensor:
        R, T, H = hidden.shape
        flat = hidden.reshape(R * T, H)
        probs = _LOGIT_BUFFERS.take(weight, R * T)  # [RT, V]
        if bias is None:
            torch.mm(flat, weight.t(), out=probs)
        else:
            torch.addmm(bias, flat, weight.t(), out=probs)
        index = target_ids.view(1, T).expand(R, T).reshape(R * T, 1)
        target_logit = probs.gather(1, index).view(R, T)
        top = probs.amax(1, keepdim=True)
        probs.sub_(top).exp_()
        total = probs.sum(1, keepdim=True)
        probs.div_(total)  # softmax, in place
        logp = (target_logit - top.view(R, T) - total.log().view(R, T)).sum(-1)  # Σ_k log P(t_k)
        score = logp.exp() if prob else logp
        if backward_follows:
            ctx.save_for_backward(probs, weight, index, score)
            ctx.prob, ctx.shape = prob, (R, T, H)
        else:
            _LOGIT_BUFFERS.give_back(weight, probs)
        return score

    @staticmethod
    def backward(ctx, grad_score: torch.Tensor):
        probs, weight, index, score = ctx.saved_tensors
        R, T, H = ctx.shape
        g = grad_score * score if ctx.prob else grad_score  # [R]
        g = g.repeat_interleave(T).view(R * T, 1).to(probs.dtype)
        probs.mul_(-g).scatter_add_(1, index, g)  # ∂F/∂logits, in place of the softmax
        grad_hidden = torch.mm(probs, weight).view(R, T, H)
        _LOGIT_BUFFERS.give_back(weight, probs)
        return grad_hidden, None, None, None, None, None


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
    backward_follows = torch.is_grad_enabled() and hidden.requires_grad
    return _HeadScore.apply(hidden, weight, bias, target_ids.to(hidden.device), objective == "prob", backward_follows)
