"""`amig run`'s likn_overlap study reports the controls of `amig likn` (shuffled facts,
layer-matched chance, hub neurons) on hand-made neuron sets whose answer is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from amig_plugin.pipeline.studies import likn_overlap_compute, likn_overlap_markdown, likn_overlap_summary

# a model of 2 layers x 10 FFN units; (1, 5) is in the en and zh sets of f0, f1, f2: a hub
SETS = {
    "f0": ("r0", {"en": [(0, 1), (1, 5)], "zh": [(0, 1), (1, 5)]}),
    "f1": ("r0", {"en": [(0, 2), (1, 5)], "zh": [(0, 2), (1, 5)]}),
    "f2": ("r1", {"en": [(0, 3), (1, 5)], "zh": [(0, 3), (1, 5)]}),
    "f3": ("r1", {"en": [(0, 4)], "zh": [(1, 9)]}),
}


def _record(fact_id: str) -> dict:
    relation, per = SETS[fact_id]
    inter = sorted(set(per["en"]) & set(per["zh"]))
    union = set(per["en"]) | set(per["zh"])
    return {"status": "ok", "fact_id": fact_id, "method": "amig", "lang": None,
            "result": {"languages": ["en", "zh"], "sizes": {l: len(s) for l, s in per.items()},
                       "intersection": [list(n) for n in inter], "size": len(inter), "union_size": len(union),
                       "jaccard": len(inter) / len(union), "layers": sorted(l for l, _ in inter), "relation": relation,
                       "per_lang": {l: [list(n) for n in s] for l, s in per.items()}, "num_layers": 2, "ffn_width": 10}}


def test_summary_reports_shuffled_layer_matched_and_hub_controls():
    records = [_record(f) for f in SETS] + [{"status": "failed", "fact_id": "f4", "method": "amig", "error": "x"}]
    (row,) = likn_overlap_summary(records, None)
    assert row["facts"] == 5 and row["failed"] == 1 and row["nonempty"] == 3
    c = row["controls"]
    (pair,) = c["pairs"]
    assert pair["languages"] == ["en", "zh"] and pair["facts"] == 4
    assert pair["matched"] == pytest.approx(1.5)                  # overlaps 2, 2, 2, 0
    # en of fact i against zh of fact j != i: only the hub (1, 5) is ever shared
    assert pair["shuffled_same_relation"] == pytest.approx(0.5) and pair["same_relation_pairs"] == 4
    assert pair["shuffled_other_relation"] == pytest.approx(0.5) and pair["other_relation_pairs"] == 8
    assert pair["uniform_chance"] == pytest.approx((3 * 4 / 20 + 1 / 20) / 4)
    assert pair["layer_matched_chance"] == pytest.approx((3 * (1 / 10 + 1 / 10) + 0) / 4)
    assert c["hubs"] == [[1, 5, 3]] and c["hub_count"] == 1 and c["hub_memberships"] == 3
    assert c["shared_memberships"] == 6
    (no_hub,) = c["pairs_without_hubs"]
    assert no_hub["matched"] == pytest.approx(0.75)
    assert no_hub["shuffled_same_relation"] == 0 and no_hub["shuffled_other_relation"] == 0
    assert c["nonempty_without_hubs"] == 3
    # flat columns for the table / CSV
    assert row["pair"] == "en-zh" and row["same_fact_overlap"] == pytest.approx(1.5)
    assert row["shuffled_same_relation"] == pytest.approx(0.5) and row["hubs"] == 1 and row["nonempty_without_hubs"] == 3
    md = likn_overlap_markdown([row])
    assert "LIKN overlap controls (AMIG)" in md and "L1.5 (3 facts)" in md and "en–zh" in md
    assert "shuffled, same relation" in md and "layer-matched chance" in md


def test_records_of_an_older_version_say_why_there_are_no_controls():
    old = _record("f0")
    del old["result"]["per_lang"]
    (row,) = likn_overlap_summary([old, _record("f1")], None)
    assert "older version" in row["controls"]["unavailable"] and "pair" not in row
    assert "older version" in likn_overlap_markdown([row])


def test_compute_stores_what_the_controls_need(models):
    from amig_plugin.models import get_family

    model, tok = models("gpt2")
    family = get_family(model)
    fact = SimpleNamespace(id="f0", relation="r0")
    relation, per = SETS["f0"]
    ctx = SimpleNamespace(model=model, config=SimpleNamespace(languages=["en", "zh"]),
                          record=lambda study, fid, lang, method: {"neurons": [list(n) for n in per[lang]]})
    out = likn_overlap_compute(ctx, fact, {"lang": None, "method": "amig"})
    assert out["relation"] == "r0" and out["per_lang"] == {"en": [[0, 1], [1, 5]], "zh": [[0, 1], [1, 5]]}
    assert (out["num_layers"], out["ffn_width"]) == (family.num_layers, family.ffn_width)
    assert out["size"] == 2 and out["intersection"] == [[0, 1], [1, 5]]
