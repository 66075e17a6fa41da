"""Degenerate knowledge neurons: planted pairs and sets, batched vs one-by-one, bad inputs."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from amig_plugin.dkn import (
    DKNResult,
    check_thresholds,
    classify_pairs,
    detect_degenerate,
    detect_degenerate_loop,
    detect_facts,
    format_layer_summary,
    layer_summary,
    pair_indices,
    top_neurons_for,
)
from amig_plugin.models import get_family
from amig_plugin.neurons import KnowledgeNeurons
from amig_plugin.testing import tiny, tiny_sharp

torch.set_num_threads(1)

PROMPT, TARGET = "the capital of france is <mask>", "paris"
_CACHE: dict = {}


def _direction_and_input(model, tok, layer):
    """FFN input x at the target position of ``layer`` and the unit direction d of the FFN
    output there that raises log P(target) fastest (GPT-2)."""
    family = get_family(model)
    q = family.encode(tok, PROMPT, TARGET)
    tp = q.target_position
    block = family.blocks()[layer]
    seen = {}
    handle = block.mlp.c_fc.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0][0, tp].clone()))
    with torch.no_grad():
        model(input_ids=q.input_ids[None])
    handle.remove()
    e = torch.zeros(seen["x"].shape[0], requires_grad=True)

    def add(module, args, out):
        out = out.clone()
        out[0, tp] = out[0, tp] + e
        return out

    handle = block.mlp.c_proj.register_forward_hook(add)
    with torch.enable_grad():
        logits = model(input_ids=q.input_ids[None]).logits
        (d,) = torch.autograd.grad(torch.log_softmax(logits[0, tp], -1)[q.target_ids[0]], e)
    handle.remove()
    return seen["x"], d / d.norm()


def planted(strengths: dict[int, float]):
    """Tiny GPT-2 whose last-layer neurons ``i`` are active (≈3) at the target position and
    write ``strengths[i]``·d (d: the direction toward the target). Last layer: nothing above
    it, so the neurons' effects on P(target) are controlled exactly."""
    key = tuple(sorted(strengths.items()))
    if key not in _CACHE:
        model, tok = tiny_sharp("gpt2")
        model = copy.deepcopy(model)
        for p in model.parameters():
            p.requires_grad_(False)
        family = get_family(model)
        layer = family.num_layers - 1
        x, d = _direction_and_input(model, tok, layer)
        mlp = family.blocks()[layer].mlp
        values = family.value_vectors(layer)
        with torch.no_grad():
            for i, s in strengths.items():
                mlp.c_fc.weight[:, i] = 3 * x / x.dot(x)
                mlp.c_fc.bias[i] = 0.0
                values[i] = s * d
        _CACHE[key] = (model, tok, layer)
    return _CACHE[key]


A, B, E = 5, 9, 13  # redundant pair a, b (1.5·d each) and an essential neuron e (3·d)
FILLERS = [0, 1, 2, 20, 33, 47, 60]


def test_planted_redundant_pair_is_degenerate_and_essential_neuron_is_not():
    model, tok, L = planted({A: 1.5, B: 1.5, E: 3.0})
    neurons = [(L, A), (L, B), (L, E)] + [(L, i) for i in FILLERS] + [(0, 3), (1, 4)]
    r = detect_degenerate(model, tok, PROMPT, TARGET, neurons)
    # the planted structure holds: a or b alone can go, both cannot; e alone cannot go
    assert r.p_single[0] >= 0.8 * r.p0 and r.p_single[1] >= 0.8 * r.p0
    assert r.pair_score(0, 1) < 0.75 * r.p0
    assert r.p_single[2] < 0.8 * r.p0
    assert r.degenerate_pairs == [((L, A), (L, B))]
    assert (L, E) not in r.degenerate_neurons
    assert r.excess_drop(0, 1) > 0.05  # a real redundancy, beyond independent effects
    assert r.forwards == 1 + len(neurons) + len(neurons) * (len(neurons) - 1) // 2


