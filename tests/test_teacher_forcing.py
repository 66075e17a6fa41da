"""EasyEdit's teacher-forced metrics from one batched forward per request: the same metrics as
EasyEdit's one forward per prompt, and the fall-backs to EasyEdit's own function."""

from __future__ import annotations

import contextlib
import copy
import importlib

import pytest
import torch

from test_easyedit_amig import HAS_EASYEDITOR, train_tiny_gpt2

needs_easyeditor = pytest.mark.skipif(not HAS_EASYEDITOR, reason="easyeditor is not installed")


class H:
    alg_name = "ROME"
    max_length = 40


RECORD = {
    "prompt": "The capital of France is",
    "target_new": "Rome",
    "ground_truth": "Paris",
    "rephrase_prompt": "France has its capital in",
    "locality": {"neighborhood": {"prompt": "The capital of Japan is", "ground_truth": "Tokyo"},
                 "zh_locality": {"prompt": "日本的首都是", "ground_truth": "东京"}},
    "portability": {"one_hop": {"prompt": "The capital of Egypt is", "ground_truth": "Cairo"},
                    "zh_reliability": {"prompt": "法国的首都是", "ground_truth": "罗马"},
                    "long": {"prompt": "The capital of Italy is " * 6, "ground_truth": "Rome Rome Rome Rome Rome"}},
}


@contextlib.contextmanager
def _bound(modules, name, value_of):
    saved = [(m, getattr(m, name)) for m in modules if hasattr(m, name)]
    for m, v in saved:
        setattr(m, name, value_of(v))
    try:
        yield
    finally:
        for m, v in saved:
            setattr(m, name, v)


def _forwards(model):
    count = [0]
    handle = model.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count, handle


@needs_easyeditor
@pytest.mark.parametrize("cjk_no_space", [True, False])
def test_one_forward_per_request_gives_easyedits_metrics(tmp_path, cjk_no_space):
    """compute_edit_quality with the prefetched batch returns exactly what it returns with one
    forward per prompt, in one forward (plus the one prompt EasyEdit would truncate, which goes
    to EasyEdit's own function)."""
    from amig_plugin.easyedit.compat import cuda_to_cpu, import_easyeditor
    from amig_plugin.easyedit.teacher_forcing import easyedit_sequence, prediction_acc, prefetching_edit_quality

    import_easyeditor()
    evaluate = importlib.import_module("easyeditor.evaluate.evaluate")
    modules = [evaluate] + [m for m in (_optional("easyeditor.evaluate.portability_evaluate"),) if m]
    model, tok = train_tiny_gpt2(str(tmp_path / "tiny-gpt2"), steps=30)
    tok.pad_token = tok.eos_token
    long = RECORD["portability"]["long"]
    assert len(easyedit_sequence(tok, long["prompt"], long["ground_truth"]).ids) > H.max_length
    original = evaluate.compute_edit_quality
    record = copy.deepcopy(RECORD)
    with cuda_to_cpu(True), torch.no_grad():
        with _bound(modules, "test_prediction_acc", lambda f: prediction_acc(f, cjk_no_space=cjk_no_space)):
            count, handle = _forwards(model)
            one_by_one = original(model, "tiny-gpt2", H, tok, record, 0)
            per_prompt = count[0]
            count[0] = 0
            batched = prefetching_edit_quality(original, cjk_no_space=cjk_no_space)(model, "tiny-gpt2", H, tok, record, 0)
            handle.remove()
    assert record == RECORD
    assert batched == one_by_one
    assert per_prompt == 7  # rewrite, rephrase, 2 locality, 3 portability
    assert count[0] == 2  # the batch, and the long prompt by EasyEdit's own function
    assert set(one_by_one["portability"]) == {"one_hop_acc", "zh_reliability_acc", "long_acc"}


def _optional(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@needs_easyeditor
def test_prediction_acc_answers_only_for_the_prefetched_model(tmp_path):
    """Outside a prefetched request, or for another model, the wrapper computes: a stale batch
    is never served."""
    from amig_plugin.easyedit.compat import cuda_to_cpu, import_easyeditor
    from amig_plugin.easyedit.teacher_forcing import _prefetched, prediction_acc

    import_easyeditor()
    original = importlib.import_module("easyeditor.evaluate.evaluate_utils").test_prediction_acc
    model, tok = train_tiny_gpt2(str(tmp_path / "tiny-gpt2"), steps=30)
    tok.pad_token = tok.eos_token
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(-1.0)  # another model: its predictions differ
    wrapped = prediction_acc(original)
    prompt, target = "The capital of France is", "Paris"
    with cuda_to_cpu(True), torch.no_grad():
        expected = original(other, tok, H, prompt, target, 0, locality=True)
        with _prefetched(model, tok, H, [(prompt, target)], cjk_no_space=True):
            assert wrapped(other, tok, H, prompt, target, 0, locality=True) == expected
            served = wrapped(model, tok, H, prompt, target, 0, locality=True)
        assert served == original(model, tok, H, prompt, target, 0, locality=True)
        assert served != expected


def test_record_pairs_reads_single_prompt_fields_only():
    from amig_plugin.easyedit.teacher_forcing import record_pairs

    record = dict(RECORD, rephrase_prompt=["a", "b"])  # two prompts: EasyEdit batches them itself
    pairs = record_pairs(record)
    assert ("The capital of France is", "Rome") in pairs
    assert not any(p in ("a", "b") for p, _ in pairs)
    assert ("日本的首都是", "东京") in pairs and len(pairs) == 6
    assert record_pairs({"prompt": ["p"], "target_new": "xy"}) == []  # EasyEdit would zip "p" with "x"


def test_prefetch_chunks_by_length_with_little_padding():
    """Sequences of similar length share one forward; a much longer one gets its own, so the
    padded cells stay within PADDING_LIMIT of the real tokens."""
    from amig_plugin.easyedit import teacher_forcing as T

    widths = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None, logits_to_keep=None):
            widths.append(tuple(input_ids.shape))
            logits = torch.nn.functional.one_hot(input_ids % 7, 7).float()
            return type("Out", (), {"logits": logits if logits_to_keep is None else logits[:, logits_to_keep]})()

    seqs = [T.ScoredSequence(tuple(range(1, n + 1)), 2) for n in (80, 90, 90, 100, 400)]
    preds = T._predictions(Model(), seqs, pad_id=0)
    assert sorted(widths) == [(1, 400), (4, 100)]
    # this fake model's argmax at a position is its own token id mod 7
    assert all(p == [i % 7 for i in s.ids[s.first - 1:-1]] for p, s in zip(preds, seqs))
