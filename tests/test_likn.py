"""LIKN: intersections, the cross-lingual editing experiment, its protocols and statistics (the
`amig likn` command and its loader: test_cli_likn.py)."""

from __future__ import annotations

import json

import pytest
import torch

import amig_plugin.likn as likn_mod
import amig_plugin.likn.protocols as likn_protocols
from amig_plugin.localization.cache import LocalizationCache
from amig_plugin.data import Fact
from amig_plugin.likn import (
    FactLIKN,
    aggregate,
    apply_value_edit,
    compute_likn,
    fact_query,
    intersect_neuron_sets,
    parallel_new_object,
    plan_edits,
    run_likn_experiment,
    setting_label,
    success_ratios,
)
from amig_plugin.models import get_family
from amig_plugin.testing import tiny_facts

# ------------------------------------------------------------------------------ intersection


def test_intersection_finds_exactly_the_planted_shared_neurons():
    planted = [(1, 17), (2, 5)]
    en = planted + [(0, 3), (2, 9)]
    zh = [(0, 4), (2, 5), (1, 18), (1, 17)]
    de = [[1, 17], [2, 5], [2, 6]]  # JSON-style lists match tuples
    assert intersect_neuron_sets({"en": en, "zh": zh}) == planted
    assert intersect_neuron_sets({"en": en, "zh": zh, "de": de}) == planted
    # exact (layer, index) match: the same index in another layer is another neuron
    assert intersect_neuron_sets({"en": [(1, 17)], "zh": [(2, 17)]}) == []
    assert intersect_neuron_sets({"en": [(3, 1)], "zh": [(1, 3)]}) == []
    assert intersect_neuron_sets({"en": en}) == sorted(en)
    with pytest.raises(ValueError):
        intersect_neuron_sets({})


def test_likn_report_keeps_and_counts_empty_intersections():
    facts = tiny_facts(n=4)
    locs = {
        facts[0].id: {"en": [(1, 17), (2, 5), (0, 1)], "zh": [(1, 17), (2, 5)]},  # planted: 2 shared
        facts[1].id: {"en": [(0, 1)], "zh": [(0, 2)]},  # empty
        facts[2].id: {"en": [], "zh": [(2, 3)]},  # empty (no English neuron)
        facts[3].id: {"en": [(2, 3), (1, 17)], "zh": [(2, 3)]},  # 1 shared
    }
    rep = compute_likn(facts, locs, ["en", "zh"], num_layers=3, ffn_width=64)
    assert [f.fact_id for f in rep.facts] == [f.id for f in facts]  # nothing dropped
    assert [f.shared for f in rep.facts] == [[(1, 17), (2, 5)], [], [], [(2, 3)]]
    s = rep.summary()
    assert s["facts"] == 4 and s["nonempty"] == 2 and s["nonempty_fraction"] == 0.5
    assert s["empty_fact_ids"] == [facts[1].id, facts[2].id]
    assert s["shared_size"]["histogram"] == {"0": 2, "1": 1, "2": 1}
    assert s["shared_size"]["max"] == 2 and s["shared_size"]["mean"] == 0.75
    assert s["layer_distribution"]["shared"] == {"1": 1, "2": 2}
    assert s["layer_distribution"]["en"] == {"0": 2, "1": 2, "2": 2}
    assert s["per_language"]["en"]["empty_sets"] == 1
    assert s["recurring_shared_neurons"][0][:2] == [1, 17] or s["recurring_shared_neurons"][0][2] == 1
    # chance overlap: mean of |en||zh| / (3 * 64)
    assert s["chance_expected_shared_size"] == pytest.approx((3 * 2 + 1 * 1 + 0 * 1 + 2 * 1) / 4 / 192)
    md = rep.to_markdown()
    assert "2 of 4 facts" in md and "(empty)" in md
    js = json.loads(json.dumps(rep.to_json()))
    assert FactLIKN.from_dict(js["facts"][0]).shared == [(1, 17), (2, 5)]
    with pytest.raises(KeyError, match="no localization"):
        compute_likn(facts, {facts[0].id: {"en": []}}, ["en", "zh"])
    with pytest.raises(ValueError, match="at least 2 languages"):
        compute_likn(facts, locs, ["en"])


