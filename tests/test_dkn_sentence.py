"""Sentence mode (``causal_mode="sentence"``) of DKN detection and fact-checking: a prompt
whose mask stands mid-sentence is scored as (prefix, object + rest of the sentence)."""

from __future__ import annotations

import json
import warnings

import pytest

from amig_plugin.data import Fact, PromptTextDropped, save_facts
from amig_plugin.dkn import detect_facts, detect_for_fact, detection_key, fact_queries
from amig_plugin.factcheck import FactChecker, candidate_query, likelihood, run_factcheck
from amig_plugin.intervene import scores_under_interventions
from amig_plugin.likn import cloze_query
from amig_plugin.models import get_family
from amig_plugin.testing import tiny_sharp

CAPS = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid")]
TEMPLATE = "the capital of {} is <mask> located in europe"
REST = " located in europe"


def _facts() -> list[Fact]:
    objects = [o for _, o in CAPS]
    return [Fact(id=f"cap-{c}", relation="capital", subject={"en": c}, object={"en": o},
                 prompts={"en": [TEMPLATE.format(c)]}, candidates={"en": objects},
                 relation_name="the capital of [X] is [Y] located in europe") for c, o in CAPS]


def test_sentence_mode_encodes_the_text_after_the_mask():
    model, tok = tiny_sharp("gpt2")
    fact = _facts()[0]
    prompts, targets = fact_queries(model, fact, "en", "sentence")
    assert prompts == ["the capital of france is"] and targets == [" paris" + REST]
    query = get_family(model).encode(tok, prompts[0], targets[0])
    assert tok.convert_ids_to_tokens(query.target_ids.tolist()) == ["paris", "located", "in", "europe"]
    # cut mode: the object alone, the rest of the sentence is lost
    prompts, target = fact_queries(model, fact, "en", "cut")
    cut = get_family(model).encode(tok, prompts[0], target)
    assert tok.convert_ids_to_tokens(cut.target_ids.tolist()) == ["paris"]
    # a masked LM reads the whole prompt: the mode changes nothing
    bert, _ = tiny_sharp("bert")
    assert fact_queries(bert, fact, "en", "sentence") == (list(fact.prompts["en"]), "paris")
    # the fact-checker's candidates: the same shape, any candidate
    assert candidate_query(TEMPLATE.format("france"), "berlin", "sentence") == ("the capital of france is", " berlin" + REST)
    assert candidate_query(TEMPLATE.format("france"), "berlin", "cut") == (TEMPLATE.format("france"), "berlin")


def test_sentence_query_keeps_the_boundary_when_no_space_precedes_the_mask():
    # "...is<mask> located": the engine would read the bare prefix as "...is <mask>" and add a space
    assert cloze_query("the capital of france is<mask> located", "paris", causal_mode="sentence") == (
        "the capital of france is<mask>", "paris located")
    assert cloze_query("法国的首都是<mask>。", "巴黎", causal_mode="sentence") == ("法国的首都是", "巴黎。")


def test_detection_scores_the_object_inside_the_full_sentence(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache

    model, tok = tiny_sharp("gpt2")
    fact = _facts()[0]
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    kw = dict(k=4, cache=cache, settings=dict(steps=4, top_k=6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sent = detect_for_fact(model, tok, fact, "en", causal_mode="sentence", **kw)
        cut = detect_for_fact(model, tok, fact, "en", causal_mode="cut", **kw)
    assert sent.causal_mode == "sentence" and sent.targets == [" paris" + REST] and sent.target == "paris"
    assert sent.prompts == ["the capital of france is"]
    clean_sentence, _ = scores_under_interventions(model, tok, "the capital of france is", " paris" + REST, [])
    clean_cut, _ = scores_under_interventions(model, tok, TEMPLATE.format("france"), "paris", [])
    assert sent.p0 == pytest.approx(clean_sentence, rel=1e-5) and cut.p0 == pytest.approx(clean_cut, rel=1e-5)
    assert sent.p0 != pytest.approx(cut.p0, rel=1e-3)
    assert cut.causal_mode == "cut" and cut.targets is None
    # the two modes' localizations are distinct cache entries
    assert cache.misses == 2


def test_the_two_modes_have_different_record_keys_and_cut_keys_are_unchanged():
    fact = _facts()[0]
    args = dict(k=20, low=0.2, high=0.25, method="amig", grow=False, max_set_size=4, settings={})
    old = detection_key("m", fact, "en", **args)
    assert detection_key("m", fact, "en", causal_mode="cut", **args) == old  # existing stores stay valid
    assert detection_key("m", fact, "en", causal_mode="sentence", **args) != old
    with pytest.raises(ValueError, match="causal_mode"):
        detection_key("m", fact, "en", causal_mode="likelihood", **args)


def test_a_resumed_run_in_one_mode_never_reuses_the_other_modes_records(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("gpt2")
    facts = _facts()
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    path = tmp_path / "dkn.jsonl"
    kw = dict(cache=cache, k=6, low=0.02, high=0.03, settings=dict(steps=4, top_k=6), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), **kw)
        sent, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), causal_mode="sentence", **kw)
    store = RecordStore(path)
    assert len(store) == 2 * len(facts)
    assert sorted(r["causal_mode"] for r in store) == ["cut"] * 5 + ["sentence"] * 5
    for fid in cut:
        assert cut[fid].targets is None and sent[fid].targets[0].endswith(REST)
        assert cut[fid].p0 != pytest.approx(sent[fid].p0, rel=1e-3)
    misses = cache.misses
    again, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), causal_mode="sentence", **kw)
    assert len(RecordStore(path)) == 2 * len(facts) and cache.misses == misses  # resumed: nothing recomputed
    assert {f: r.to_dict() for f, r in again.items()} == {f: r.to_dict() for f, r in sent.items()}
    # fact-checking: sentence-mode scores are new records, scored inside the full sentence
    fc = RecordStore(tmp_path / "fc.jsonl")
    rep_cut, _ = run_factcheck(model, tok, facts, "en", cut, store=fc, steps=2, progress=False, min_facts=3)
    n_cut = len(fc)
    rep_sent, checker = run_factcheck(model, tok, facts, "en", sent, store=RecordStore(tmp_path / "fc.jsonl"), steps=2,
                                      progress=False, causal_mode="sentence", min_facts=3)
    assert len(RecordStore(tmp_path / "fc.jsonl")) == 2 * n_cut
    assert rep_sent.settings["causal_mode"] == "sentence" and rep_cut.settings["causal_mode"] == "cut"
    assert checker.settings["causal_mode"] == "sentence"
    q = next(q for q in rep_sent.queries if q["part"] == "test")
    prompt = q["prompt"]
    full = likelihood(model, tok, "the capital of " + prompt.split()[3] + " is", " " + q["candidate"] + REST)
    alone = likelihood(model, tok, "the capital of " + prompt.split()[3] + " is", " " + q["candidate"])
    assert q["logprob"] == pytest.approx(full["logprob"], abs=1e-5)
    assert q["exact_match"] == alone["exact_match"]
    q_cut = next(x for x in rep_cut.queries if x["prompt"] == prompt and x["candidate"] == q["candidate"])
    assert q_cut["logprob"] == pytest.approx(alone["logprob"], abs=1e-5) and q_cut["logprob"] != pytest.approx(q["logprob"])
    assert "causal mode sentence" in rep_sent.to_markdown()
    # the saved checker scores in the mode it was fitted in
    back = FactChecker.from_dict(json.loads(json.dumps(checker.to_dict())))
    verdict = back.judge(model, tok, prompt, q["candidate"], relation="capital")
    assert verdict["score"] == pytest.approx(q["dkn"], rel=1e-5, abs=1e-9)


