"""``amig compare --data``: benchmark files, the model-prediction ground truth note, and a
run killed mid-way that resumes without repeating or losing a request."""

from __future__ import annotations

import json

import pytest

from test_easyedit_compare import _yamls, needs_easyeditor

CAPITALS = [("France", "Paris", "Rome"), ("Germany", "Berlin", "Tokyo"), ("Japan", "Tokyo", "Paris")]


def zsre_file(path, answers: bool):
    recs = []
    for i, (country, capital, new) in enumerate(CAPITALS):
        r = {"case_id": i, "subject": country, "src": f"The capital of {country} is", "alt": new,
             "rephrase": f"{country}'s capital is", "loc": "nq question: The capital of Italy is", "loc_ans": "Rome"}
        if answers:
            r["answers"] = [capital]
        recs.append(r)
    path.write_text(json.dumps(recs))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from test_easyedit_amig import train_tiny_gpt2

    root = tmp_path_factory.mktemp("resume")
    model_dir = root / "tiny-gpt2"
    train_tiny_gpt2(str(model_dir), steps=60)
    _yamls(root / "hp", "tiny-gpt2")
    return root, model_dir


def argv(root, model_dir, data, out, extra=()):
    return ["compare", "--model", str(model_dir), "--data", str(data), "--n", "3", "--methods", "AMIG,FT",
            "--hparams-dir", str(root / "hp"), "--out", str(out), "--other-lang", "none",
            "--set", "AMIG.max_neurons=3", *extra]


def record_lines(out):
    return [json.loads(l) for f in sorted(out.with_suffix(".records").glob("rank*.jsonl"))
            for l in f.read_text().splitlines() if l.strip()]


@needs_easyeditor
def test_killed_compare_resumes_without_repeating_or_losing(setup, tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main
    from amig_plugin.easyedit import compare as C

    root, model_dir = setup
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))  # the model's answers are cached there
    data, out = zsre_file(tmp_path / "zsre.json", answers=True), tmp_path / "res.json"
    real = C.run_method
    calls = []

    def killed_after(k):
        def run(editor, requests, seed=0, **kwargs):
            if len(calls) == k:
                raise KeyboardInterrupt("killed")  # not an Exception: nothing catches it, like a kill
            calls.append(requests[0]["prompt"])
            return real(editor, requests, seed=seed, **kwargs)
        return run

    monkeypatch.setattr(C, "run_method", killed_after(4))
    with pytest.raises(KeyboardInterrupt):
        main(argv(root, model_dir, data, out))
    first = record_lines(out)
    assert len(first) == 4 and [r["method"] for r in first] == ["AMIG"] * 3 + ["FT"]
    calls.clear()
    monkeypatch.setattr(C, "run_method", killed_after(10 ** 6))
    assert main(argv(root, model_dir, data, out)) == 0
    assert len(calls) == 2  # only what was missing
    lines = record_lines(out)
    pairs = [(r["case_id"], r["method"]) for r in lines]
    assert len(pairs) == len(set(pairs)) == 6
    assert sorted(pairs) == sorted((str(i), m) for i in range(3) for m in ("AMIG", "FT"))
    text = capsys.readouterr().out
    assert "| AMIG | 3 |" in text and "| FT | 3 |" in text
    assert all(r["amig_edit"]["edit_rule"] == "dai" for r in lines if r["method"] == "AMIG")
    # done: a third run edits nothing
    calls.clear()
    assert main(argv(root, model_dir, data, out)) == 0 and calls == []


@needs_easyeditor
def test_ground_truth_from_the_model_is_said_in_the_table(setup, tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main

    root, model_dir = setup
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))  # the model's answers are cached there
    data, out = zsre_file(tmp_path / "zsre.json", answers=False), tmp_path / "res.json"
    assert main(argv(root, model_dir, data, out, ["--set", "AMIG.edit_rule=optimize", "--methods", "AMIG"])) == 0
    text = capsys.readouterr().out
    assert "model's own greedy prediction for 3 of 3 requests" in text
    assert "| AMIG | 3 |" in text and "optimized value vectors (our extension)" in text
    saved = json.loads(out.read_text())
    assert all(r["ground_truth"] for r in saved["requests"])


@needs_easyeditor
def test_data_and_facts_together_are_refused(setup, tmp_path, capsys):
    from amig_plugin.cli import main

    root, model_dir = setup
    data = zsre_file(tmp_path / "zsre.json", answers=True)
    assert main(argv(root, model_dir, data, tmp_path / "r.json", ["--facts", str(data)])) == 2
    assert "either --data" in capsys.readouterr().err
