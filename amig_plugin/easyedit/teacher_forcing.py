"""EasyEdit's teacher-forced token metrics: the CJK rule and one batched forward per request.

EasyEdit scores a causal LM by teacher forcing (``test_prediction_acc``): the prompt and the
target are joined with ``' '`` and tokenized, and the argmax at each target position is
compared with the target's token (accuracy), or returned (locality: the post-edit tokens are
later compared with the pre-edit ones). Two changes, neither of which changes a definition:

* **No ``' '`` after CJK text** (``cjk_no_space=True``): a prompt ending in a CJK character is
  scored as ``prompt`` directly followed by ``target`` (Chinese has no space between words).
* **One forward per request, not one per prompt.** ``compute_edit_quality`` calls
  ``test_prediction_acc`` once per prompt (rewrite, rephrase, each locality and portability
  key: 24 calls for an MzsRE request scored in 6 languages), each a full forward whose LM head
  covers every position. :func:`prefetching_edit_quality` reads the request's (prompt, target)
  pairs first and runs them as one right-padded batch with the head on the target positions
  only (:func:`~amig_plugin.models.logits.batched_logits_at`); each single-prompt call is then
  answered from that batch with EasyEdit's own tokenization and slicing. Anything else (a list
  of several prompts, which EasyEdit left-pads in one batch; a chat template; generation; a
  sequence EasyEdit would truncate (PyPI 0.0.1.dev0, at ``max_length``); a model other than
  the one prefetched) goes to EasyEdit's function. Right padding leaves each real position's logits those of the sequence alone, up
  to float rounding, so an argmax can differ only where two logits tie to rounding.

A scored sequence is ``ids`` with its labels from index ``first`` on: the predictions are the
argmaxes at positions ``first - 1 .. len(ids) - 2`` (EasyEdit's ``slice_list``).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from .prompts import has_cjk

__all__ = ["ScoredSequence", "easyedit_sequence", "no_space_sequence", "teacher_forced_predictions",
           "prediction_acc", "cjk_aware_prediction_acc", "prefetching_edit_quality", "record_pairs"]

#: the most tokens (rows x width) of one prefetch forward
TOKEN_BUDGET = 4096
#: a chunk of more than SMALL_CHUNK cells ends where its padded cells would exceed this
#: multiple of its real tokens (a small forward costs about its weight reads, whatever its padding)
PADDING_LIMIT = 1.25
SMALL_CHUNK = 256


@dataclass(frozen=True)
class ScoredSequence:
    """Token ids and the index of the first label token (labels: ``ids[first:]``)."""

    ids: tuple
    first: int

    @property
    def scorable(self) -> bool:
        """At least one label and one position before it (EasyEdit's slicing is defined)."""
        return 1 <= self.first < len(self.ids)


def easyedit_sequence(tok, prompt: str, target: str) -> ScoredSequence:
    """EasyEdit's encoding of one (prompt, target): ``tok(prompt + ' ' + target)``, the labels
    after as many tokens as ``tok(prompt)`` has non-pad ones (plus the pad tokens of the joined
    text, as EasyEdit counts them)."""
    full = list(tok(prompt + " " + target)["input_ids"])
    pad = tok.pad_token_id
    n_prompt = sum(int(i != pad) for i in tok(prompt)["input_ids"])
    n_pad = sum(int(i == pad) for i in full)
    return ScoredSequence(tuple(full), n_prompt + n_pad)


def no_space_sequence(tok, prompt: str, target: str) -> ScoredSequence:
    """``prompt`` directly followed by ``target`` (tokenized separately, the target without
    special tokens): the labels are exactly the target's tokens."""
    prompt_ids = list(tok(prompt)["input_ids"])
    target_ids = list(tok(target, add_special_tokens=False)["input_ids"])
    return ScoredSequence(tuple(prompt_ids + target_ids), len(prompt_ids))


def _predictions(model, sequences: Sequence[ScoredSequence], pad_id: int) -> list[list[int]]:
    """The argmax ids at each sequence's label positions: the sequences sorted by length and
    cut into batches of at most :data:`TOKEN_BUDGET` tokens, and, above :data:`SMALL_CHUNK`
    cells, at most :data:`PADDING_LIMIT` times their real tokens in padded cells."""
    import torch

    from ..models.logits import batched_logits_at

    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k].ids))
    out: list = [None] * len(sequences)
    with torch.no_grad():
        start = 0
        while start < len(order):
            stop, real = start + 1, len(sequences[order[start]].ids)
            while stop < len(order):
                n = len(sequences[order[stop]].ids)  # the chunk's width if this one joins
                cells = (stop + 1 - start) * n
                if cells > TOKEN_BUDGET or (cells > SMALL_CHUNK and cells > PADDING_LIMIT * (real + n)):
                    break
                stop, real = stop + 1, real + n
            chunk = order[start:stop]
            seqs = [(torch.tensor(sequences[k].ids, dtype=torch.long),
                     torch.arange(sequences[k].first - 1, len(sequences[k].ids) - 1)) for k in chunk]
            for k, logits in zip(chunk, batched_logits_at(model, seqs, pad_id=pad_id)):
                out[k] = logits.argmax(-1).tolist()
            start = stop
    return out