def test_masked_lm_ignores_the_mode(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("bert")
    facts = [Fact(id=f.id, relation=f.relation, subject=f.subject, object=f.object,
                  prompts={"en": [f.prompts["en"][0] + " ."]}, candidates=f.candidates) for f in _facts()[:2]]
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    path = tmp_path / "dkn.jsonl"
    kw = dict(cache=cache, k=4, settings=dict(steps=4, top_k=6), progress=False)
    cut, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), **kw)
    sent, _ = detect_facts(model, tok, facts, "en", store=RecordStore(path), causal_mode="sentence", **kw)
    assert len(RecordStore(path)) == 2 and {r["causal_mode"] for r in RecordStore(path)} == {"cut"}
    assert {f: r.to_dict() for f, r in sent.items()} == {f: r.to_dict() for f, r in cut.items()}


def test_cli_accepts_records_and_shows_the_mode(tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("gpt2")
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "caps.jsonl"
    save_facts(_facts(), data)
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    common = ["--model", str(model_dir), "--data", str(data), "--lang", "en", "--n", "5", "--out", str(out),
              "--no-progress", "--threads", "1", "--k", "6", "--low", "0.02", "--high", "0.03"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["dkn", *common, "--json", str(tmp_path / "cut.json")]) == 0
    # said once, up front: no per-prompt warning and no second summary
    assert [w for w in caught if issubclass(w.category, PromptTextDropped)] == []
    captured = capsys.readouterr()
    assert "en: 5 of 5 prompts lose text after the mask" in captured.err and "--causal-mode sentence" in captured.err
    assert "causal mode cut" in captured.out
    assert main(["dkn", *common, "--causal-mode", "sentence", "--json", str(tmp_path / "sent.json")]) == 0
    captured = capsys.readouterr()
    assert "causal mode sentence" in captured.out and "lose text" not in captured.err
    saved = json.loads((tmp_path / "sent.json").read_text(encoding="utf-8"))
    assert saved["en"]["settings"]["causal_mode"] == "sentence"
    assert all(r["targets"][0].endswith(REST) for r in saved["en"]["facts"].values())
    assert len(RecordStore(out / "dkn.jsonl")) == 10
    assert main(["factcheck", *common, "--causal-mode", "sentence", "--steps", "2", "--min-facts", "3",
                 "--split", "1,1,1", "--save-checker", str(tmp_path / "checker-{lang}.json"),
                 "--json", str(tmp_path / "fc.json")]) == 0
    captured = capsys.readouterr()
    assert "#### fact-checking [en]: causal mode sentence" in captured.out
    assert "overall" in captured.out and "causal mode sentence, measured here" in captured.out
    assert FactChecker.load(tmp_path / "checker-en.json").settings["causal_mode"] == "sentence"
    fc = json.loads((tmp_path / "fc.json").read_text(encoding="utf-8"))["en"]
    assert fc["factcheck"]["settings"]["causal_mode"] == "sentence" and fc["settings"]["causal_mode"] == "sentence"
    assert len(RecordStore(out / "dkn.jsonl")) == 10  # the sentence-mode detections were reused