# ------------------------------------------------------------------------------ edits


def _fl(a, b, shared=None):
    shared = sorted(set(a) & set(b)) if shared is None else shared
    return FactLIKN("f", "P36", ("en", "zh"), {"en": a, "zh": b}, shared)


def test_plan_edits_and_labels():
    a, b = [(0, 1), (1, 2), (2, 3)], [(1, 2), (2, 7)]
    edits = {e.name: e for e in plan_edits(_fl(a, b), num_layers=3, ffn_width=64, seed=1)}
    assert list(edits) == ["LIKN", "KN[en]", "KN[zh]", "Seq-KN", "Random"]
    assert edits["LIKN"].neurons == [(1, 2)]
    assert edits["Seq-KN"].neurons == sorted(set(a) | set(b))  # both sets, nothing undone
    assert [l for l, _ in edits["Seq-KN"].steps] == ["en", "zh"]
    assert len(edits["Random"].neurons) == 1
    again = {e.name: e for e in plan_edits(_fl(a, b), num_layers=3, ffn_width=64, seed=1)}
    assert again["Random"] == edits["Random"]  # seeded
    assert setting_label("KN[en]", "zh") == "Mono-KN (en→zh)"
    assert setting_label("KN[zh]", "zh") == "Own-KN (zh)"
    assert setting_label("Seq-KN", "en") == "Seq-KN"
    with pytest.raises(ValueError, match="random_control"):
        plan_edits(_fl(a, b))


def test_parallel_new_object_is_the_same_object_in_every_language():
    f = tiny_facts()[0]
    new = parallel_new_object(f, ["en", "zh"], seed=3)
    k = f.candidates["en"].index(new["en"])
    assert new["zh"] == f.candidates["zh"][k] and new["en"] != "paris" and new["zh"] != "巴黎"
    broken = Fact(id="x", relation="P36", subject=f.subject, object=f.object, prompts=f.prompts,
                  candidates={"en": ["paris", "rome"], "zh": ["罗马", "巴黎"]})  # gold at another index
    assert parallel_new_object(broken, ["en", "zh"]) is None


def test_seq_kn_value_edit_keeps_the_first_language_edit(models):
    """The paper's Seq-KN code restored the model after editing language A and then edited
    language B: A's neurons were no longer edited when it measured. Ours keeps both."""
    model, tok = models("gpt2")
    family = get_family(model)
    a, b = [(0, 1), (1, 2), (2, 3)], [(1, 2), (2, 7)]
    seq = {e.name: e for e in plan_edits(_fl(a, b), random_control=False)}["Seq-KN"]
    before = {n: family.value_vectors(n[0])[n[1]].detach().clone() for n in set(a) | set(b)}
    old, new = {"en": "paris", "zh": "巴黎"}, {"en": "rome", "zh": "berlin"}
    backup = apply_value_edit(family, tok, seq, old, new)
    try:
        from amig_plugin.intervene import target_embedding

        d = {l: 8 * target_embedding(family, tok, new[l]) - target_embedding(family, tok, old[l]) for l in old}
        for n in set(a) | set(b):
            delta = family.value_vectors(n[0])[n[1]] - before[n]
            expect = (d["en"] if n in a else 0) + (d["zh"] if n in b else 0)
            torch.testing.assert_close(delta, expect, atol=1e-5, rtol=1e-5)
        assert not torch.equal(family.value_vectors(0)[1], before[(0, 1)])  # A-only neuron still edited
    finally:
        backup.restore()
    for n, v in before.items():
        assert torch.equal(family.value_vectors(n[0])[n[1]], v)  # bit-exact restore


def _locs_for(facts, sets):
    return {f.id: sets(i) for i, f in enumerate(facts)}


