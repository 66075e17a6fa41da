"""Interventions: suppress / enhance / scale at one position, exact restore, batched scores,
localization effect with a planted neuron."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from amig_plugin.intervene import (EffectCase, enhance_neurons, localization_effect, scale_neurons,
                                   scores_under_interventions, suppress_neurons)
from amig_plugin.models import get_family
from amig_plugin.testing import amig_hooks, get_model, plain_log_prob, prompt_for


def _ids(tok, text):
    return torch.tensor(tok(text, add_special_tokens=True)["input_ids"])


class Watch:
    """Pre-hooks capturing the neuron vectors entering the output projection of ``layers``."""

    def __init__(self, family, layers):
        self.family, self.layers, self.seen = family, layers, {}

    def __enter__(self):
        self.handles = []
        for layer in self.layers:
            module, side = self.family.neuron_hook_module(layer)
            assert side == "input"
            self.handles.append(module.register_forward_pre_hook(
                lambda m, args, layer=layer: self.seen.__setitem__(layer, args[0][0].detach().clone())))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama", "gemma3"])
@pytest.mark.parametrize("mode,factor", [("suppress", 0.0), ("enhance", 2.0), ("scale", 0.5)])
def test_intervention_changes_exactly_the_chosen_neurons_at_the_position(kind, mode, factor):
    model, tok = get_model(kind)
    family = get_family(model)
    ids = _ids(tok, "the capital of france is paris")
    p = 2  # not the last position: the default position (-1) must not be what is tested
    neurons = [(1, 5), (1, 40), (2, 7)]
    ctx = {"suppress": lambda: suppress_neurons(model, neurons, position=p),
           "enhance": lambda: enhance_neurons(model, neurons, position=p),
           "scale": lambda: scale_neurons(model, neurons, 0.5, position=p)}[mode]
    with torch.no_grad():
        with Watch(family, [1, 2]) as before:     # registered first: sees the input un-edited
            with ctx():
                with Watch(family, [1, 2]) as after:  # registered after the intervention's hooks
                    model(input_ids=ids[None])
    for layer in (1, 2):
        chosen = [i for l, i in neurons if l == layer]
        expected = before.seen[layer].clone()
        expected[p, chosen] = expected[p, chosen] * factor
        assert torch.equal(after.seen[layer], expected)
        assert (before.seen[layer][p, chosen].abs() > 1e-4).all()  # the change is visible
    # layer 1 is the first edited layer: its input is exactly the clean one
    with torch.no_grad(), Watch(family, [1]) as clean:
        model(input_ids=ids[None])
    assert torch.equal(before.seen[1], clean.seen[1])
    if mode == "suppress":
        assert torch.equal(after.seen[1][p, [5, 40]], torch.zeros(2))
    if mode == "enhance":
        assert torch.equal(after.seen[1][p, [5, 40]], 2 * clean.seen[1][p, [5, 40]])


@pytest.mark.parametrize("kind", ["gpt2", "bert", "qwen2"])
def test_restored_bit_for_bit(kind):
    model, tok = get_model(kind)
    ids = _ids(tok, "the capital of france is paris")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(input_ids=ids[None]).logits
        with suppress_neurons(model, [(0, 1), (2, 3)], position=3):
            during = model(input_ids=ids[None]).logits
            assert len(amig_hooks(model)) == 2  # the detector does see the intervention's hooks
        assert not torch.equal(during, before)
        after = model(input_ids=ids[None]).logits
        assert torch.equal(after, before)
        with pytest.raises(RuntimeError, match="boom"):
            with enhance_neurons(model, [(1, 1)], position=None):
                raise RuntimeError("boom")
        assert torch.equal(model(input_ids=ids[None]).logits, before)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert amig_hooks(model) == []


def test_scale_neurons_rejects_bad_neurons():
    model, _ = get_model("gpt2")
    with pytest.raises(ValueError, match="out of range"):
        with suppress_neurons(model, [(3, 0)], position=0):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with suppress_neurons(model, [(0, 64)], position=0):
            pass
    assert amig_hooks(model) == []


@pytest.mark.parametrize("kind", ["gpt2", "bert", "gemma3"])
def test_scores_under_interventions_match_plain_forwards(kind):
    model, tok = get_model(kind)
    family = get_family(model)
    prompt, target = prompt_for(kind), "paris berlin"
    q = family.encode(tok, prompt, target)
    interventions = [
        ([(0, 3), (2, 5)], 0.0),
        ([(1, 7)], 2.0),
        ([(0, 3), (0, 9), (1, 7)], 0.5),
        ([], 1.0),
        ([(2, 60)], 3.0),
    ]
    clean, scores = scores_under_interventions(model, tok, prompt, target, interventions, batch_size=2)
    with torch.no_grad():
        plain_clean = float(plain_log_prob(model, q.input_ids, q.score_positions, q.target_ids).exp())
        plain = []
        for neurons, factor in interventions:
            with scale_neurons(model, neurons, factor, position=q.target_position):
                plain.append(float(plain_log_prob(model, q.input_ids, q.score_positions, q.target_ids).exp()))
    assert clean == pytest.approx(plain_clean, rel=1e-5)
    torch.testing.assert_close(scores, torch.tensor(plain), rtol=1e-5, atol=0)
    assert (torch.tensor(plain[:3]) - plain_clean).abs().min() > 1e-4 * plain_clean  # they do change F
    _, logp = scores_under_interventions(model, tok, prompt, target, interventions, objective="logprob")
    torch.testing.assert_close(logp, torch.tensor(plain).log(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------
# localization effect

OTHER_FACTS = [("the capital of japan is <mask>", "tokyo"), ("the capital of italy is <mask>", "rome"),
               ("the capital of spain is <mask>", "madrid")]


def _cases(p):
    cases = [EffectCase("planted", [p.prompt], p.target, {"amig": [p.neuron], "kn": [p.neuron]})]
    for k, (prompt, target) in enumerate(OTHER_FACTS):
        cases.append(EffectCase(f"other{k}", [prompt], target, {"amig": [(0, k)], "kn": [(2, 10 + k)]}))
    return cases


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_localization_effect_with_planted_neuron(kind, planted):
    p = planted(kind)
    cases = _cases(p)
    report = localization_effect(p.model, p.tok, cases, n_unrelated=2, progress=False)
    # a row for every method x mode, each once, and a random method
    assert sorted((r["method"], r["mode"]) for r in report.rows) == sorted(
        (m, mode) for m in ("amig", "kn", "random") for mode in ("suppress", "enhance"))
    per = {(f["fact_id"], f["method"], f["mode"]): f for f in report.per_fact}
    clean, after = scores_under_interventions(p.model, p.tok, p.prompt, p.target,
                                              [([p.neuron], 0.0), ([p.neuron], 2.0)])
    for method in ("amig", "kn"):
        related = per[("planted", method, "suppress")]["related"]
        assert related < -0.5
        assert related == pytest.approx(float(after[0] - clean) / clean, rel=1e-5)
        assert per[("planted", method, "enhance")]["related"] == pytest.approx(float(after[1] - clean) / clean, rel=1e-5)
    assert abs(per[("planted", "random", "suppress")]["related"]) < 0.1
    assert per[("planted", "random", "suppress")]["size"] == 1
    row = next(r for r in report.rows if r["method"] == "amig" and r["mode"] == "suppress")
    related_all = [per[(c.fact_id, "amig", "suppress")]["related"] for c in cases]
    assert row["related_mean"] == pytest.approx(sum(related_all) / len(related_all))
    assert "| amig | suppress |" in report.to_markdown()

    # random single neurons (not the planted one) barely move P(gold); the planted one does
    rng = random.Random(1)
    family = get_family(p.model)
    pool = [(l, i) for l in range(family.num_layers) for i in range(family.ffn_width) if (l, i) != p.neuron]
    randoms = [[n] for n in rng.sample(pool, 20)]
    _, rand_scores = scores_under_interventions(p.model, p.tok, p.prompt, p.target, [(s, 0.0) for s in randoms])
    rel = ((rand_scores - clean) / clean).abs()
    assert float(after[0] - clean) / clean < -0.5
    assert float(rel.median()) < 0.1 and float(rel.mean()) < 0.1


def test_localization_effect_does_not_mutate_cases_and_is_repeatable():
    model, tok = get_model("gpt2")
    cases = _cases(type("P", (), dict(prompt="the capital of france is <mask>", target="paris", neuron=(1, 17)))())
    snapshot = copy.deepcopy([c.neuron_sets for c in cases])
    first = localization_effect(model, tok, cases, n_unrelated=1, progress=False)
    assert [c.neuron_sets for c in cases] == snapshot, "localization_effect added keys to the caller's cases"
    second = localization_effect(model, tok, cases, n_unrelated=1, progress=False)
    assert second.rows == first.rows


def test_localization_effect_rejects_bad_mode():
    model, tok = get_model("gpt2")
    with pytest.raises(ValueError, match="unknown mode 'erase'"):
        localization_effect(model, tok, _cases(type("P", (), dict(prompt="a <mask>", target="paris", neuron=(0, 0)))()),
                            modes=("erase",), progress=False)
