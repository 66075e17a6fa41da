"""amig_plugin.scoring: the target score F (prob / logprob, teacher-forced) and its hand-written
backward, from logits and straight from the last hidden state through the LM head, streamed over
vocabulary chunks; each against autograd on the plain computation. amig_plugin.likelihood: log
P(target | prompt) of many pairs in padded batches equals one pair at a time."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_target_scores_hand_written_backward_matches_autograd(objective):
    from amig_plugin.attribution import target_scores

    torch.manual_seed(0)
    logits = torch.randn(4, 3, 11, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([2, 7, 7])
    logp = torch.log_softmax(logits, -1).gather(-1, target.view(1, -1, 1).expand(4, -1, 1)).squeeze(-1).sum(-1)
    reference = logp.exp() if objective == "prob" else logp
    weights = torch.randn(4, dtype=torch.float64)
    ours = target_scores(logits, target, objective)
    g_ours, = torch.autograd.grad((ours * weights).sum(), logits)
    g_ref, = torch.autograd.grad((reference * weights).sum(), logits)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: target_scores(x, target, objective), (logits.detach().requires_grad_(),))


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_head_scores_equal_the_head_then_the_score(objective, with_bias):
    """The LM head folded into the score (one vocabulary-sized tensor, softmax and gradient in
    place) gives the same F and ∂F/∂hidden as logits = linear(hidden) then the score."""
    from amig_plugin.scoring import LMHead, head_scores, target_scores

    torch.manual_seed(0)
    hidden = torch.randn(5, 3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, dtype=torch.float64) * 3  # large logits: a tiny P(t) for logprob
    bias = torch.randn(13, dtype=torch.float64) if with_bias else None
    target = torch.tensor([2, 7, 7])
    weights = torch.randn(5, dtype=torch.float64)
    ours = head_scores(hidden, LMHead(weight, bias), target, objective)
    reference = target_scores(torch.nn.functional.linear(hidden, weight, bias), target, objective)
    g_ours, = torch.autograd.grad((ours * weights).sum(), hidden)
    g_ref, = torch.autograd.grad((reference * weights).sum(), hidden)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-14)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    # the backward only scales the saved direction: a second one through the same graph agrees
    again = head_scores(hidden, LMHead(weight, bias), target, objective).sum()
    first, = torch.autograd.grad(again, hidden, retain_graph=True)
    second, = torch.autograd.grad(again, hidden)
    assert torch.equal(first, second)


@pytest.mark.parametrize("with_bias", [False, True])
def test_head_scores_stream_over_vocabulary_chunks(monkeypatch, with_bias):
    """With chunks far smaller than the vocabulary (the running maximum growing from chunk to
    chunk, so Z and S are rescaled), F and ∂F/∂hidden still equal the plain head-then-score;
    without grad mode no gradient direction is made and the scores are the same."""
    import amig_plugin.scoring as scoring
    from amig_plugin.scoring import LMHead, head_scores, target_scores

    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 1)  # 64-token chunks (the smallest)
    torch.manual_seed(2)
    V, H = 5000, 8
    weight = torch.randn(V, H, dtype=torch.float64) * torch.linspace(0.1, 4, V, dtype=torch.float64).view(V, 1)
    bias = torch.randn(V, dtype=torch.float64) if with_bias else None
    hidden = torch.randn(3, 2, H, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([4321, 17])
    for objective in ("prob", "logprob"):
        ours = head_scores(hidden, LMHead(weight, bias), target, objective)
        reference = target_scores(torch.nn.functional.linear(hidden, weight, bias), target, objective)
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-300)
        g_ours, = torch.autograd.grad(ours.sum(), hidden)
        g_ref, = torch.autograd.grad(reference.sum(), hidden)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-300)
        with torch.no_grad():
            torch.testing.assert_close(head_scores(hidden, LMHead(weight, bias), target, objective), ours.detach(),
                                       rtol=0, atol=0)


PAIRS = [("the capital of france is <mask>", "paris"), ("the capital of japan is <mask>", "tokyo berlin"),
         ("apple makes <mask>", "iphone"), ("the language spoken in the capital of italy is <mask>", "rome")]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_score_pairs_in_padded_batches_equal_one_pair_at_a_time(kind):
    """score_pairs (right-padded batches, sorted by length, logits_to_keep where accepted) gives
    each pair's log P(target | prompt) of likelihood() and of a plain teacher-forced forward."""
    from amig_plugin.likelihood import likelihood, score_pairs
    from amig_plugin.models import get_family
    from amig_plugin.testing import get_model, plain_log_prob

    model, tok = get_model(kind)
    pairs = [(p.replace(" <mask>", " <mask> .") if kind == "bert" else p, t) for p, t in PAIRS]
    batched = score_pairs(model, tok, pairs, batch_size=3)
    family = get_family(model)
    for (prompt, target), got in zip(pairs, batched):
        one = likelihood(model, tok, prompt, target)
        q = family.encode(tok, prompt, target)
        with torch.no_grad():
            plain = float(plain_log_prob(model, q.input_ids, q.score_positions, q.target_ids))
        assert got == pytest.approx(one["logprob"], rel=1e-5, abs=1e-6) == pytest.approx(plain, rel=1e-5, abs=1e-6)
        assert one["n_tokens"] == len(target.split()) and got < 0