def test_seq_kn_activation_scales_both_sets_at_once(models, monkeypatch):
    model, tok = models("gpt2")
    facts = tiny_facts(n=3)
    a, b = [(0, 1), (1, 2), (2, 3)], [(1, 2), (2, 7)]
    rep = compute_likn(facts, _locs_for(facts, lambda i: {"en": a, "zh": b}), ["en", "zh"])
    seen = []
    real = likn_protocols.scores_under_interventions

    def spy(model, tokenizer, prompt, target, interventions, **kw):
        seen.extend((tuple(map(tuple, n)), f) for n, f in interventions)
        return real(model, tokenizer, prompt, target, interventions, **kw)

    monkeypatch.setattr(likn_protocols, "scores_under_interventions", spy)
    recs = likn_mod.activation_protocol(model, tok, facts, rep, n_unrelated=1, random_control=False, progress=False)
    union = tuple(sorted(set(a) | set(b)))
    assert (union, 0.0) in seen and (union, 2.0) in seen  # the paper's bug would scale only b
    seq_rows = [r for rec in recs for r in rec["rows"] if r["setting"] == "Seq-KN"]
    assert seq_rows and all(r["n_neurons"] == len(union) for r in seq_rows)


def test_seq_kn_value_protocol_measures_with_both_edits_applied(models, monkeypatch):
    model, tok = models("gpt2")
    family = get_family(model)
    facts = tiny_facts(n=3)
    a, b = [(0, 1), (1, 2)], [(1, 2), (2, 7)]
    rep = compute_likn(facts, _locs_for(facts, lambda i: {"en": a, "zh": b}), ["en", "zh"])
    original = {n: family.value_vectors(n[0])[n[1]].detach().clone() for n in set(a) | set(b)}
    states = []
    real = likn_protocols.score_pairs

    def spy(model, tokenizer, pairs, **kw):
        states.append({n: not torch.equal(family.value_vectors(n[0])[n[1]], v) for n, v in original.items()})
        return real(model, tokenizer, pairs, **kw)

    monkeypatch.setattr(likn_protocols, "score_pairs", spy)
    likn_mod.value_protocol(model, tok, facts[:1] + facts[1:], rep, n_unrelated=1, random_control=False,
                            progress=False)
    # per fact: clean, LIKN, KN[en], KN[zh], Seq-KN
    first = states[:5]
    assert not any(first[0].values())
    assert first[1] == {n: n in set(a) & set(b) for n in original}
    assert first[2] == {n: n in a for n in original}
    assert first[3] == {n: n in b for n in original}
    assert all(first[4].values())  # Seq-KN: A's and B's edits both present when measured
    for n, v in original.items():
        assert torch.equal(family.value_vectors(n[0])[n[1]], v)


# ------------------------------------------------------------------------------ the experiment


@pytest.fixture()
def cache(tmp_path):
    return LocalizationCache(tmp_path / "cache.jsonl")