def teacher_forced_predictions(model, tok, prompt: str, target: str) -> tuple:
    """(argmax ids at the target's positions, gold ids) for ``prompt`` directly followed by
    ``target`` (:func:`no_space_sequence`)."""
    seq = no_space_sequence(tok, prompt, target)
    return _predictions(model, [seq], _pad_id(tok))[0], list(seq.ids[seq.first:])


def _pad_id(tok) -> int:
    return int(tok.pad_token_id) if tok.pad_token_id is not None else 0


# ----------------------------------------------------------------------------------------
# the prefetched batch of one request

_ACTIVE: list = []  # a stack of {"model", "tok", "entries": {(rule, prompt, target): (preds, labels)}}


def _rule(prompt: str, cjk_no_space: bool) -> str:
    return "no_space" if cjk_no_space and prompt and has_cjk(prompt.rstrip()[-1]) else "easyedit"


_SEQUENCE = {"easyedit": easyedit_sequence, "no_space": no_space_sequence}


def _single_pairs(prompts: Any, targets: Any) -> list[tuple[str, str]]:
    """The (prompt, target) of a field that holds one prompt (a string or a one-item list)."""
    if isinstance(prompts, list) and isinstance(targets, list) and len(prompts) == len(targets) == 1:
        prompts, targets = prompts[0], targets[0]
    return [(prompts, targets)] if isinstance(prompts, str) and isinstance(targets, str) else []


def record_pairs(record: dict) -> list[tuple[str, str]]:
    """The (prompt, target) pairs ``compute_edit_quality`` teacher-forces for an EasyEdit
    request: rewrite and rephrase with ``target_new``, each locality and portability key with
    its ``ground_truth`` (single-prompt fields only)."""
    pairs = _single_pairs(record.get("prompt"), record.get("target_new"))
    if record.get("rephrase_prompt") is not None:
        pairs += _single_pairs(record["rephrase_prompt"], record.get("target_new"))
    for field in ("locality", "portability"):
        for item in (record.get(field) or {}).values():
            if isinstance(item, dict):
                pairs += _single_pairs(item.get("prompt"), item.get("ground_truth"))
    return list(dict.fromkeys(pairs))


@contextlib.contextmanager
def _prefetched(model, tok, hparams, pairs: Sequence[tuple[str, str]], cjk_no_space: bool) -> Iterator[None]:
    # PyPI 0.0.1.dev0 truncates at hparams.max_length; GitHub main never truncates
    max_length = getattr(hparams, "max_length", None) if _truncates() else None
    keys, seqs = [], []
    for prompt, target in pairs:
        rule = _rule(prompt, cjk_no_space)
        seq = _SEQUENCE[rule](tok, prompt, target)
        if seq.scorable and (rule == "no_space" or max_length is None or len(seq.ids) <= max_length):
            keys.append((rule, prompt, target))
            seqs.append(seq)
    preds = _predictions(model, seqs, _pad_id(tok)) if seqs else []
    entries = {key: (p, list(seq.ids[seq.first:])) for key, seq, p in zip(keys, seqs, preds)}
    _ACTIVE.append({"model": model, "tok": tok, "entries": entries})
    try:
        yield
    finally:
        _ACTIVE.pop()


