"""Compare records: keys, resume after a kill, sharded ranks."""

from __future__ import annotations

import json

import pytest

from amig_plugin.compare_records import CompareRecords, record_key, shard
from amig_plugin.data.edits import EditRequest

REQS = [EditRequest(prompt=f"p{i}", subject=f"s{i}", target_new=f"t{i}", ground_truth=f"g{i}", case_id=str(i))
        for i in range(5)]
SETTINGS = {"amig": {"edit_rule": "optimize", "steps": 40}, "ROME": {"layers": [5]}}


def test_key_depends_on_request_method_and_settings():
    k = record_key(REQS[0], "amig", SETTINGS["amig"])
    assert k == record_key(REQS[0].fingerprint(), "amig", dict(reversed(list(SETTINGS["amig"].items()))))
    assert k != record_key(REQS[1], "amig", SETTINGS["amig"])
    assert k != record_key(REQS[0], "ROME", SETTINGS["amig"])
    assert k != record_key(REQS[0], "amig", {**SETTINGS["amig"], "steps": 41})


def run(out, fail_after=None, rank=0, world=1):
    """Process this rank's pending (request, method) pairs; raise after ``fail_after`` records."""
    recs = CompareRecords(out, rank=rank)
    done = 0
    for i, req, method in recs.pending(shard(REQS, rank, world), SETTINGS, SETTINGS):
        if fail_after is not None and done == fail_after:
            raise RuntimeError("killed")
        recs.add(req, method, SETTINGS[method], {"rewrite": 1.0, "i": req.case_id})
        done += 1
    return done


def test_killed_run_resumes_without_repeating_or_losing(tmp_path):
    with pytest.raises(RuntimeError):
        run(tmp_path, fail_after=3)
    assert len(CompareRecords(tmp_path)) == 3
    # a line cut by kill -9 in the middle of a write
    path = tmp_path / "rank0.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"key": "half')
    assert run(tmp_path) == 2 * len(REQS) - 3
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    pairs = [(l["case_id"], l["method"]) for l in lines]
    assert len(pairs) == len(set(pairs)) == 2 * len(REQS)
    assert run(tmp_path) == 0  # all done


def test_ranks_write_their_own_files_and_see_each_other(tmp_path):
    assert run(tmp_path, rank=0, world=2) == 6 and run(tmp_path, rank=1, world=2) == 4
    recs = CompareRecords(tmp_path, rank=0)
    assert len(recs) == 10 and recs.pending(REQS, SETTINGS, SETTINGS) == []
    assert [r["case_id"] for r in recs.records(REQS, "ROME", SETTINGS["ROME"])] == [str(i) for i in range(5)]
