"""The optimized knowledge-neuron edit: only the chosen value vectors change, the target is
installed on a briefly trained tiny model, and restore is bit-exact."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from amig_plugin.errors import AmigError
from amig_plugin.models import get_family
from amig_plugin.intervene.neuron_edit import optimize_value_vectors
from amig_plugin.neurons import localize
from amig_plugin.testing import tiny

FACTS = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid")]


def _prompt(country: str) -> str:
    return f"the capital of {country} is"


def checksums(model) -> dict[str, str]:
    return {n: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for n, p in model.named_parameters()}


_TRAINED: dict = {}


def trained(kind: str):
    """A tiny ``kind`` model trained (seeded, 300 full-batch Adam steps) on the five capitals."""
    if kind not in _TRAINED:
        torch.manual_seed(0)
        model, tok = tiny(kind, seed=0, layers=2, width=32, ffn=64)
        ids = torch.tensor([tok(f"{_prompt(c)} {a}")["input_ids"] for c, a in FACTS])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(300):
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _TRAINED[kind] = (model, tok)
    return _TRAINED[kind]


def next_token(model, tok, prompt: str) -> str:
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        return tok.convert_ids_to_tokens(int(model(input_ids=ids).logits[0, -1].argmax()))


def localized(model, tok, k: int = 8):
    kn = localize(model, tok, _prompt("france") + " <mask>", "paris", method="amig", steps=8, tau=0.05)
    return [tuple(n) for n in kn.neurons[:k]] or [(l, i) for l, i, _ in kn.top[:k]]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_installs_target_changes_only_value_vectors_and_restores(kind):
    base, tok = trained(kind)
    model = copy.deepcopy(base)
    for country, capital in FACTS:
        assert next_token(model, tok, _prompt(country)) == capital  # the facts were learned
    neurons = localized(model, tok)
    assert neurons
    before = checksums(model)
    result = optimize_value_vectors(model, tok, neurons, _prompt("france"), "tokyo",
                                    locality=[(_prompt(c), a) for c, a in FACTS[1:]], steps=60)
    # (b) the target is installed; the other facts kept by the KL term
    assert next_token(model, tok, _prompt("france")) == "tokyo"
    kept = sum(next_token(model, tok, _prompt(c)) == a for c, a in FACTS[1:])
    assert kept >= 3, kept
    assert result.nll[-1] < result.nll[0]
    # (a) every weight other than the chosen value vectors is bit-identical
    after = checksums(model)
    family = get_family(model)
    proj_names = {}
    for layer, _ in neurons:
        proj = family.output_projection(layer)
        proj_names[layer] = next(n for n, p in model.named_parameters() if p is proj.weight)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == set(proj_names.values())
    base_params = dict(base.named_parameters())
    for layer, name in proj_names.items():
        old = base_params[name].detach()
        old_v = old if old.shape[0] == family.ffn_width else old.T      # [ffn, hidden]
        new_v = family.value_vectors(layer).detach()
        chosen = [i for l, i in neurons if l == layer]
        others = [i for i in range(family.ffn_width) if i not in chosen]
        assert torch.equal(old_v[others], new_v[others])
        assert all(not torch.equal(old_v[i], new_v[i]) for i in chosen)
    # the norm bound holds
    for key, norm in result.delta_norms.items():
        layer = int(key.split(":")[0])
        assert norm <= 4.0 * float(get_family(base).value_vectors(layer).detach().norm(dim=1).mean()) * (1 + 1e-5)
    # (c) restore is bit-exact
    result.restore()
    assert checksums(model) == before
    assert next_token(model, tok, _prompt("france")) == "paris"


def test_norm_bound_is_enforced():
    base, tok = trained("gpt2")
    model = copy.deepcopy(base)
    family = get_family(model)
    mean_norm = float(family.value_vectors(1).detach().norm(dim=1).mean())
    result = optimize_value_vectors(model, tok, [(1, 3), (1, 5)], _prompt("france"), "tokyo",
                                    steps=20, lr=2.0, norm_bound=0.1)
    assert result.delta_norms and max(result.delta_norms.values()) <= 0.1 * mean_norm * (1 + 1e-5)
    result.restore()


def test_refuses_empty_neuron_set():
    base, tok = trained("gpt2")
    with pytest.raises(AmigError, match="no neurons"):
        optimize_value_vectors(copy.deepcopy(base), tok, [], _prompt("france"), "tokyo")


@pytest.mark.parametrize("kind", ["gpt2", "gemma3", "bert"])
def test_edit_logits_only_at_the_scored_positions(kind):
    """The optimization applies the LM head to the scored rows alone where the model allows it
    (logits_to_keep); the logits equal the full forward's rows either way."""
    from amig_plugin.models.logits import logits_at, takes_logits_to_keep

    model, tok = tiny(kind, seed=0, layers=2, width=32, ffn=64)
    ids = torch.tensor(tok("the capital of france is paris")["input_ids"])
    positions = torch.tensor([1, len(ids) - 1])
    with torch.no_grad():
        full = model(input_ids=ids[None]).logits[0, positions].float()
        kept = logits_at(model, ids, positions)
    assert kept.shape == full.shape
    torch.testing.assert_close(kept, full, rtol=1e-5, atol=1e-5)
    assert takes_logits_to_keep(model) == (kind != "bert")


@pytest.mark.parametrize("kind", ["gpt2", "gemma3", "bert"])
def test_edit_logits_of_several_prompts_in_one_padded_batch(kind):
    """Prompts of different lengths, right-padded in one forward: each one's logits at its own
    positions equal its forward alone."""
    from amig_plugin.models.logits import batched_logits_at, logits_at

    model, tok = tiny(kind, seed=0, layers=2, width=32, ffn=64)
    texts = ["the capital of france is paris", "water is", "the first president of the united states was"]
    seqs = []
    for text in texts:
        ids = torch.tensor(tok(text)["input_ids"])
        seqs.append((ids, torch.tensor([0, len(ids) - 1]) if len(ids) > 2 else torch.tensor([len(ids) - 1])))
    with torch.no_grad():
        batched = batched_logits_at(model, seqs)
        alone = [logits_at(model, ids, pos) for ids, pos in seqs]
    assert len({len(ids) for ids, _ in seqs}) == 3  # really padded
    for b, a in zip(batched, alone):
        assert b.shape == a.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
