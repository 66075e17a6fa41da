"""`amig dkn` and `amig factcheck` on a saved tiny model (resumed without recomputing, bad inputs
one line with exit code 2), and the DKN section of `amig demo`."""

from __future__ import annotations

import pytest
import torch

from amig_plugin.testing import save_tiny, tiny_sharp

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-gpt2", fact_words=True))


def test_cli_dkn_and_factcheck_resume_and_bad_inputs(tiny_dir, tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main
    from amig_plugin.store import RecordStore

    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    common = ["--model", tiny_dir, "--data", "shipped", "--lang", "en", "--n", "30", "--out", str(out), "--no-progress",
              "--threads", "1"]
    assert main(["dkn", *common, "--json", str(tmp_path / "d.json")]) == 0
    text = capsys.readouterr().out
    assert "| layer | top-k neurons | DKN neurons" in text and "30 facts" in text
    n_dkn = len(RecordStore(out / "dkn.jsonl"))
    assert n_dkn == 30
    assert main(["factcheck", *common, "--steps", "2", "--json", str(tmp_path / "f.json")]) == 0
    text = capsys.readouterr().out
    assert "wo_DKN likelihood rank" in text and "| en | with_DKN" in text
    n_fc = len(RecordStore(out / "factcheck.jsonl"))
    # resumed: nothing recomputed, nothing duplicated
    assert main(["factcheck", *common, "--steps", "2"]) == 0
    assert len(RecordStore(out / "dkn.jsonl")) == n_dkn and len(RecordStore(out / "factcheck.jsonl")) == n_fc
    capsys.readouterr()
    # 12 facts over 10 relations: no relation can be split -> a clear message, exit code 1
    assert main(["factcheck", *[c if c != "30" else "12" for c in common]]) == 1
    assert "no relation has enough facts" in capsys.readouterr().err
    for bad, msg in ((["--low", "0.5", "--high", "0.3"], "high"), (["--high", "1.5"], "high"), (["--k", "1"], "--k"),
                     (["--lam", "1.2"], "lam"), (["--split", "1,0,1"], "fractions"), (["--n", "100000"], "only")):
        assert main(["factcheck", *common, *bad]) == 2
        assert msg in capsys.readouterr().err


def test_demo_section_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    from amig_plugin.commands.dkn import demo_section

    monkeypatch.setenv("AMIG_CACHE", str(tmp_path))
    model, tok = tiny_sharp("gpt2", fact_words=True)
    demo_section(model, tok, ["en"], seed=0)
    text = capsys.readouterr().out
    assert "degenerate pairs among the top-20" in text and "mean DKN attribution" in text