@functools.lru_cache(maxsize=1)
def _truncates() -> bool:
    from .compat import FLAVOUR_PYPI, easyedit_flavour

    return easyedit_flavour() == FLAVOUR_PYPI


def _served(model, tok, rule: str, prompt: str, target: str) -> Optional[tuple]:
    """(predictions, labels) of the prefetched batch, or None (not prefetched for this model)."""
    if not _ACTIVE or _ACTIVE[-1]["model"] is not model or _ACTIVE[-1]["tok"] is not tok:
        return None
    return _ACTIVE[-1]["entries"].get((rule, prompt, target))


def _eligible(model, model_name: Any, hparams, eval_metric: Any) -> bool:
    """Whether ``compute_edit_quality`` would teacher-force with ``test_prediction_acc``."""
    from torch import nn

    return (isinstance(model, nn.Module) and "t5" not in str(model_name).lower()
            and getattr(hparams, "alg_name", None) != "GRACE"
            and getattr(hparams, "evaluation_type", None) in (None, "", "teacher-forcing")
            and str(eval_metric) not in ("ppl", "ood_ppl"))


def prefetching_edit_quality(original: Callable, cjk_no_space: bool = True) -> Callable:
    """Wrap EasyEdit's ``compute_edit_quality(model, model_name, hparams, tok, record, device,
    eval_metric=..., test_generation=...)``: the request's pairs (:func:`record_pairs`) are
    scored in one batch first; :func:`prediction_acc` answers from it. Same results."""

    @functools.wraps(original)
    def compute_edit_quality(model, model_name, hparams, tok, record, device, *args, **kwargs):
        eval_metric = kwargs.get("eval_metric", args[0] if args else "token_em")
        if not isinstance(record, dict) or not _eligible(model, model_name, hparams, eval_metric):
            return original(model, model_name, hparams, tok, record, device, *args, **kwargs)
        with _prefetched(model, tok, hparams, record_pairs(record), cjk_no_space):
            return original(model, model_name, hparams, tok, record, device, *args, **kwargs)

    compute_edit_quality.__wrapped__ = original
    return compute_edit_quality


def prediction_acc(original: Callable, cjk_no_space: bool = True) -> Callable:
    """Wrap EasyEdit's ``test_prediction_acc(model, tok, hparams, prompts, targets, device,
    locality=False, **kwargs)`` with the same return shapes (a list of accuracies, or of
    predicted-id lists for locality). Single prompts come from the prefetched batch when there
    is one; with ``cjk_no_space`` a prompt ending in a CJK character is scored without
    EasyEdit's ``' '``; everything else, and a call with ``vanilla_generation=True``
    (generation, not teacher forcing), is EasyEdit's own."""

    def test_prediction_acc(model, tok, hparams, prompts, targets, device, locality=False, **kwargs):
        if kwargs.get("vanilla_generation") or (
                not locality and getattr(hparams, "use_chat_template", False)):
            return original(model, tok, hparams, prompts, targets, device, locality=locality, **kwargs)
        ps, ts = ([prompts], [targets]) if isinstance(prompts, str) else (list(prompts), list(targets))
        rules = [_rule(p, cjk_no_space) for p in ps]
        if all(r == "easyedit" for r in rules):
            single = _single_pairs(prompts, targets)
            hit = _served(model, tok, "easyedit", *single[0]) if single else None
            if hit is None:
                return original(model, tok, hparams, prompts, targets, device, locality=locality, **kwargs)
            import numpy as np

            preds, labels = hit
            return [preds] if locality else [np.mean(np.equal(preds, labels))]
        out = []
        for p, t, rule in zip(ps, ts, rules):
            if rule == "no_space":
                hit = _served(model, tok, rule, p, t)
                preds, gold = hit if hit is not None else teacher_forced_predictions(model, tok, p, t)
                out.append(preds if locality else float(sum(int(a == b) for a, b in zip(preds, gold)) / len(gold)))
            else:
                out.append(test_prediction_acc(model, tok, hparams, p, t, device, locality=locality, **kwargs)[0])
        return out

    test_prediction_acc.__wrapped__ = original
    return test_prediction_acc


def cjk_aware_prediction_acc(original: Callable) -> Callable:
    """:func:`prediction_acc` with the CJK rule on (the name earlier releases exported)."""
    return prediction_acc(original, cjk_no_space=True)
