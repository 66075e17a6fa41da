"""Scoring a LIKN edit in every language of its request, inside EasyEdit's evaluation.

:func:`cross_lingual_quality` scores a request in every language: EasyEdit's token accuracy
of ``target_new`` (and of the ground truth) teacher-forced after the prompt, without
EasyEdit's ``prompt + " " + target`` join (no space after CJK text), plus P(new), P(old) and
whether the new object now beats the old. :func:`edit_cross_lingual` runs
``editor.edit_requests`` with that score added to EasyEdit's pre/post metrics
(``metrics[i]["pre"|"post"]["cross_lingual"][lang]``); :func:`summarize_cross_lingual`
averages them per language.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from .hparams import LIKNHyperParams
from .main import _query, request_languages

__all__ = ["cross_lingual_quality", "cross_lingual_evaluation", "edit_cross_lingual", "summarize_cross_lingual"]


def _score(family, tok, prompt: str, target: str) -> dict:
    """Teacher-forced token accuracy and Σ log P of ``target`` after ``prompt`` (engine
    encoding: no space inserted after CJK text; masked LMs: one [MASK] per token)."""
    import torch

    from ....attribution import frozen_eval

    cloze, _target, engine_target = _query(family, tok, prompt, target)
    q = family.encode(tok, cloze, _target)
    with frozen_eval(family.model), torch.no_grad():
        logits = family.model(input_ids=q.input_ids.unsqueeze(0).to(family.device())).logits[0]
    logits = logits[q.score_positions.to(logits.device)].float()
    logp = torch.log_softmax(logits, dim=-1)
    gold = q.target_ids.to(logits.device)
    acc = float((logits.argmax(-1) == gold).float().mean())
    total = float(logp.gather(-1, gold.view(-1, 1)).sum())
    return {"acc": acc, "logprob": total, "tokens": int(gold.numel())}


def cross_lingual_quality(model, tok, request: Mapping, hparams: Optional[LIKNHyperParams] = None) -> Dict[str, dict]:
    """``{lang: {"rewrite_acc", "ground_truth_acc", "new_prob", "old_prob", "new_beats_old"}}``
    for every language of ``request`` (primary + ``multilingual``); ``rewrite_acc`` is
    EasyEdit's token accuracy of ``target_new``; ``new_beats_old`` compares log-prob per token."""
    import math

    from ....models import get_family

    family = get_family(model)
    out = {}
    for lang, item in request_languages(request, hparams).items():
        res: Dict[str, Any] = {}
        if item.get("target_new"):
            new = _score(family, tok, item["prompt"], item["target_new"])
            res.update(rewrite_acc=new["acc"], new_prob=math.exp(new["logprob"]))
        if item.get("ground_truth"):
            old = _score(family, tok, item["prompt"], item["ground_truth"])
            res.update(ground_truth_acc=old["acc"], old_prob=math.exp(old["logprob"]))
        if item.get("target_new") and item.get("ground_truth"):
            res["new_beats_old"] = new["logprob"] / new["tokens"] > old["logprob"] / old["tokens"]
        out[lang] = res
    return out


@contextlib.contextmanager
def cross_lingual_evaluation(editor) -> Iterator[None]:
    """Inside ``editor.runtime()``: EasyEdit's ``compute_edit_quality`` (whatever the editor
    installed, e.g. the masked-LM one) also returns ``["cross_lingual"]`` for requests that
    carry ``multilingual``."""
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    original = editor_mod.compute_edit_quality
    hparams = editor.hparams if isinstance(editor.hparams, LIKNHyperParams) else None

    def compute_edit_quality(model, model_name, hp, tok, record, *args, **kwargs):
        ret = original(model, model_name, hp, tok, record, *args, **kwargs)
        if isinstance(record, Mapping) and record.get("multilingual"):
            ret["cross_lingual"] = cross_lingual_quality(model, tok, record, hparams)
        return ret

    editor_mod.compute_edit_quality = compute_edit_quality
    try:
        yield
    finally:
        editor_mod.compute_edit_quality = original


def edit_cross_lingual(editor, requests: Sequence[Mapping], **kwargs):
    """``editor.edit_requests(requests, **kwargs)`` with the cross-lingual scores added to
    each request's pre- and post-edit metrics. Returns EasyEdit's ``(metrics, model,
    weights_copy)``."""
    runtime = getattr(editor, "runtime", None)
    with (runtime() if runtime is not None else contextlib.nullcontext()), cross_lingual_evaluation(editor):
        return editor.edit_requests(list(requests), **kwargs)


def summarize_cross_lingual(all_metrics: Sequence[Mapping]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{"pre"|"post": {lang: {metric: mean over requests}}}`` of the cross-lingual scores."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for phase in ("pre", "post"):
        acc: Dict[str, Dict[str, List[float]]] = {}
        for m in all_metrics:
            for lang, res in ((m.get(phase) or {}).get("cross_lingual") or {}).items():
                for key, value in res.items():
                    acc.setdefault(lang, {}).setdefault(key, []).append(float(value))
        out[phase] = {lang: {k: sum(v) / len(v) for k, v in d.items()} for lang, d in acc.items()}
    return out
