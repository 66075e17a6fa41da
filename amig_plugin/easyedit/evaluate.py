"""Averaging EasyEdit's per-request metrics.

``BaseEditor.edit`` returns one dict per request, ``{"pre": {...}, "post": {...},
"time": s, ...}``, whose accuracies are lists (one value per prompt). :func:`summarize`
averages them the way GitHub main's ``summary_metrics`` does (mean over a request's list,
then over requests), without writing files.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

__all__ = ["summarize", "mean"]


def mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def _value(v: Any) -> Optional[float]:
    if isinstance(v, (list, tuple)):
        inner = [_value(x) for x in v]
        inner = [x for x in inner if x is not None]
        return mean(inner) if inner else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def summarize(all_metrics: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``{"requests": n, "seconds_per_edit": s, "pre": {...}, "post": {...}}`` with the
    means of ``rewrite_acc``, ``rephrase_acc`` and every ``locality``/``portability``
    ``*_acc`` key (pre-edit locality is by definition 1 and is not reported by EasyEdit).

    ``seconds_per_edit`` is the mean of the requests' ``time`` (seconds in the apply
    function): PyPI 0.0.1.dev0 records it; GitHub main's ``edit_requests`` does not, and
    :class:`~amig_plugin.easyedit.editor.AMIGEditor` fills it in there. ``None`` when no
    request has one (a plain GitHub-main ``BaseEditor``)."""
    if isinstance(all_metrics, dict):
        all_metrics = [all_metrics]
    out: Dict[str, Any] = {"requests": len(all_metrics)}
    times = [m.get("time") for m in all_metrics if m.get("time") is not None]
    out["seconds_per_edit"] = mean(times) if times else None
    for phase in ("pre", "post"):
        acc: Dict[str, List[float]] = {}
        for m in all_metrics:
            section = m.get(phase) or {}
            for key in ("rewrite_acc", "rephrase_acc"):
                if key in section and _value(section[key]) is not None:
                    acc.setdefault(key, []).append(_value(section[key]))
            for group in ("locality", "portability"):
                for key, v in (section.get(group) or {}).items():
                    if key.endswith("_acc") and _value(v) is not None:
                        acc.setdefault(f"{group}.{key}", []).append(_value(v))
        out[phase] = {k: mean(v) for k, v in acc.items()}
    return out


# ----------------------------------------------------------------------------------------
# EasyEdit's causal token accuracy without its ' ' join after CJK text


def teacher_forced_predictions(model, tok, prompt: str, target: str) -> tuple:
    """(argmax ids at the target's positions, gold ids) for ``prompt`` directly followed by
    ``target`` (tokenized separately, target without special tokens, no space inserted)."""
    import torch

    prompt_ids = list(tok(prompt)["input_ids"])
    target_ids = list(tok(target, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([prompt_ids + target_ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    n = len(prompt_ids)
    preds = logits[n - 1: n - 1 + len(target_ids)].argmax(-1).tolist()
    return preds, target_ids


def cjk_aware_prediction_acc(original):
    """Wrap EasyEdit's ``test_prediction_acc(model, tok, hparams, prompts, targets, device,
    locality=False, **kwargs)``: prompts ending in a CJK character are scored as
    ``prompt + target`` (Chinese has no space between words; EasyEdit joins with ``' '``),
    the others by EasyEdit's own function. Same return shapes (accuracies, or predicted ids
    for locality). Further keywords (GitHub main's ``vanilla_generation``) go to EasyEdit's
    function; a call with ``vanilla_generation=True`` (generation, not teacher forcing) is
    EasyEdit's own."""
    from .prompts import has_cjk

    def test_prediction_acc(model, tok, hparams, prompts, targets, device, locality=False, **kwargs):
        single = isinstance(prompts, str)
        ps, ts = ([prompts], [targets]) if single else (list(prompts), list(targets))
        if kwargs.get("vanilla_generation") or not any(p and has_cjk(p.rstrip()[-1]) for p in ps):
            return original(model, tok, hparams, prompts, targets, device, locality=locality, **kwargs)
        out = []
        for p, t in zip(ps, ts):
            if p and has_cjk(p.rstrip()[-1]):
                preds, gold = teacher_forced_predictions(model, tok, p, t)
                out.append(preds if locality else float(sum(int(a == b) for a, b in zip(preds, gold)) / len(gold)))
            else:
                res = original(model, tok, hparams, p, t, device, locality=locality, **kwargs)
                out.append(res[0])
        return out

    test_prediction_acc.__wrapped__ = original
    return test_prediction_acc
