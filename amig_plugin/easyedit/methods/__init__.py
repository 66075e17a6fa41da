"""Our EasyEdit methods, laid out as EasyEdit lays out its own (``easyeditor/models/<method>/``),
and the one table that registers them.

* :mod:`.amig`: ``AMIG``, knowledge-neuron editing (``hparams.py``: :class:`AMIGHyperParams`;
  ``main.py``: :func:`apply_amig_to_model` and the sequential-edit helpers);
* :mod:`.likn`: ``LIKN``, editing language-independent knowledge neurons (``hparams.py``,
  ``main.py``: :func:`apply_likn_to_model`, ``evaluate.py``: cross-lingual scores);
* :mod:`.validation`: the hyper-parameter checks both share (:class:`HParamsError`).

:data:`METHODS` lists every method :func:`amig_plugin.easyedit.registration.register` adds to
EasyEdit's ``ALG_DICT``; adding a method is adding a row. A row names its hparams class and
apply function as ``"<subpackage>.<module>:<name>"`` so that reading the table imports
nothing (the apply functions import torch). Nothing here imports the registration or the
editor: they import this.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["METHODS", "MethodSpec", "method_spec"]


@dataclass(frozen=True)
class MethodSpec:
    """One EasyEdit method of ours: its ``alg_name``, hparams class and apply function."""

    name: str
    hparams: str
    apply: str

    def hparams_class(self) -> type:
        """The hparams class (``from_hparams(path)``, ``from_dict(mapping)``)."""
        return _resolve(self.hparams)

    def apply_function(self) -> Callable:
        """EasyEdit's apply function: ``(model, tok, requests, hparams, ...) -> (model, weights_copy)``."""
        return _resolve(self.apply)


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


#: Every method registered in EasyEdit, in registration order.
METHODS = (
    MethodSpec(name="AMIG", hparams="amig.hparams:AMIGHyperParams", apply="amig.main:apply_amig_to_model"),
    MethodSpec(name="LIKN", hparams="likn.hparams:LIKNHyperParams", apply="likn.main:apply_likn_to_model"),
)


def method_spec(name: str) -> MethodSpec:
    """The row of :data:`METHODS` named ``name`` (``KeyError`` naming the known ones)."""
    for spec in METHODS:
        if spec.name == name:
            return spec
    raise KeyError(f"no method {name!r} here; known: {[spec.name for spec in METHODS]}")
