"""``AMIG`` as an EasyEdit method.

* :mod:`.hparams`: :class:`AMIGHyperParams` (strict YAML/JSON validation; no torch);
* :mod:`.main`: :func:`apply_amig_to_model` (localize, then edit the value vectors),
  :class:`WeightsCopy` and the sequential-edit helpers (imports torch, on first access here).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..validation import HParamsError
from .hparams import REQUIRED_KEYS, VALID_KEYS, AMIGHyperParams

_MAIN = ("WeightsCopy", "apply_amig_to_model", "end_sequence", "reapply_sequence", "sequence_state")

__all__ = ["AMIGHyperParams", "HParamsError", "REQUIRED_KEYS", "VALID_KEYS", *_MAIN]


def __getattr__(name: str) -> Any:
    if name in _MAIN:
        return getattr(importlib.import_module(f"{__name__}.main"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
