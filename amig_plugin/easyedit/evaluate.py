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


# where earlier releases had them
from .teacher_forcing import cjk_aware_prediction_acc, teacher_forced_predictions  # noqa: E402,F401
