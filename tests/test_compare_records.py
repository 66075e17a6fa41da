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


def test_cached_predictions_are_keyed_by_the_weights_and_checked(tmp_path):
    """The model's answers are predicted once per (weights, tokenizer, predictor, prompt, n),
    served from disk to a later process, recomputed after an edit of any weight, with another
    n, with another predictor version, under fresh=True, and where a record is unusable."""
    import torch

    from amig_plugin.compare_records import CachedPredictions
    from amig_plugin.localization import CacheWarning
    from amig_plugin.testing import tiny

    model, tok = tiny("gpt2", seed=0)
    calls = []

    def predict(m, t, prompt, n):
        calls.append((prompt, n))
        return f"{prompt}:{n}:{float(next(m.parameters()).detach().sum()):.4f}"

    path = tmp_path / "gt" / "tiny.jsonl"
    cached = CachedPredictions(predict, model, tok, path)
    first = cached(model, tok, "a", 2)
    assert cached(model, tok, "a", 2) == first and len(calls) == 1 and (cached.hits, cached.computed) == (1, 1)
    cached(model, tok, "a", 3)
    assert len(calls) == 2  # another length
    again = CachedPredictions(predict, model, tok, path)  # a later process
    assert again(model, tok, "a", 2) == first and len(calls) == 2
    assert CachedPredictions(predict, model, tok, path, version="2")(model, tok, "a", 2) == first and len(calls) == 3
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an edited model under the same name
    edited = CachedPredictions(predict, model, tok, path)
    assert edited(model, tok, "a", 2) != first and len(calls) == 4
    assert CachedPredictions(predict, model, tok, path, fresh=True)(model, tok, "a", 2) and len(calls) == 5
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    broken = {**lines[-1], "prediction": 7, "replaces": True}
    with path.open("a") as stream:
        stream.write(json.dumps(broken) + "\n")
    with pytest.warns(CacheWarning, match="not a string"):
        assert isinstance(CachedPredictions(predict, model, tok, path)(model, tok, "a", 2), str)
    assert len(calls) == 6
