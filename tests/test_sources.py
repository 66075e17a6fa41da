"""amig_plugin.sources: one loader for shipped facts, BMLAMA and mLAMA folders and JSONL files,
the same facts every command and run config used to load its own way."""

from __future__ import annotations

import json

import pytest

from amig_plugin.data import load_bmlama, load_facts, sample_facts, shipped_facts
from amig_plugin.errors import AmigError
from amig_plugin.testing import write_bmlama_from_shipped
from amig_plugin.sources import FactSourceError, NotEnoughFacts, load_fact_source, source_kind


def test_kinds_are_detected(tmp_path):
    folder = write_bmlama_from_shipped(tmp_path / "bm")
    assert source_kind(None, ["en"]) == source_kind("shipped", ["en"]) == "shipped"
    assert source_kind(str(folder), ["en", "zh"]) == "bmlama"
    assert source_kind(str(folder / "en.tsv"), ["en"]) == "bmlama"
    jsonl = tmp_path / "f.jsonl"
    jsonl.write_text(json.dumps(shipped_facts()[0].to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
    assert source_kind(str(jsonl), ["en"]) == "jsonl"
    mlama = tmp_path / "ml"
    for lang in ("en", "zh"):
        (mlama / lang).mkdir(parents=True)
        (mlama / lang / "templates.jsonl").write_text("", encoding="utf-8")
    assert source_kind(str(mlama), ["en", "zh"]) == "mlama"


def test_shipped_restricted_or_whole():
    restricted = load_fact_source(None, ["zh"])
    assert restricted.kind == "shipped" and restricted.description == "shipped facts" and not restricted.notes
    assert restricted.facts == shipped_facts(["zh"])
    whole = load_fact_source("shipped", ["zh"], restrict=False).facts
    assert whole == [f for f in shipped_facts() if "zh" in f.prompts]
    assert any(len(f.object) > 1 for f in whole)


def test_bmlama_folder_gives_the_loader_facts_and_samples_like_sample_facts(tmp_path):
    folder = write_bmlama_from_shipped(tmp_path / "bm")
    source = load_fact_source(str(folder), ["en", "zh"])
    assert source.description == f"BMLAMA {folder}" and source.kind == "bmlama"
    expected = load_bmlama({l: folder / f"{l}.tsv" for l in ("en", "zh")})
    assert source.facts == expected and len(expected) == 12
    five = load_fact_source(str(folder), ["en", "zh"], n=5, seed=3).facts
    assert five == sample_facts(expected, 5, seed=3)
    # zh alone: the en templates still name the relations (as with --template-lang en)
    zh = load_fact_source(str(folder), ["zh"]).facts
    assert [f.relation for f in zh] == [f.relation for f in expected] and all(f.languages == ("zh",) for f in zh)


def test_jsonl_facts_lacking_a_language_are_noted(tmp_path):
    facts = shipped_facts()[:3]
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in facts), encoding="utf-8")
    source = load_fact_source(str(path), ["en", "zh"])
    assert source.facts == [f.restrict(["en", "zh"]) for f in load_facts(path)] and not source.notes
    none = load_fact_source(str(path), ["en", "de"])
    assert none.facts == [] and "3 of 3 facts" in none.notes[0] and "lack one of" in none.notes[0]


def test_bad_paths_and_too_many_facts_are_one_line_errors(tmp_path):
    with pytest.raises(FactSourceError, match=r"--data no/such: no such file or folder.*'shipped'"):
        load_fact_source("no/such", ["en"])
    with pytest.raises(AmigError, match=r"'data.path' no/such"):
        load_fact_source("no/such", ["en"], option="'data.path'")
    folder = write_bmlama_from_shipped(tmp_path / "bm", langs=("en",))
    with pytest.raises(AmigError, match=r"no zh\.tsv in this folder"):
        load_fact_source(str(folder), ["en", "zh"])
    with pytest.raises(NotEnoughFacts, match=r"--n 13: only 12 facts"):
        load_fact_source(str(folder), ["en"], n=13)
    for exc in (FactSourceError("x"), NotEnoughFacts("x")):
        assert isinstance(exc, AmigError)
