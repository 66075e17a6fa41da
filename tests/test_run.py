"""`amig run`: config validation, kill -9 and resume, corrupted last lines, sharding, merge.

Tiny GPT-2 (amig_plugin.testing) saved to a folder, shipped facts; every run takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from amig_plugin.pipeline import ConfigError, IncompleteRunError, RunFolder, RunLocked, merge_run, parse_config, run
from amig_plugin.pipeline.config import load_config
from amig_plugin.report import diff_runs
from amig_plugin.store import StoreError
from amig_plugin.testing import save_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 + word tokenizer saved with save_pretrained (loadable by load_model)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), seed=3, fact_words=True)


def make_config(model_dir: Path, **over) -> dict:
    cfg = {
        "model": str(model_dir), "threads": 1, "seed": 0, "methods": ["amig", "kn"], "languages": ["en", "zh"],
        "data": {"kind": "shipped", "n": 8},
        "localization": {"steps": 4, "cache": False, "heatmap_facts": 1},
        "studies": {"localization": {}, "effect": {"n_unrelated": 2}, "likn_overlap": {}},
        "progress": False,
    }
    for key, value in over.items():
        cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def results(run_dir: Path) -> dict[str, dict]:
    """unit -> record without timing/process metadata, over every study's merged results."""
    out = {}
    for path in sorted((run_dir / "results").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            rec.pop("meta", None)
            rec.pop("traceback", None)
            out[rec["unit"]] = rec
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("WORLD_SIZE", None)
    return e


def amig(*args) -> list[str]:
    return [sys.executable, "-m", "amig_plugin.cli", *args]


@pytest.fixture(scope="session")
def reference(tiny_model_dir, tmp_path_factory) -> Path:
    """An uninterrupted single-process run (in process)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    cfg = parse_config(make_config(tiny_model_dir))
    summary = run(cfg, out).summary
    assert summary["complete"]
    return out


def n_records(run_dir: Path) -> int:
    total = 0
    for path in (run_dir / "records").glob("*/rank*.jsonl"):
        with open(path, "rb") as f:
            total += f.read().count(b"\n")
    return total


# ----------------------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize("patch, names", [
    ({"langauges": ["en"]}, ["'langauges'", "languages"]),
    ({"data": {"kind": "shipped", "nn": 3}}, ["'nn'", "'data'", "did you mean 'n'"]),
    ({"localization": {"stpes": 3}}, ["'stpes'", "'localization'", "steps"]),
    ({"studies": {"efect": {}}}, ["'efect'", "'studies'", "effect", "localization"]),
    ({"studies": {"effect": {"n_unrelatd": 2}}}, ["'n_unrelatd'", "'studies.effect'", "n_unrelated"]),
    ({"localization": {"tau": {"de": 0.3}}}, ["'de'", "'localization.tau'", "en, zh"]),
    ({"methods": ["amgi"]}, ["'amgi'", "amig, kn"]),
    ({"dtype": "bf61"}, ["'bf61'", "bfloat16"]),
    ({"data": {"kind": "bmlama"}}, ["'data.path'"]),
    ({"data": {"kind": "csv"}}, ["'data.kind'", "bmlama, jsonl, shipped"]),
    ({"localization": {"steps": 0}}, ["'localization.steps'"]),
    ({"studies": {"effect": {"modes": ["erase"]}}}, ["erase", "suppress"]),
])
def test_bad_config_names_the_key(tiny_model_dir, patch, names):
    cfg = make_config(tiny_model_dir)
    cfg.update(patch)
    with pytest.raises(ConfigError) as info:
        parse_config(cfg)
    for name in names:
        assert name in str(info.value), (name, str(info.value))


def test_missing_required_key(tiny_model_dir):
    cfg = make_config(tiny_model_dir)
    del cfg["model"]
    with pytest.raises(ConfigError, match="missing key 'model'"):
        parse_config(cfg)


def test_cli_reports_bad_config_without_traceback(tmp_path, tiny_model_dir):
    path = write_config(tmp_path / "bad.yaml", {**make_config(tiny_model_dir), "thraeds": 2})
    proc = subprocess.run(amig("run", str(path), "--out", str(tmp_path / "r")), capture_output=True, text=True,
                          env=env(), timeout=120)
    assert proc.returncode == 2
    assert "unknown key 'thraeds'" in proc.stderr and "did you mean 'threads'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dependencies_are_added_and_example_configs_parse(tiny_model_dir):
    cfg = parse_config({**make_config(tiny_model_dir), "studies": {"effect": {}}})
    assert list(cfg.studies) == ["localization", "effect"]
    from amig_plugin.pipeline import STUDIES

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if all(name in STUDIES for name in raw.get("studies") or {}):  # likn/dkn plug-ins may be absent
            load_config(path)


# ----------------------------------------------------------------------------------------
# kill -9 and resume


def test_kill9_and_resume_equals_uninterrupted(tmp_path, tiny_model_dir, reference):
    cfg_path = write_config(tmp_path / "cfg.yaml", make_config(tiny_model_dir))
    out = tmp_path / "run"
    expected = results(reference)
    kills = 0
    for threshold in (5, 25):  # two kills at different points, then a clean finish
        proc = subprocess.Popen(amig("run", str(cfg_path), "--out", str(out)), env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        while n_records(out) < threshold and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert n_records(out) < len(expected), "the run finished before it could be killed"
    assert kills == 2
    run(load_config(cfg_path), out)  # the third start finishes the run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"]
    for name, s in summary["studies"].items():
        assert s["missing"] == 0 and s["duplicates"] == 0 and s["extra"] == 0, (name, s)
    assert results(out) == expected
    starts = [e for e in RunFolder(out).read_log() if e["event"] == "start"]
    assert len(starts) == 3 and all("versions" in e and "config" in e and "seeds" in e for e in starts)


def test_corrupted_last_line_is_detected_and_repaired(tmp_path, tiny_model_dir, reference):
    out = tmp_path / "run"
    cfg = parse_config(make_config(tiny_model_dir))
    run(cfg, out)
    shard = out / "records" / "effect" / "rank0.jsonl"
    data = shard.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data[:last_start + (len(data) - last_start) // 2]  # a crash in the middle of the last write
    shard.write_bytes(cut)
    summary = merge_run(out)  # read-only: the cut line is reported, not removed
    assert summary["studies"]["effect"]["partial_lines"] == ["records/effect/rank0.jsonl"]
    assert summary["studies"]["effect"]["missing"] == 1 and not summary["complete"]
    assert shard.read_bytes() == cut
    result = run(cfg, out)
    assert result.computed == 1
    assert (out / "records" / "effect" / "rank0.jsonl.corrupt").is_file()
    assert result.summary["complete"]
    assert results(out) == results(reference)


def test_damage_before_the_last_line_is_an_error(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    cfg = parse_config(make_config(tiny_model_dir, data={"kind": "shipped", "n": 2},
                                   studies={"localization": {}}))
    run(cfg, out)
    shard = out / "records" / "localization" / "rank0.jsonl"
    lines = shard.read_bytes().split(b"\n")
    lines[1] = lines[1][:20]
    shard.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match="rank0.jsonl:2"):
        run(cfg, out)


# ----------------------------------------------------------------------------------------
# sharding


def test_two_process_torchrun_equals_one_process(tmp_path, tiny_model_dir, reference):
    """torchrun --nproc_per_node=2 (gloo on CPU) gives the results of one process; here it
    also resumes a run that one process started (20 units), so nothing may be recomputed
    twice when the process count changes."""
    out = tmp_path / "run"
    cfg = make_config(tiny_model_dir)
    first = run(parse_config(cfg), out, limit=20)
    assert first.computed == 20 and first.summary is not None and not first.summary["complete"]
    cfg_path = write_config(tmp_path / "cfg.yaml", cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "amig_plugin.cli", "run", str(cfg_path), "--out", str(out)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in (out / "records" / "localization").glob("rank*.jsonl")) == ["rank0.jsonl", "rank1.jsonl"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and all(s["duplicates"] == 0 and s["extra"] == 0 for s in summary["studies"].values())
    assert results(out) == results(reference)
    d = diff_runs(out, reference)
    assert (d["common"], d["same"], d["differ"], d["max_score_diff"]) == (32, 32, [], 0.0)
    ranks = {json.loads(l)["meta"]["rank"] for l in (out / "results" / "effect.jsonl").read_text().splitlines()}
    assert ranks == {0, 1}
    starts = [e for e in RunFolder(out).read_log() if e["event"] == "start"]
    assert sorted((e["rank"], e["world"]) for e in starts) == [(0, 1), (0, 2), (1, 2)]


# ----------------------------------------------------------------------------------------
# failures, merge checks, config changes, locks


def test_failing_facts_are_recorded_and_counted(tmp_path, tiny_model_dir):
    from amig_plugin.data import shipped_facts
    from amig_plugin.pipeline.merge import exit_code, format_summary

    facts = [f.to_dict() for f in shipped_facts(["en"])[:4]]
    facts[1]["prompts"]["en"] = ["the capital " * 40 + "is <mask> ."]  # longer than the model's 64 positions
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    cfg = parse_config(make_config(tiny_model_dir, languages=["en"], methods=["amig"],
                                   data={"kind": "jsonl", "path": str(path)},
                                   studies={"localization": {}, "effect": {"n_unrelated": 3}}))
    out = tmp_path / "run"
    summary = run(cfg, out).summary
    loc = summary["studies"]["localization"]
    assert (loc["expected"], loc["ok"], loc["failed"], loc["missing"]) == (4, 3, 1, 0)
    effect = [json.loads(l) for l in (out / "results" / "effect.jsonl").read_text().splitlines()]
    # only the long fact's own effect unit fails (its dependency); the others skip its prompt as unrelated
    assert [r["fact_id"] for r in effect if r["status"] != "ok"] == [facts[1]["id"]]
    for r in (r for r in effect if r["status"] == "ok"):
        assert list(r["result"]["skipped_unrelated"]) == [facts[1]["id"]]
        assert "PromptTooLongError" in r["result"]["skipped_unrelated"][facts[1]["id"]]
        assert len(r["result"]["unrelated_facts"]) == 2
    bad = [json.loads(l) for l in (out / "results" / "localization.jsonl").read_text().splitlines()]
    bad = [r for r in bad if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["fact_id"] == facts[1]["id"]
    assert "PromptTooLongError" in bad[0]["error"] and "more than the 64 positions" in bad[0]["error"]
    assert summary["complete"] and summary["failed"] == 2 and not summary["all_ok"]  # recorded, but not all ok
    with pytest.raises(IncompleteRunError, match=r"'localization': \(0, 0, 1\).*--retry-failed"):
        merge_run(out, strict=True)  # a strict merge does not pass failed units
    last = format_summary(summary).splitlines()[-1]
    assert last.startswith("FAILED: 2 unit(s) failed") and "--retry-failed" in last and exit_code(summary) == 1
    again = run(cfg, out)  # resuming does not retry (nor drop) failures
    assert again.computed == 0 and again.summary["studies"]["localization"]["failed"] == 1
    retried = run(cfg, out, retry_failed=True)
    assert retried.computed == 2
    s = retried.summary["studies"]["localization"]
    assert (s["failed"], s["duplicates"], s["records"]) == (1, 0, 5)  # latest attempt counts, first kept


def test_cli_run_with_failed_units_exits_1_and_says_so(tmp_path, tiny_model_dir):
    from amig_plugin.data import shipped_facts

    facts = [f.to_dict() for f in shipped_facts(["en"])[:2]]
    facts[0]["prompts"]["en"] = ["the capital " * 40 + "is <mask> ."]
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    cfg = write_config(tmp_path / "cfg.yaml", make_config(tiny_model_dir, languages=["en"], methods=["amig"],
                                                          data={"kind": "jsonl", "path": str(path)},
                                                          studies={"localization": {}}))
    proc = subprocess.run(amig("run", str(cfg), "--out", str(tmp_path / "r")), capture_output=True, text=True,
                          env=env(), timeout=300)
    assert proc.returncode == 1, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: 1 unit(s) failed") and "complete" not in last


def test_merge_detects_duplicates_and_missing(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    cfg = parse_config(make_config(tiny_model_dir, data={"kind": "shipped", "n": 3}, studies={"localization": {}}))
    run(cfg, out)
    shard0 = out / "records" / "localization" / "rank0.jsonl"
    lines = shard0.read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "records" / "localization" / "rank1.jsonl").write_text(lines[0], encoding="utf-8")
    shard0.write_text("".join(lines[1:]), encoding="utf-8")
    summary = merge_run(out)
    s = summary["studies"]["localization"]
    assert s["duplicates"] == 0 and s["missing"] == 0  # moved, not duplicated
    (out / "records" / "localization" / "rank2.jsonl").write_text(lines[0] + lines[1], encoding="utf-8")
    summary = merge_run(out)
    s = summary["studies"]["localization"]
    assert s["duplicates"] == 2 and not summary["complete"]
    os.remove(out / "records" / "localization" / "rank2.jsonl")
    shard0.write_text("".join(lines[2:]), encoding="utf-8")
    s = merge_run(out)["studies"]["localization"]
    assert s["missing"] == 1 and s["missing_units"] == [json.loads(lines[1])["unit"]]


def test_changed_settings_are_refused_added_studies_accepted(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    base = make_config(tiny_model_dir, data={"kind": "shipped", "n": 2}, studies={"localization": {}})
    run(parse_config(base), out)
    changed = {**base, "localization": {**base["localization"], "steps": 5}}
    with pytest.raises(ConfigError, match="localization.steps: 4 -> 5"):
        run(parse_config(changed), out)
    more = {**base, "studies": {"effect": {"n_unrelated": 1}}, "data": {"kind": "shipped", "n": 3}}
    result = run(parse_config(more), out)
    assert result.summary["complete"]
    assert set(result.summary["studies"]) == {"localization", "effect"}
    assert result.summary["studies"]["localization"]["ok"] == 12  # 3 facts x 2 langs x 2 methods: 8 reused


def test_a_second_live_process_is_refused(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    cfg = parse_config(make_config(tiny_model_dir, data={"kind": "shipped", "n": 1}, studies={"localization": {}}))
    lock = RunFolder(out).lock_rank(0)
    try:
        with pytest.raises(RunLocked, match="rank 0"):
            run(cfg, out)
    finally:
        lock.close()


def test_the_lock_error_is_one_line_naming_the_process_and_the_fix(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", make_config(tiny_model_dir, data={"kind": "shipped", "n": 1},
                                                          studies={"localization": {}}))
    lock = RunFolder(out).lock_rank(0)  # this process holds rank 0
    try:
        proc = subprocess.run(amig("run", str(cfg), "--out", str(out)), capture_output=True, text=True, env=env(),
                              timeout=120)
    finally:
        lock.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"is in use: process {os.getpid()} is writing rank 0" in last and f"kill {os.getpid()}" in last


def test_a_failed_first_start_does_not_pin_its_config(tmp_path, tiny_model_dir):
    """A start that failed before computing anything (wrong model path) leaves a config in the
    folder; a corrected config is accepted (while a folder with records still refuses changes)."""
    from amig_plugin.loading import ModelNotFoundError

    out = tmp_path / "run"
    base = make_config(tiny_model_dir, data={"kind": "shipped", "n": 1}, studies={"localization": {}})
    with pytest.raises(ModelNotFoundError):
        run(parse_config({**base, "model": str(tmp_path / "no-such-model")}), out)
    assert RunFolder(out).read_config().model == str(tmp_path / "no-such-model")  # the failed start's config
    result = run(parse_config(base), out)  # the corrected model path is accepted
    assert result.summary["all_ok"] and RunFolder(out).read_config().model == str(tiny_model_dir)
    with pytest.raises(ConfigError, match="different configuration"):
        run(parse_config({**base, "model": str(tmp_path / "other")}), out)
    (out / "config.yaml").write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: not valid YAML"):
        run(out / "config.yaml", out)


def test_a_bad_cached_record_is_recomputed_inside_a_run(tmp_path, tiny_model_dir, monkeypatch):
    """A wrong-typed or out-of-range record in the shared localization cache is recomputed
    (with a warning naming the cache file): the run's units are ok."""
    from amig_plugin.localization.cache import CacheWarning

    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    cfg = make_config(tiny_model_dir, languages=["en"], methods=["amig"], data={"kind": "shipped", "n": 3},
                      localization={"steps": 4, "cache": True, "heatmap_facts": 0}, studies={"localization": {}})
    first = run(parse_config(cfg), tmp_path / "a")
    assert first.summary["all_ok"]
    (cache_file,) = (tmp_path / "cache" / "localizations").glob("*.jsonl")
    lines = [json.loads(l) for l in cache_file.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    lines[0]["neurons"]["neurons"] = "abc"
    lines[1]["neurons"]["neurons"] = [[0, 10 ** 6]]
    lines[1]["neurons"]["scores"] = [1.0]
    cache_file.write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    with pytest.warns(CacheWarning, match=str(cache_file)):
        second = run(parse_config(cfg), tmp_path / "b")
    assert second.summary["all_ok"] and second.summary["studies"]["localization"]["ok"] == 3
    assert results(tmp_path / "a") == results(tmp_path / "b")


def test_run_facts_come_from_the_commands_loader(tmp_path):
    """The config's data section and `--data` read the same facts; a kind that does not match
    the path is one error naming the right kind."""
    from amig_plugin.pipeline import load_run_facts
    from amig_plugin.sources import load_fact_source
    from amig_plugin.data import sample_facts, save_facts, shipped_facts

    path = tmp_path / "facts.jsonl"
    save_facts(shipped_facts()[:10], path)
    config = parse_config(make_config(tmp_path, data={"kind": "jsonl", "path": str(path), "n": 4}))
    expected = sample_facts(load_fact_source(str(path), ["en", "zh"]).facts, 4, seed=0)
    assert load_run_facts(config) == expected
    shipped = parse_config(make_config(tmp_path, data={"kind": "shipped", "n": 5}))
    assert load_run_facts(shipped) == load_fact_source(None, ["en", "zh"], n=5).facts
    wrong = parse_config(make_config(tmp_path, data={"kind": "bmlama", "path": str(path)}))
    with pytest.raises(ConfigError, match=r"holds jsonl facts but 'data.kind' is 'bmlama'; set 'data.kind: jsonl'"):
        load_run_facts(wrong)
    with pytest.raises(ConfigError, match=r"'data.path' is required for data.kind='mlama'"):
        parse_config(make_config(tmp_path, data={"kind": "mlama"}))
