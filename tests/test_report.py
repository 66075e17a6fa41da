"""`amig report`: tables and plots of a run folder (tiny GPT-2, shipped facts)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from amig_plugin.pipeline import parse_config, run
from amig_plugin.pipeline.studies import STUDIES
from amig_plugin.report import build_report, layer_counts, markdown_table, overlap_data
from amig_plugin.testing import save_tiny

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = save_tiny(tmp_path_factory.mktemp("tiny-gpt2-report"), seed=5, fact_words=True)
    # 3 relations x 3 facts: the smallest set fact-checking can split (DKN / dev / test part)
    from amig_plugin.data import group_by_relation, save_facts, shipped_facts

    groups = group_by_relation(shipped_facts(["en", "zh"]))
    save_facts([f for rel in sorted(groups)[:3] for f in groups[rel][:3]], folder / "facts.jsonl")
    return folder


def config(model_dir: Path, n: int | None = None, **over) -> dict:
    studies = {"localization": {}, "effect": {"n_unrelated": 2}, "likn_overlap": {}}
    if "dkn" in STUDIES:
        studies["dkn"] = {"k": 6}
    if "factcheck" in STUDIES:
        studies["factcheck"] = {}
    cfg = {"model": str(model_dir), "threads": 1, "methods": ["amig"], "languages": ["en", "zh"],
           "data": {"kind": "jsonl", "path": str(model_dir / "facts.jsonl"), "n": n}, "localization": {"steps": 4, "cache": False, "heatmap_facts": 1},
           "studies": studies, "progress": False}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def run_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert run(parse_config(config(model_dir)), out).summary["complete"]
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_report_writes_tables_plots_and_page(run_dir):
    index = build_report(run_dir)
    out = index.parent
    page = index.read_text(encoding="utf-8")
    for name in ("layers.png", "heatmap.png", "overlap.png", "effect.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
        assert f"]({name})" in page, name
    assert "complete: **True**" in page
    overview = {r["study"]: r for r in read_csv(out / "overview.csv")}
    assert overview["localization"]["expected"] == "18" and overview["localization"]["missing"] == "0"
    if "factcheck" in overview:
        assert overview["factcheck"]["ok"] == "2"
    for study in overview:
        if study in ("localization", "effect", "likn_overlap", "dkn"):
            assert (out / f"{study}.csv").is_file() and f"## {study}" in page
    effect = read_csv(out / "effect.csv")
    assert {(r["neurons"], r["mode"], r["lang"]) for r in effect} == {
        (n, m, l) for n in ("amig", "random") for m in ("suppress", "enhance") for l in ("en", "zh")}
    # the layer table counts every neuron of every fact
    rows = read_csv(out / "layers.csv")
    records = [json.loads(l) for l in (run_dir / "results" / "localization.jsonl").read_text().splitlines()]
    for lang in ("en", "zh"):
        total = sum(len(r["result"]["neurons"]) for r in records if r["lang"] == lang and r["status"] == "ok")
        counted = sum(int(r["count"]) for r in rows if r["kind"] == "knowledge neurons" and r["lang"] == lang)
        assert counted == total > 0
    likn = [json.loads(l) for l in (run_dir / "results" / "likn_overlap.jsonl").read_text().splitlines()]
    assert sum(int(r["count"]) for r in rows if r["kind"] == "LIKN") == sum(r["result"]["size"] for r in likn)
    # the LIKN overlap study reports the controls of `amig likn`: in summary.json and on the page
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    (likn_row,) = summary["studies"]["likn_overlap"]["rows"]
    assert likn_row["controls"]["pairs"][0]["languages"] == ["en", "zh"]
    assert likn_row["controls"]["pairs"][0]["facts"] == len(likn)
    assert "LIKN overlap controls (AMIG)" in page and "shuffled, same relation" in page
    assert "shuffled_same_relation" in read_csv(out / "likn_overlap.csv")[0]


def test_overlap_and_layer_counts_by_hand():
    def rec(fact, lang, neurons):
        return {"status": "ok", "fact_id": fact, "lang": lang, "method": "amig", "result": {"neurons": neurons}}

    loc = [rec("a", "en", [[0, 1], [1, 2], [2, 3]]), rec("a", "zh", [[1, 2], [2, 4]]),
           rec("b", "en", [[0, 5]]), rec("b", "zh", [[1, 6]]), rec("c", "en", [[0, 7]])]  # c: no zh record
    per_layer, sizes, jaccard = overlap_data(loc, "amig", ("en", "zh"), 3)
    assert per_layer == {"en only": [2, 0, 1], "both": [0, 1, 0], "zh only": [0, 1, 1]}
    assert sizes == [1, 0] and jaccard == [0.25, 0.0]
    rows = layer_counts(loc, [], [], 3)
    en = [r["count"] for r in rows if r["lang"] == "en"]
    assert en == [3, 1, 1]


def test_heatmap_recomputed_when_not_stored(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    stored = sorted((copy / "attributions").glob("*.pt"))
    assert len(stored) == 2  # the first fact, en and zh
    before = {p.name: torch.load(p, weights_only=True)["attributions"] for p in stored}
    for p in stored:
        p.unlink()
    build_report(copy, recompute=True, threads=1)
    assert (copy / "report" / "heatmap.png").read_bytes().startswith(PNG)
    for name, tensor in before.items():
        assert torch.allclose(torch.load(copy / "attributions" / name, weights_only=True)["attributions"], tensor,
                              atol=1e-6)


class _Rigged:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("via_cli", [False, True])
def test_a_rigged_attribution_file_is_refused_and_runs_nothing(run_dir, tmp_path, via_cli):
    import shutil
    import subprocess
    import sys

    from amig_plugin.pipeline.folder import UnsafeFileError

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    marker = tmp_path / "PWNED"
    stored = sorted((copy / "attributions").glob("*.pt"))
    torch.save({"attributions": torch.zeros(3, 64), "layers": [0, 1, 2], "x": _Rigged(marker)}, stored[0])
    if via_cli:
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.run([sys.executable, "-m", "amig_plugin.cli", "report", str(copy)], capture_output=True,
                              text=True, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(root)})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr and "refused to load" in lines[-1] and stored[0].name in lines[-1]
    else:
        with pytest.raises(UnsafeFileError, match="refused to load.*GLOBAL .*system.*could run code"):
            build_report(copy)
    assert not marker.exists()


def test_a_damaged_attribution_file_is_a_clear_error(run_dir, tmp_path):
    import shutil

    from amig_plugin.pipeline.folder import UnsafeFileError

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    stored = sorted((copy / "attributions").glob("*.pt"))
    stored[0].write_bytes(b"not a tensor file")
    with pytest.raises(UnsafeFileError, match="refused to load.*Unsupported operand"):
        build_report(copy)
    torch.save({"attributions": [1, 2], "layers": "x"}, stored[0])
    with pytest.raises(UnsafeFileError, match="not an attribution file"):
        build_report(copy)


def test_report_of_an_incomplete_run(model_dir, tmp_path):
    out = tmp_path / "run"
    run(parse_config(config(model_dir, n=4, studies={"localization": {}, "effect": {"n_unrelated": 1}})), out, limit=5)
    index = build_report(out)
    page = index.read_text(encoding="utf-8")
    assert "complete: **False**" in page
    overview = {r["study"]: r for r in read_csv(index.parent / "overview.csv")}
    assert int(overview["localization"]["missing"]) + int(overview["effect"]["missing"]) == 16 - 5


def test_markdown_table_escapes_and_formats():
    text = markdown_table([{"a": 0.000012345, "b": "x|y", "c": float("nan"), "d": 3}])
    assert "1.23e-05" in text and "x\\|y" in text and "| - |" in text


@pytest.mark.skipif("dkn" not in STUDIES, reason="the dkn plug-in is not available")
def test_dkn_study_shares_the_dkn_store_with_amig_dkn(model_dir, tmp_path, monkeypatch):
    """With the localization cache on, the run's DKN detections go to (and come from) the
    store `amig dkn` / `amig factcheck` use: a second run folder computes none again."""
    from amig_plugin.store import RecordStore

    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    cfg = config(model_dir, n=3, studies={"localization": {}, "dkn": {"k": 6}})
    cfg["localization"] = {"steps": 4, "cache": True, "heatmap_facts": 0}
    first = run(parse_config(cfg), tmp_path / "a")
    stores = list((tmp_path / "cache" / "dkn").glob("*/dkn.jsonl"))
    assert len(stores) == 1
    assert len(list(RecordStore(stores[0]))) == 6  # 3 facts x 2 languages
    second = run(parse_config(cfg), tmp_path / "b")
    assert first.summary["complete"] and second.summary["complete"]
    assert len(list(RecordStore(stores[0]))) == 6  # reused, nothing added

    def results(folder):
        return {(r["fact_id"], r["lang"]): r["result"] for r in map(json.loads, open(folder / "results" / "dkn.jsonl"))}

    assert results(tmp_path / "a") == results(tmp_path / "b")