def test_experiment_all_settings_on_the_same_facts_and_cached(models, cache, tmp_path, monkeypatch):
    model, tok = models("gpt2")
    facts = tiny_facts()
    out = tmp_path / "out"
    exp = run_likn_experiment(model, tok, facts, ["en", "zh"], cache=cache, out_dir=out, progress=False,
                              n_unrelated=2, localize_settings=dict(steps=4))
    assert cache.misses == len(facts) * 2 and cache.hits == 0
    ids = [f.id for f in facts]
    for protocol in ("activation", "value"):
        for subset in ("all", "likn"):
            rows = exp.tables()[protocol][subset]
            expected = sorted(ids) if subset == "all" else sorted(f.fact_id for f in exp.likn.facts if f.shared)
            settings = {r["setting"] for r in rows}
            assert {"LIKN", "Seq-KN", "Random", "Mono-KN (en→zh)", "Mono-KN (zh→en)", "Own-KN (en)", "Own-KN (zh)"} <= settings
            assert all(r["fact_ids"] == expected for r in rows), "every setting must run on the same facts"
    for rec in exp.activation:
        assert len(rec["rows"]) == 5 * 2 * 2  # edits x languages x modes
    assert len(success_ratios(exp.tables()["activation"]["all"])) == 2 * 5  # LIKN, Mono, Seq, Own, Random
    # report files: markdown + JSON
    md = (out / "likn_report.md").read_text(encoding="utf-8")
    assert "Mono-KN (en→zh)" in md and "success (paper's)" in md
    js = json.loads((out / "likn_results.json").read_text(encoding="utf-8"))
    assert set(js["tables"]) == {"activation", "value"} and js["likn"]["summary"]["facts"] == len(facts)

    boot = js["success_bootstrap"]["likn"]
    assert {b["setting"] for b in boot} >= {"LIKN", "Mono-KN (en→zh)"}
    assert all(b["ci_low"] <= b["ci_high"] for b in boot)
    assert all(0 <= b["p_likn_beats"] <= 1 for b in boot if b["setting"].startswith("Mono"))
    # re-rendering from the saved JSON gives the same report, without the model
    again = likn_mod.LIKNExperiment.load(out)
    assert again.to_markdown() == exp.to_markdown()
    # second run: localizations from the cache, measurements from out/measurements.jsonl
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(likn_protocols, "scores_under_interventions", boom)
    monkeypatch.setattr(likn_protocols, "score_pairs", boom)
    cache2 = LocalizationCache(cache.path)
    exp2 = run_likn_experiment(model, tok, facts, ["en", "zh"], cache=cache2, out_dir=out, progress=False,
                               n_unrelated=2, localize_settings=dict(steps=4))
    assert cache2.hits == len(facts) * 2 and cache2.misses == 0
    assert exp2.tables()["activation"]["all"][0]["related_mean"] == exp.tables()["activation"]["all"][0]["related_mean"]


def test_likn_equals_intersection_of_localizations_three_languages(models, cache):
    model, tok = models("llama")
    facts = tiny_facts(langs=("en", "zh", "de"), n=2)
    rep, locs = likn_mod.find_likn(model, tok, facts, ["en", "zh", "de"], cache=cache, progress=False, steps=4)
    for f in rep.facts:
        sets = [set(locs[f.fact_id][l].neurons) for l in ("en", "zh", "de")]
        assert set(f.shared) == sets[0] & sets[1] & sets[2]
        assert f.per_lang["de"] == locs[f.fact_id]["de"].neurons


def test_sentence_mode_scores_the_rest_of_the_sentence(models, cache):
    model, tok = models("gpt2")
    f = tiny_facts(n=1)[0]
    assert fact_query(f, "zh", causal_mode="sentence") == ("法国 的 首都 是", " 巴黎 。")
    assert fact_query(f, "zh", causal_mode="cut") == ("法国 的 首都 是 <mask> 。", "巴黎")
    assert fact_query(f, "zh", causal_mode="sentence", kind="masked") == ("法国 的 首都 是 <mask> 。", "巴黎")
    kn = likn_mod.localize_fact(model, tok, f, "zh", cache=cache, causal_mode="sentence", steps=4)
    assert kn.prompts == ["法国 的 首都 是"] and kn.target == " 巴黎 。"
    with pytest.raises(ValueError, match="causal_mode"):
        fact_query(f, "zh", causal_mode="likelihood")


def test_experiment_rejects_bad_input(models):
    model, tok = models("gpt2")
    facts = tiny_facts(n=2)
    with pytest.raises(ValueError, match="at least 2 languages"):
        run_likn_experiment(model, tok, facts, ["en"], cache=None)
    with pytest.raises(ValueError, match="at least 2 facts"):
        run_likn_experiment(model, tok, facts[:1], ["en", "zh"], cache=None)
    with pytest.raises(ValueError, match="unknown protocol"):
        run_likn_experiment(model, tok, facts, ["en", "zh"], cache=None, protocols=("rome",))
    with pytest.raises(KeyError, match="no language 'de'"):
        run_likn_experiment(model, tok, facts, ["en", "de"], cache=None)


