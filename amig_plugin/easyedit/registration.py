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
* a hook on ``BaseEditor.__init__`` (every method, not only ours): the CPU fallback
  (:func:`amig_plugin.easyedit.compat.cpu_fallback`; on PyPI 0.0.1.dev0 the editor's
  construction and edit calls then run inside ``cuda_to_cpu``), and
  :class:`UnsupportedEditorModel` instead of a bare ``NotImplementedError`` for model names
  EasyEdit cannot load, naming :func:`amig_plugin.easyedit.editor.load_editor`.

If another function is already registered under one of our names it raises unless
``force=True``.
"""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any, Dict

from ..errors import AmigError
from .compat import alg_dict, cpu_fallback, cuda_to_cpu, easyedit_flavour, registries
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
_GUARD_MARK = "_amig_model_name_guard"
_EDIT_METHODS = ("edit", "edit_requests", "batch_edit", "edit_dataset")


class UnsupportedEditorModel(AmigError, NotImplementedError):
    """EasyEdit's ``BaseEditor`` cannot load this model by name."""


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
# the BaseEditor hook


def _base_editor():
    return importlib.import_module("easyeditor.editors.editor").BaseEditor


def _on_cpu(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        with cuda_to_cpu():
            return method(*args, **kwargs)

    return run


def _guard(init):
    @functools.wraps(init)
    def __init__(self, hparams, *args, **kwargs):
        how = cpu_fallback(hparams) if hparams is not None else None
        try:
            with cuda_to_cpu(how == "cuda_to_cpu"):
                result = init(self, hparams, *args, **kwargs)
            if how == "cuda_to_cpu" and not getattr(type(self), "handles_devices", False):
                for name in _EDIT_METHODS:
                    if hasattr(self, name):
                        setattr(self, name, _on_cpu(getattr(self, name)))
            return result
        except NotImplementedError as exc:
            name = getattr(hparams, "model_name", None)
            if isinstance(exc, AmigError) or not isinstance(name, str) or str(exc):
                raise
            raise UnsupportedEditorModel(
                f"EasyEdit's BaseEditor cannot load {name!r} by name (it knows only names containing t5, gpt, "
                f"llama, baichuan, chatglm, internlm, qwen or mistral); use "
                f"amig_plugin.easyedit.load_editor(hparams), which loads it with amig_plugin's model loader"
            ) from None

    setattr(__init__, _GUARD_MARK, init)
    return __init__


def _guard_model_names() -> bool:
    """Wrap ``BaseEditor.__init__`` once; returns whether it was wrapped now."""
    cls = _base_editor()
    init = cls.__dict__["__init__"]
    if hasattr(init, _GUARD_MARK):
        return False
    cls.__init__ = _guard(init)
    return True


def _unguard_model_names() -> None:
    cls = _base_editor()
    init = cls.__dict__["__init__"]
    if hasattr(init, _GUARD_MARK):
        cls.__init__ = getattr(init, _GUARD_MARK)


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
        _guard_model_names()
    return {"alg_name": ALG_NAME, "flavour": easyedit_flavour(), "registered_now": added[ALG_NAME],
            "algorithms": added, "metrics": ["fact_check"]}


def unregister() -> bool:
    """Take back everything :func:`register` added (only what is ours). Returns whether
    ``AMIG`` was registered."""
    from . import factcheck_metric

    with _LOCK:
        removed = {spec.name: _remove(spec) for spec in METHODS}
        factcheck_metric.unregister()
        _unguard_model_names()
    return removed[ALG_NAME]
