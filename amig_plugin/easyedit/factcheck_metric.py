"""The DKN fact-checker as an EasyEdit metric: after an edit, does the edited model now judge
the edited fact true and its old object wrong?

EasyEdit has no metric registry: ``BaseEditor.edit`` calls ``compute_edit_quality`` (the name
bound in ``easyeditor.editors.editor``) once per request before the edit (``pre``) and once
after it (``post``). :func:`register` wraps that function (idempotent, like ``AMIG``'s
registration; PyPI 0.0.1.dev0 and GitHub main alike) and the masked-LM metric that
:class:`~amig_plugin.easyedit.editor.AMIGEditor` swaps in for BERT-like models, so that while a
:class:`~amig_plugin.factcheck.FactChecker` is active every request's ``pre`` and ``post``
metrics carry::

    "fact_check": {
        "relation": "bmlama-the-capital-of-x-is-y",      # from the checker's templates
        "new": {"score": s, "threshold": t, "true": bool},  # (prompt, target_new)
        "old": {"score": s, "threshold": t, "true": bool},  # (prompt, ground_truth)
        "new_judged_true": bool, "old_judged_false": bool,
        "success": bool,                                  # both: the checker believes the edit
        "likelihood_prefers_new": bool,                   # baseline: log P(new) > log P(old)
    }

with every DKN judgement computed on the model that EasyEdit passes (``pre``: the model
before this edit, ``post``: the edited one). The checker's neurons and thresholds come from
``amig factcheck --save-checker`` on the unedited model: the question is whether the
unedited model's degenerate neurons now vouch for the new object.

Use::

    from amig_plugin.easyedit import factcheck_metric
    from amig_plugin.factcheck import FactChecker

    factcheck_metric.register(FactChecker.load("checker-en.json"))   # or: with factcheck_metric.using(checker):
    metrics, model, _ = editor.edit(prompts=..., ground_truth=..., target_new=..., subject=...)
    metrics[0]["post"]["fact_check"]["success"]
    factcheck_metric.summarize(metrics)   # rates over the requests, pre and post

The relation of a request comes from the checker's relation templates and the request's
``subject`` (or a ``relation`` key, when the request dict carries one); a request no template
matches gets ``"relation": None`` and no DKN verdict (the likelihood baseline is still given).
Without an active checker the wrapper changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from typing import Any, Dict, Iterator, Optional, Union

from ..factcheck import FactChecker, likelihood
from .prompts import cloze_prompt, missing_answer, strip_target

__all__ = ["register", "unregister", "is_registered", "using", "active_checker", "fact_check_metric", "summarize"]

_LOCK = threading.Lock()
_STATE: Dict[str, Any] = {"checker": None}
_MARK = "_amig_factcheck_original"

#: (module, attribute, argument positions of model / tokenizer / record)
_TARGETS = (
    ("easyeditor.editors.editor", "compute_edit_quality"),
    ("amig_plugin.easyedit.masked_lm", "compute_masked_lm_edit_quality"),
)


def _as_checker(checker: Union[FactChecker, str, os.PathLike, dict, None]) -> Optional[FactChecker]:
    if checker is None or isinstance(checker, FactChecker):
        return checker
    if isinstance(checker, dict):
        return FactChecker.from_dict(checker)
    return FactChecker.load(checker)


def active_checker() -> Optional[FactChecker]:
    return _STATE["checker"]


def fact_check_metric(model, tokenizer, request: Dict[str, Any], checker: FactChecker) -> Dict[str, Any]:
    """The ``fact_check`` entry for one EasyEdit request on ``model`` (see the module docstring)."""
    prompt = request["prompt"]
    if isinstance(prompt, (list, tuple)):
        prompt = prompt[0]
    cloze = cloze_prompt(prompt, getattr(tokenizer, "mask_token", None))
    subject = request.get("subject")
    relation = request.get("relation")
    if relation not in checker.relations:
        relation = checker.relation_of(cloze, subject)
    out: Dict[str, Any] = {"relation": relation}
    objects = {"new": request.get("target_new"), "old": request.get("ground_truth")}
    logps = {}
    for name, obj in objects.items():
        if missing_answer(obj):
            out[name] = None
            continue
        obj = strip_target(obj)
        if relation is not None:
            out[name] = checker.judge(model, tokenizer, cloze, obj, relation=relation)
            out[name].pop("relation", None)
        else:
            out[name] = None
        logps[name] = likelihood(model, tokenizer, cloze, obj)["logprob"]
    new, old = out.get("new"), out.get("old")
    out["new_judged_true"] = None if new is None else bool(new["true"])
    out["old_judged_false"] = None if old is None else (not old["true"])
    out["success"] = None if new is None or old is None else bool(new["true"] and not old["true"])
    out["likelihood_prefers_new"] = (logps["new"] > logps["old"]) if len(logps) == 2 else None
    return out


def _wrap(function):
    @functools.wraps(function)
    def with_fact_check(*args, **kwargs):
        result = function(*args, **kwargs)
        checker = _STATE["checker"]
        if checker is None or not isinstance(result, dict):
            return result
        model = kwargs.get("model", args[0] if args else None)
        tok = kwargs.get("tok", args[3] if len(args) > 3 else None)
        record = kwargs.get("record", args[4] if len(args) > 4 else None)
        if model is None or tok is None or not isinstance(record, dict):
            return result
        result["fact_check"] = fact_check_metric(model, tok, record, checker)
        return result

    setattr(with_fact_check, _MARK, function)
    return with_fact_check


def _modules():
    from .compat import import_easyeditor

    import_easyeditor()
    for module_name, attr in _TARGETS:
        yield importlib.import_module(module_name), attr


def is_registered() -> bool:
    return all(hasattr(getattr(mod, attr), _MARK) for mod, attr in _modules())


def register(checker: Union[FactChecker, str, os.PathLike, dict, None] = None) -> Dict[str, Any]:
    """Wrap EasyEdit's per-request metric (idempotent) and, if given, make ``checker`` (a
    :class:`FactChecker`, its dict, or the path of its JSON) the active one."""
    with _LOCK:
        wrapped = []
        for mod, attr in _modules():
            current = getattr(mod, attr)
            if not hasattr(current, _MARK):
                setattr(mod, attr, _wrap(current))
                wrapped.append(f"{mod.__name__}.{attr}")
        if checker is not None:
            _STATE["checker"] = _as_checker(checker)
    return {"metric": "fact_check", "wrapped_now": wrapped, "checker_active": _STATE["checker"] is not None}


def unregister() -> bool:
    """Restore the original functions and drop the active checker. Returns whether anything
    was wrapped."""
    with _LOCK:
        any_ = False
        for mod, attr in _modules():
            current = getattr(mod, attr)
            if hasattr(current, _MARK):
                setattr(mod, attr, getattr(current, _MARK))
                any_ = True
        _STATE["checker"] = None
    return any_


@contextlib.contextmanager
def using(checker: Union[FactChecker, str, os.PathLike, dict]) -> Iterator[FactChecker]:
    """``register()`` and make ``checker`` active inside the ``with`` block only."""
    register()
    previous = _STATE["checker"]
    _STATE["checker"] = _as_checker(checker)
    try:
        yield _STATE["checker"]
    finally:
        _STATE["checker"] = previous


def summarize(all_metrics) -> Dict[str, Any]:
    """Rates over the requests that got a verdict: ``{"pre": {...}, "post": {...}}`` with
    ``new_judged_true``, ``old_judged_false``, ``success``, ``likelihood_prefers_new`` and the
    number of requests without a relation."""
    if isinstance(all_metrics, dict):
        all_metrics = [all_metrics]
    out: Dict[str, Any] = {"requests": len(all_metrics)}
    for phase in ("pre", "post"):
        entries = [(m.get(phase) or {}).get("fact_check") for m in all_metrics]
        entries = [e for e in entries if e]
        phase_out: Dict[str, Any] = {"no_relation": sum(1 for e in entries if e["relation"] is None)}
        for key in ("new_judged_true", "old_judged_false", "success", "likelihood_prefers_new"):
            vals = [bool(e[key]) for e in entries if e.get(key) is not None]
            phase_out[key] = sum(vals) / len(vals) if vals else None
        out[phase] = phase_out
    return out