def test_aggregate_subsets():
    recs = [dict(fact_id="a", likn_size=0, rows=[dict(edit="LIKN", setting="LIKN", lang="en", mode="suppress",
                                                     n_neurons=0, related=0.0, unrelated=0.0, correct_before=True,
                                                     correct_after=True, unrelated_scored=0,
                                                     unrelated_correct_before=0, unrelated_correct_after=0)]),
            dict(fact_id="b", likn_size=2, rows=[dict(edit="LIKN", setting="LIKN", lang="en", mode="suppress",
                                                     n_neurons=2, related=-0.5, unrelated=0.1, correct_before=True,
                                                     correct_after=False, unrelated_scored=1,
                                                     unrelated_correct_before=1, unrelated_correct_after=1)])]
    [all_row] = aggregate(recs, "all")
    [likn_row] = aggregate(recs, "likn")
    assert all_row["facts"] == 2 and all_row["empty_edits"] == 1 and all_row["related_mean"] == -0.25
    assert likn_row["facts"] == 1 and likn_row["lost"] == 1 and likn_row["ratio"] == pytest.approx(5.0)
    assert likn_row["ratio_unstable"]  # one fact: no CI, flagged


# ------------------------------------------------------------------------------ CLI and loaders


def test_signed_value_edit_follows_the_activation_sign(models):
    """Gated MLPs have negative neurons: the update is oriented by sign(a_i) on the prompt."""
    from amig_plugin.intervene import target_embedding
    from amig_plugin.likn import Edit, activation_signs

    model, tok = models("llama")
    family = get_family(model)
    neurons = [(0, i) for i in range(12)] + [(2, i) for i in range(12)]
    prompt, target = "the capital of france is <mask> .", "paris"
    signs = activation_signs(family, tok, prompt, target, neurons)
    assert set(signs.values()) == {1.0, -1.0}  # both kinds present in this tiny model
    before = {n: family.value_vectors(n[0])[n[1]].detach().clone() for n in neurons}
    edit = Edit("KN[en]", (("en", tuple(neurons)),))
    backup = apply_value_edit(family, tok, edit, {"en": "paris"}, {"en": "rome"}, queries={"en": (prompt, target)})
    try:
        d = 8 * target_embedding(family, tok, "rome") - target_embedding(family, tok, "paris")
        for n in neurons:
            torch.testing.assert_close(family.value_vectors(n[0])[n[1]] - before[n], signs[n] * d, atol=1e-5, rtol=1e-5)
    finally:
        backup.restore()
    assert all(torch.equal(family.value_vectors(n[0])[n[1]], v) for n, v in before.items())


def test_value_protocol_reports_facts_without_a_parallel_new_object(models, cache):
    model, tok = models("gpt2")
    facts = tiny_facts(n=3)
    f = facts[0]
    facts[0] = Fact(id=f.id, relation=f.relation, subject=f.subject, object=f.object, prompts=f.prompts,
                    candidates={"en": ["paris", "rome"], "zh": ["rome", "巴黎"]})  # not parallel
    exp = run_likn_experiment(model, tok, facts, ["en", "zh"], cache=cache, protocols=("value",), n_unrelated=1,
                              progress=False, localize_settings=dict(steps=3))
    assert [r["fact_id"] for r in exp.value if r.get("skipped")] == [f.id]
    assert "1 facts skipped" in exp.to_markdown()
    assert all(f.id not in r["fact_ids"] for r in exp.tables()["value"]["all"])


# ----------------------------------------------------------------------------------------
# overlap controls: shuffled facts, layer-matched chance, hubs


