"""Registering our methods inside EasyEdit: one loop over
:data:`amig_plugin.easyedit.methods.METHODS`, plus the two hooks every method gets.

EasyEdit has no plugin mechanism: ``BaseEditor.__init__`` does
``self.apply_algo = ALG_DICT[hparams.alg_name]``. :func:`register` *mutates* that live dict
(:func:`amig_plugin.easyedit.compat.alg_dict`) and adds, idempotently (:func:`unregister`
takes all of it away again):

* ``ALG_DICT[name]`` = the row's apply function, for every row of ``METHODS`` (``AMIG``,
  ``LIKN``); GitHub main's restore sets (``CALLABLE_RESTORE_ALGS``, ``PEFT_RESTORE_ALGS``,
  ``KEEP_EDITED_MODEL_ALGS``) must not contain the name: our ``weights_copy`` is a
  ``{name: tensor}`` dict, restored by main's default branch. ``BatchEditor`` and
  ``SingletonEditor`` are hard-coded enums: ``batch_edit`` refuses our single-edit methods,
  as it refuses KN;
* the ``fact_check`` metric (:mod:`amig_plugin.easyedit.factcheck_metric`; without an
  active checker nothing changes);
* a hook on ``BaseEditor.__init__`` (every method, not only ours;
  :mod:`amig_plugin.easyedit.editor_hook`): the CPU fallback for hparams asking for a GPU
  on a machine without CUDA, and :class:`UnsupportedEditorModel` instead of a bare
  ``NotImplementedError`` for model names EasyEdit cannot load.

If another function is already registered under one of our names it raises unless
``force=True``.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

from . import editor_hook
from .compat import alg_dict, cpu_fallback, easyedit_flavour, registries
from .editor_hook import UnsupportedEditorModel
from .methods import METHODS, MethodSpec, method_spec

__all__ = [
    "ALG_NAME",
    "ALGORITHMS",
    "UnsupportedEditorModel",
    "cpu_fallback",
    "register",
    "unregister",
    "is_registered",
    "register_method",
    "unregister_method",
    "is_method_registered",
    "register_likn",
    "unregister_likn",
    "is_likn_registered",
]

ALG_NAME = "AMIG"
#: Every algorithm name that :func:`register` adds to ``ALG_DICT``.
ALGORITHMS = tuple(spec.name for spec in METHODS)
_RESTORE_SETS = ("CALLABLE_RESTORE_ALGS", "PEFT_RESTORE_ALGS", "KEEP_EDITED_MODEL_ALGS")
_LOCK = threading.RLock()


# ----------------------------------------------------------------------------------------
# one row of the table


def _add(spec: MethodSpec, force: bool) -> bool:
    """``ALG_DICT[spec.name] = apply function``; returns whether it was added now."""
    apply_fn = spec.apply_function()
    table = alg_dict()
    current = table.get(spec.name)
    if current is not None and current is not apply_fn and not force:
        raise RuntimeError(
            f"EasyEdit's ALG_DICT already maps {spec.name!r} to {getattr(current, '__module__', '?')}."
            f"{getattr(current, '__qualname__', current)!r}; pass force=True to replace it"
        )
    table[spec.name] = apply_fn
    found = registries()
    for name in _RESTORE_SETS:
        algs = found.get(name)
        if algs is not None and spec.name in algs:
            raise RuntimeError(
                f"EasyEdit's {name} contains {spec.name!r}: its weights_copy would not be restored "
                "as a {name: tensor} dict; remove it from that set"
            )
    return current is not apply_fn


def _remove(spec: MethodSpec) -> bool:
    """Delete ``ALG_DICT[spec.name]`` if it is ours; returns whether it was."""
    table = alg_dict()
    if table.get(spec.name) is spec.apply_function():
        del table[spec.name]
        return True
    return False


def is_method_registered(name: str) -> bool:
    """Whether ``ALG_DICT[name]`` is the apply function of our method ``name``."""
    spec = method_spec(name)
    return alg_dict().get(spec.name) is spec.apply_function()


def register_method(name: str, force: bool = False) -> Dict[str, Any]:
    """Add one method of :data:`~amig_plugin.easyedit.methods.METHODS` to ``ALG_DICT`` alone
    (idempotent). Returns ``{"alg_name", "flavour", "registered_now"}``."""
    with _LOCK:
        registered_now = _add(method_spec(name), force)
    return {"alg_name": name, "flavour": easyedit_flavour(), "registered_now": registered_now}


def unregister_method(name: str) -> bool:
    """Remove one of our methods from ``ALG_DICT``; returns whether it was registered."""
    with _LOCK:
        return _remove(method_spec(name))


def is_likn_registered() -> bool:
    return is_method_registered("LIKN")


def register_likn(force: bool = False) -> Dict[str, Any]:
    """Add ``LIKN`` to EasyEdit's live ``ALG_DICT`` (idempotent)."""
    return register_method("LIKN", force=force)


def unregister_likn() -> bool:
    return unregister_method("LIKN")


# ----------------------------------------------------------------------------------------
# everything


def is_registered() -> bool:
    """Whether ``ALG_DICT['AMIG']`` is our apply function (imports easyeditor)."""
    return is_method_registered(ALG_NAME)


def register(force: bool = False) -> Dict[str, Any]:
    """Add every method of :data:`~amig_plugin.easyedit.methods.METHODS` to EasyEdit's live
    ``ALG_DICT``, the ``fact_check`` metric to its per-request metrics, and the
    ``BaseEditor`` hook; idempotent.

    Returns ``{"alg_name": "AMIG", "flavour": ..., "registered_now": bool (AMIG),
    "algorithms": {"AMIG": bool, "LIKN": bool} (added now), "metrics": ["fact_check"]}``.
    """
    from . import factcheck_metric

    with _LOCK:
        added = {spec.name: _add(spec, force) for spec in METHODS}
        factcheck_metric.register()
        editor_hook.install()
    return {"alg_name": ALG_NAME, "flavour": easyedit_flavour(), "registered_now": added[ALG_NAME],
            "algorithms": added, "metrics": ["fact_check"]}


def unregister() -> bool:
    """Take back everything :func:`register` added (only what is ours). Returns whether
    ``AMIG`` was registered."""
    from . import factcheck_metric

    with _LOCK:
        removed = {spec.name: _remove(spec) for spec in METHODS}
        factcheck_metric.unregister()
        editor_hook.uninstall()
    return removed[ALG_NAME]
