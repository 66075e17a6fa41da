"""`amig likn`: its fact loader (BMLAMA quirks, three languages, errors naming file and line) and
the command end to end on a saved tiny model (resumed from the cache, --report-only)."""

from __future__ import annotations

import json

import pytest

from amig_plugin.data import FactFormatError
from amig_plugin.likn import parallel_new_object
from amig_plugin.testing import tiny_facts, write_tsv

EN = [["the capital of france is <mask> .", "paris", "paris, rome", "france"],
      ["the capital of italy is <mask> .", "rome", "paris, rome", "italy"]]
ZH = [["法国 的 首都 是 <mask> 。", "巴黎", "巴黎, rome", "法国"],
      ["italy 的 首都 是 <mask> 。", "rome", "巴黎, rome", "italy"]]


def test_cli_loader_bmlama_quirks_and_three_languages(tmp_path):
    from amig_plugin.commands.likn import load_fact_data

    write_tsv(tmp_path / "en.tsv", EN)
    write_tsv(tmp_path / "de.tsv", EN)
    # BMLAMA zh quirks: CRLF line ends, header with 5 fields over 4-field rows
    write_tsv(tmp_path / "zh.tsv", ZH, header="Prompt\tAns\tCandidate\tAns\tSubject", eol="\r\n")
    facts, source, notes = load_fact_data(str(tmp_path), ["en", "zh", "de"])
    assert source.startswith("BMLAMA") and not notes
    assert [f.languages for f in facts] == [("de", "en", "zh")] * 2
    assert facts[0].prompt("zh") == "法国 的 首都 是 <mask> 。" and facts[0].candidates["zh"] == ("巴黎", "rome")
    assert parallel_new_object(facts[0], ["en", "zh", "de"]) == {"en": "rome", "zh": "rome", "de": "rome"}


def test_cli_loader_errors_name_file_and_line(tmp_path):
    from amig_plugin.commands.likn import load_fact_data

    write_tsv(tmp_path / "en.tsv", EN)
    write_tsv(tmp_path / "zh.tsv", [r[:2] + r[3:] for r in ZH], header="Prompt\tAns\tSubject")
    with pytest.raises(FactFormatError, match=r"zh\.tsv:1: missing column"):
        load_fact_data(str(tmp_path), ["en", "zh"])
    write_tsv(tmp_path / "zh.tsv", ZH[:1])
    with pytest.raises(FactFormatError, match=r"row count mismatch.*first row without a counterpart: .*en\.tsv:3"):
        load_fact_data(str(tmp_path), ["en", "zh"])
    write_tsv(tmp_path / "zh.tsv", [ZH[0], ZH[1][:3]])
    with pytest.raises(FactFormatError, match=r"zh\.tsv:3: expected 4 tab-separated fields"):
        load_fact_data(str(tmp_path), ["en", "zh"])
    write_tsv(tmp_path / "xx.tsv", EN)
    with pytest.raises(FactFormatError, match=r"xx\.tsv: unknown language code 'xx'"):
        load_fact_data(str(tmp_path), ["en", "xx"])
    with pytest.raises(FactFormatError, match="not a BMLAMA directory"):
        load_fact_data(str(tmp_path), ["en", "fr"])
    bad = tmp_path / "facts.jsonl"
    good = json.dumps(tiny_facts(n=1)[0].to_dict(), ensure_ascii=False)
    bad.write_text(good + "\n" + good.replace('"subject"', '"subjekt"') + "\n", encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"facts\.jsonl:2: unknown field"):
        load_fact_data(str(bad), ["en", "zh"])
    bad.write_text(good + "\n", encoding="utf-8")
    facts, _, notes = load_fact_data(str(bad), ["en", "de"])
    assert facts == [] and "lack one of" in notes[0]


def test_cli_end_to_end_on_a_saved_tiny_model(models, tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main

    model, tok = models("gpt2")
    folder = tmp_path / "tiny-gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in tiny_facts()), encoding="utf-8")
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    args = ["likn", "--model", str(folder), "--data", str(data), "--langs", "en,zh", "--n", "4", "--steps", "3",
            "--out", str(tmp_path / "out"), "--n-unrelated", "2", "--protocols", "activation"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "Mono-KN (zh→en)" in out.out and "0 reused, 8 computed" in out.err
    assert main(args) == 0
    assert "8 reused, 0 computed" in capsys.readouterr().err
    assert main(["likn", "--report-only", "--out", str(tmp_path / "out")]) == 0
    assert "Mono-KN (zh→en)" in capsys.readouterr().out
    assert main(["likn", "--report-only"]) == 2  # needs --out
    assert main(["likn", "--model", str(folder), "--data", str(data), "--langs", "en"]) == 2