def test_layer_matched_chance_exact_on_a_hand_made_example():
    from amig_plugin.likn import layer_matched_chance, uniform_chance
    a = [(0, 1), (0, 2), (3, 7)]          # layer 0: 2, layer 3: 1
    b = [(0, 5), (3, 1), (3, 2), (5, 0)]  # layer 0: 1, layer 3: 2, layer 5: 1
    # Σ_l a_l b_l / W = (2·1 + 1·2) / 10
    assert layer_matched_chance([a, b], 10) == pytest.approx(0.4)
    # three sets: Σ_l W Π (c_kl / W); layer 0 only: 10 · (2/10)(1/10)(3/10)
    c = [(0, 0), (0, 3), (0, 4)]
    assert layer_matched_chance([a, b, c], 10) == pytest.approx(10 * 0.2 * 0.1 * 0.3)
    # concentrated in one layer, layer-matched chance exceeds the uniform one (6 layers)
    assert uniform_chance([3, 4], 60) == pytest.approx(0.2)
    assert uniform_chance([3, 4], 60) < layer_matched_chance([a, b], 10)


def _random_report(n_facts=60, n_layers=4, width=25, size=6, seed=0, relations=3):
    import random as _random
    from amig_plugin.likn import FactLIKN, LIKNReport, intersect_neuron_sets
    rng = _random.Random(seed)
    facts = []
    for i in range(n_facts):
        per = {l: [(p // width, p % width) for p in rng.sample(range(n_layers * width), size)] for l in ("en", "zh")}
        facts.append(FactLIKN(f"f{i}", f"r{i % relations}", ("en", "zh"), per, intersect_neuron_sets(per)))
    return LIKNReport(("en", "zh"), "amig", facts, num_layers=n_layers, ffn_width=width)


def test_shuffled_control_equals_chance_on_independent_sets():
    from amig_plugin.likn import likn_controls
    rep = _random_report(n_facts=90)
    row = likn_controls(rep)["pairs"][0]
    chance = 6 * 6 / 100  # |A||B| / (L W)
    assert row["uniform_chance"] == pytest.approx(chance)
    # all i != j pairs of independent sets: mean overlap = chance within sampling noise
    assert row["shuffled_other_relation"] == pytest.approx(chance, rel=0.08)
    assert row["shuffled_same_relation"] == pytest.approx(chance, rel=0.15)
    assert row["matched"] == pytest.approx(chance, abs=0.2)
    assert row["same_relation_pairs"] == 3 * 30 * 29 and row["other_relation_pairs"] == 90 * 89 - 3 * 30 * 29


def test_matched_overlap_stands_out_only_when_planted_and_hubs_are_found():
    from amig_plugin.likn import FactLIKN, LIKNReport, controls_markdown, intersect_neuron_sets, likn_controls
    rep = _random_report(seed=1)
    facts = []
    for k, f in enumerate(rep.facts):
        per = {l: list(ns) for l, ns in f.per_lang.items()}
        planted = (3, k % 25)                 # a fact-specific shared neuron
        hub = (2, 24)                         # in every fact's sets: a hub
        for l in per:
            per[l] = sorted(set(per[l]) | {planted, hub})
        facts.append(FactLIKN(f.fact_id, f.relation, f.languages, per, intersect_neuron_sets(per)))
    planted_rep = LIKNReport(rep.languages, "amig", facts, num_layers=4, ffn_width=25)
    c = likn_controls(planted_rep, hub_min_facts=10)
    row = c["pairs"][0]
    # the hub adds 1 to every overlap, shuffled included; the planted neuron only to the same fact's
    assert row["matched"] > row["shuffled_other_relation"] + 0.7
    assert row["shuffled_other_relation"] > 1.0
    assert c["hubs"][0][:2] == [2, 24] and c["hubs"][0][2] == 60
    no_hub = c["pairs_without_hubs"][0]
    assert row["matched"] - no_hub["matched"] == pytest.approx(1.0, abs=0.05)
    assert no_hub["shuffled_other_relation"] < 0.7 < no_hub["matched"]
    md = controls_markdown(c)
    assert "Hub neurons" in md and "L2.24 (60 facts)" in md and "en–zh" in md


def test_pairwise_table_for_four_languages():
    import random as _random
    from amig_plugin.likn import FactLIKN, LIKNReport, intersect_neuron_sets, likn_controls
    rng = _random.Random(2)
    langs = ("en", "zh", "fr", "ja")
    facts = []
    for i in range(10):
        per = {l: [(rng.randrange(3), rng.randrange(20)) for _ in range(5)] for l in langs}
        facts.append(FactLIKN(f"f{i}", "r", langs, per, intersect_neuron_sets(per)))
    c = likn_controls(LIKNReport(langs, "kn", facts, num_layers=3, ffn_width=20))
    assert [tuple(r["languages"]) for r in c["pairs"]] == [("en", "zh"), ("en", "fr"), ("en", "ja"), ("zh", "fr"),
                                                            ("zh", "ja"), ("fr", "ja")]


def test_fact_specific_excess_has_a_known_answer():
    """Relation-level sharing gives an excess of 0 over the same-relation shuffle; a planted
    fact-specific neuron adds exactly 1; independent sets give an interval that covers 0."""
    from amig_plugin.likn import FactLIKN, LIKNReport, controls_markdown, intersect_neuron_sets, likn_controls
    langs = ("en", "zh")
    relation_sets = {r: [(r, k) for k in range(4)] for r in range(3)}   # the same 4 neurons for a relation

    def report(planted: bool) -> LIKNReport:
        facts = []
        for i in range(30):
            r = i % 3
            per = {l: list(relation_sets[r]) + ([(5, i)] if planted else []) for l in langs}
            facts.append(FactLIKN(f"f{i}", f"r{r}", langs, per, intersect_neuron_sets(per)))
        return LIKNReport(langs, "amig", facts, num_layers=6, ffn_width=40)

    row = likn_controls(report(False))["pairs"][0]
    assert row["matched"] == 4 and row["shuffled_same_relation"] == 4 and row["shuffled_other_relation"] == 0
    assert row["excess_same_relation"] == 0 and row["excess_same_relation_ci"] == 0
    assert row["excess_other_relation"] == 4 and row["excess_same_relation_facts"] == 30
    row = likn_controls(report(True))["pairs"][0]
    assert row["excess_same_relation"] == pytest.approx(1.0) and row["excess_other_relation"] == pytest.approx(5.0)
    md = controls_markdown(likn_controls(report(True)))
    assert "+1.000 ± 0.000 (30 facts)" in md
    # independent sets: the mean excess is near 0 and its t interval covers 0
    row = likn_controls(_random_report(n_facts=90, seed=3))["pairs"][0]
    assert abs(row["excess_same_relation"]) <= row["excess_same_relation_ci"]
    assert row["excess_same_relation_ci"] > 0


def test_a_relation_with_one_fact_has_no_same_relation_partner():
    from amig_plugin.likn import FactLIKN, LIKNReport, intersect_neuron_sets, likn_controls
    per = {"en": [(0, 1)], "zh": [(0, 1)]}
    facts = [FactLIKN("a", "r1", ("en", "zh"), per, intersect_neuron_sets(per)),
             FactLIKN("b", "r2", ("en", "zh"), per, intersect_neuron_sets(per))]
    row = likn_controls(LIKNReport(("en", "zh"), "kn", facts, num_layers=1, ffn_width=4))["pairs"][0]
    assert row["excess_same_relation_facts"] == 0 and row["excess_other_relation"] == 0


def test_layer_profile_without_hubs():
    from amig_plugin.likn import FactLIKN, LIKNReport, controls_markdown, intersect_neuron_sets, likn_controls
    facts = []
    for i in range(4):
        per = {l: [(2, 0), (1, i)] for l in ("en", "zh")}          # (2, 0) is in every LIKN: a hub
        facts.append(FactLIKN(f"f{i}", "r", ("en", "zh"), per, intersect_neuron_sets(per)))
    c = likn_controls(LIKNReport(("en", "zh"), "amig", facts, num_layers=3, ffn_width=8), hub_min_facts=3)
    assert c["likn_layers"] == [0, 4, 4] and c["likn_layers_without_hubs"] == [0, 4, 0]
    assert "| without hubs | 0 | 4 | 0 |" in controls_markdown(c)