def test_single_carrier_alone_has_no_degenerate_pair():
    model, tok, L = planted({E: 4.0})
    neurons = [(L, E)] + [(L, i) for i in FILLERS]
    r = detect_degenerate(model, tok, PROMPT, TARGET, neurons)
    assert r.p_single[0] < 0.5 * r.p0
    assert r.pairs == []


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama", "gemma3"])
def test_batched_detection_equals_one_by_one_loop(kind):
    model, tok = tiny_sharp(kind)
    prompt = PROMPT + (" ." if kind == "bert" else "")
    family = get_family(model)
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(family.num_layers * family.ffn_width, generator=g)[:12].tolist()
    neurons = [(i // family.ffn_width, i % family.ffn_width) for i in idx]
    # lenient thresholds so that random neurons give a mix of pairs and non-pairs
    low, high = 0.05, 0.06
    batched = detect_degenerate(model, tok, [prompt, prompt.replace("capital", "city")], TARGET, neurons, low=low,
                                high=high, batch_size=32)
    loop = detect_degenerate_loop(model, tok, [prompt, prompt.replace("capital", "city")], TARGET, neurons, low=low,
                                  high=high)
    assert batched.p0 == pytest.approx(loop.p0, rel=1e-4)
    torch.testing.assert_close(torch.tensor(batched.p_single), torch.tensor(loop.p_single), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.tensor(batched.p_pair), torch.tensor(loop.p_pair), rtol=1e-4, atol=1e-7)
    assert batched.pairs == loop.pairs


def test_batched_equals_loop_on_planted_pair():
    model, tok, L = planted({A: 1.5, B: 1.5, E: 3.0})
    neurons = [(L, A), (L, B), (L, E)] + [(L, i) for i in FILLERS]
    batched = detect_degenerate(model, tok, PROMPT, TARGET, neurons, batch_size=7)
    loop = detect_degenerate_loop(model, tok, PROMPT, TARGET, neurons)
    assert batched.pairs == loop.pairs == [(0, 1)]
    torch.testing.assert_close(torch.tensor(batched.p_pair), torch.tensor(loop.p_pair), rtol=1e-4, atol=1e-7)


def test_greedy_growth_finds_planted_triple():
    # three neurons, each alone enough: any two can go, all three cannot
    model, tok, L = planted({A: 6.0, B: 6.0, E: 6.0})
    neurons = [(L, A), (L, B), (L, E)] + [(L, i) for i in FILLERS[:4]]
    r = detect_degenerate(model, tok, PROMPT, TARGET, neurons, grow=True, max_set_size=4)
    assert r.pairs == []  # no pair of them is degenerate: a third one backs them up
    assert [(L, A), (L, B), (L, E)] in r.degenerate_sets
    for s in r.sets:  # every recorded set is verified: all drops, leave-one-out keeps
        assert s["p"] < 0.75 * r.p0
    loop = detect_degenerate_loop(model, tok, PROMPT, TARGET, [(L, A), (L, B), (L, E)], low=0.2, high=0.25)
    assert loop.pairs == []


def test_growth_on_pair_model_adds_no_superset_of_a_pair():
    model, tok, L = planted({A: 1.5, B: 1.5, E: 3.0})
    neurons = [(L, A), (L, B), (L, E)] + [(L, i) for i in FILLERS[:4]]
    r = detect_degenerate(model, tok, PROMPT, TARGET, neurons, grow=True)
    for s in r.sets:
        assert not {0, 1} <= set(s["members"])


def test_classify_pairs_definition():
    # P0 = 1; singles: 0.9, 0.85, 0.5; pairs (0,1)=0.7, (0,2)=0.1, (1,2)=0.8
    pairs = classify_pairs(1.0, [0.9, 0.85, 0.5], [0.7, 0.1, 0.8], low=0.2, high=0.25)
    assert pairs == [(0, 1)]
    # boundaries: single exactly (1-low)·P0 keeps; pair exactly (1-high)·P0 does not drop
    assert classify_pairs(1.0, [0.8, 0.8], [0.75], 0.2, 0.25) == []
    assert classify_pairs(1.0, [0.8, 0.8], [0.7499], 0.2, 0.25) == [(0, 1)]
    assert classify_pairs(0.0, [0.0, 0.0], [0.0], 0.2, 0.25) == []
    assert pair_indices(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    r = DKNResult(neurons=[(0, 1), (0, 2), (1, 3), (2, 4)], p0=1.0, p_single=[1.0] * 4, p_pair=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                  pairs=[])
    assert [r.pair_score(i, j) for i, j in pair_indices(4)] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert r.pair_score(3, 2) == 0.6


@pytest.mark.parametrize("low,high", [(-0.1, 0.25), (1.0, 1.0), (0.2, 1.0), (0.2, 0.0), (0.3, 0.2), (float("nan"), 0.2),
                                      ("0.2", 0.25), (True, 0.25)])
def test_thresholds_out_of_range_are_refused(low, high):
    with pytest.raises(ValueError, match="low|high|number"):
        check_thresholds(low, high)
    model, tok, L = planted({A: 1.5, B: 1.5, E: 3.0})
    with pytest.raises(ValueError):
        detect_degenerate(model, tok, PROMPT, TARGET, [(L, A), (L, B)], low=low, high=high)


def test_bad_neuron_lists():
    model, tok, L = planted({A: 1.5, B: 1.5, E: 3.0})
    with pytest.raises(ValueError, match="at least 2"):
        detect_degenerate(model, tok, PROMPT, TARGET, [(L, A)])
    with pytest.raises(ValueError, match="duplicates"):
        detect_degenerate(model, tok, PROMPT, TARGET, [(L, A), (L, A)])
    with pytest.raises(ValueError, match="out of range"):
        detect_degenerate(model, tok, PROMPT, TARGET, [(L, A), (L, 10_000)])
    with pytest.raises(ValueError, match="max_set_size"):
        detect_degenerate(model, tok, PROMPT, TARGET, [(L, A), (L, B)], grow=True, max_set_size=1)


def test_k_larger_than_neurons_found_falls_back_with_warning():
    kn = KnowledgeNeurons(neurons=[(0, 1)], scores=[1.0], target="x", prompts=["p <mask>"],
                          top=[[0, 1, 0.5], [1, 2, 0.4], [2, 3, 0.3]])
    with pytest.warns(UserWarning, match="only 3 top neurons"):
        neurons, k = top_neurons_for(kn, 20)
    assert k == 3 and neurons == [(0, 1), (1, 2), (2, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert top_neurons_for(kn, 2) == ([(0, 1), (1, 2)], 2)
    for bad in (1, 0, -3, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            top_neurons_for(kn, bad)
    few = KnowledgeNeurons(neurons=[], scores=[], target="x", prompts=["p <mask>"], top=[[0, 1, 0.5]])
    with pytest.raises(ValueError, match="at least 2"):
        top_neurons_for(few, 20)


def _facts():
    from amig_plugin.data import Fact

    caps = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo")]
    facts = [Fact(id=f"cap-{c}", relation="capital", subject={"en": c}, object={"en": o},
                  prompts={"en": [f"the capital of {c} is <mask>"]}, candidates={"en": [o for _, o in caps]},
                  relation_name="the capital of [X] is [Y]") for c, o in caps]
    facts.append(Fact(id="bad", relation="capital", subject={"en": "spain"}, object={"en": "madrid"},
                      prompts={"en": ["<mask> is the capital of spain"]}, candidates={"en": ["madrid"]}))
    return facts


def test_detect_facts_is_resumable_records_bad_facts_and_falls_back_on_k(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("gpt2")
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    store = RecordStore(tmp_path / "dkn.jsonl")
    settings = dict(steps=4, top_k=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, errors = detect_facts(model, tok, _facts(), "en", store=store, cache=cache, k=10, settings=settings,
                                       progress=False)
    assert set(results) == {"cap-france", "cap-germany", "cap-japan"}
    assert list(errors) == ["bad"] and "nothing before" in errors["bad"]
    r = results["cap-france"]
    assert r.k == 6 and r.k_requested == 10 and len(r.p_pair) == 15 and r.relation == "capital"
    rec = next(x for x in store if x["fact_id"] == "cap-france")
    assert any("only 6 top neurons" in w for w in rec["warnings"])
    # resume: a fresh store object over the same file computes nothing new
    store2 = RecordStore(tmp_path / "dkn.jsonl")
    misses = cache.misses
    results2, errors2 = detect_facts(model, tok, _facts(), "en", store=store2, cache=cache, k=10, settings=settings,
                                     progress=False)
    assert len(store2) == len(store) == 4 and cache.misses == misses
    assert {f: r.to_dict() for f, r in results2.items()} == {f: r.to_dict() for f, r in results.items()}
    summary = layer_summary(results.values(), num_layers=3)
    assert summary["facts"] == 3 and sum(summary["per_layer"]["top_k"]) == 18
    assert "| layer |" in format_layer_summary(summary, "tiny")


def test_result_round_trips_through_dict():
    model, tok, L = planted({A: 6.0, B: 6.0, E: 6.0})
    r = detect_degenerate(model, tok, PROMPT, TARGET, [(L, A), (L, B), (L, E), (L, 0)], grow=True)
    back = DKNResult.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict() and back.degenerate_sets == r.degenerate_sets


def test_unmodified_model_weights_untouched():
    model, tok = tiny("gpt2")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    detect_degenerate(model, tok, PROMPT, TARGET, [(0, 1), (1, 2), (2, 3)], grow=True)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_detection_key_ignores_batch_size_and_depends_on_the_algorithm_version(monkeypatch):
    import amig_plugin.defaults
    from amig_plugin.dkn import detection_key

    fact = _facts()[0]
    args = dict(k=20, low=0.2, high=0.25, method="amig", grow=False, max_set_size=4)
    key = detection_key("m", fact, "en", settings={}, **args)
    assert detection_key("m", fact, "en", settings={"ig_batch_size": 7}, **args) == key
    assert detection_key("m", fact, "en", settings={"steps": 5}, **args) != key
    assert detection_key("m#otherweights", fact, "en", settings={}, **args) != key
    monkeypatch.setattr(amig_plugin.defaults, "ATTRIBUTION_VERSION", amig_plugin.defaults.ATTRIBUTION_VERSION + 1)
    assert detection_key("m", fact, "en", settings={}, **args) != key  # old detections are not served


def test_a_bad_stored_detection_is_recomputed_with_a_warning(tmp_path):
    """A detection record read back from the DKN store with neurons outside the model, or a
    wrong type, is recomputed and replaced; the warning names the store file."""
    import json

    from amig_plugin.localization.cache import CacheWarning, LocalizationCache
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("gpt2")
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    path = tmp_path / "dkn.jsonl"
    facts = _facts()[:2]
    kwargs = dict(cache=cache, k=4, settings=dict(steps=4, top_k=6), progress=False)
    good, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), **kwargs)
    lines = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    lines[0]["result"]["neurons"][0] = [0, 10 ** 6]
    lines[1]["result"]["p_pair"] = "high"
    path.write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    with pytest.warns(CacheWarning, match=str(path)) as caught:
        again, errors = detect_facts(model, tok, facts, "en", store=RecordStore(path), **kwargs)
    messages = " ".join(str(w.message) for w in caught)
    assert "outside the model's 3 layers" in messages and "'p_pair' must be 6 numbers" in messages
    same = lambda rs: {f: {k: v for k, v in r.to_dict().items() if k != "seconds"} for f, r in rs.items()}  # noqa: E731
    assert not errors and same(again) == same(good)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # the replacements are served from now on
        detect_facts(model, tok, facts, "en", store=RecordStore(path), **kwargs)
