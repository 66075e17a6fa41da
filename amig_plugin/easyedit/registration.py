"""Registering ``AMIG`` inside EasyEdit.

EasyEdit has no plugin mechanism: ``BaseEditor.__init__`` does
``self.apply_algo = ALG_DICT[hparams.alg_name]`` with the dict defined in
``easyeditor/util/alg_dict.py`` (PyPI 0.0.1.dev0 and GitHub main). :func:`register`
*mutates* that live dict (replacing it would not reach the editor modules, which
star-imported it). The other name-keyed places were checked (see
:func:`amig_plugin.easyedit.compat.registries`) and need nothing:

* ``ALG_MULTIMODAL_DICT`` / ``PER_ALG_DICT`` / ``ALG_TRAIN_DICT``: multimodal,
  personality and trainer methods; AMIG is none of these.
* GitHub main's ``CALLABLE_RESTORE_ALGS`` must *not* contain ``AMIG``: our
  ``weights_copy`` is a ``{name: tensor}`` dict, restored by main's default branch
  (``copy_to_param``); ``PEFT_RESTORE_ALGS``/``KEEP_EDITED_MODEL_ALGS`` likewise.
  :func:`register` checks that ``AMIG`` is in none of them.
* ``BatchEditor``/``SingletonEditor`` are hard-coded enums: ``batch_edit`` refuses AMIG
  (a single-edit method, like KN); ``edit_dataset`` uses ``hparams.batch_size`` (1).

What :func:`register` adds (idempotent; :func:`unregister` takes all of it away again):

* ``ALG_DICT["AMIG"]``: :func:`amig_plugin.easyedit.amig_main.apply_amig_to_model`;
* ``ALG_DICT["LIKN"]``: :func:`amig_plugin.easyedit.likn_method.apply_likn_to_model`;
* the ``fact_check`` metric: EasyEdit's per-request ``compute_edit_quality`` wrapped so that
  requests get a DKN fact-check verdict while a checker is active
  (:mod:`amig_plugin.easyedit.factcheck_metric`; without a checker nothing changes);
* a hook on ``BaseEditor.__init__`` (every method, not only ours):

  - a clear error for model names ``BaseEditor`` cannot load: both EasyEdit flavours pick the
    model class from substrings of ``model_name`` and raise a bare ``NotImplementedError`` for
    others (Gemma, BERT); after ``register()`` that becomes :class:`UnsupportedEditorModel`,
    one sentence naming :func:`amig_plugin.easyedit.editor.load_editor`;
  - CPU fallback: on a machine without CUDA, hparams asking for a GPU (``device: 0``,
    ``cuda``, ``cuda:N``) run on the CPU, and one line on stderr says so. GitHub main
    resolves ``hparams.device`` with its ``normalize_device``, so the hook sets it to
    ``"cpu"``; PyPI 0.0.1.dev0 hard-codes ``f"cuda:{hparams.device}"``, so there the editor's
    construction and its ``edit``/``edit_requests``/``batch_edit``/``edit_dataset`` run inside
    :func:`amig_plugin.easyedit.compat.cuda_to_cpu`.

If another function is already registered as ``AMIG`` or ``LIKN`` it raises unless
``force=True``.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from typing import Any, Dict, Optional

from ..errors import AmigError

__all__ = ["ALG_NAME", "ALGORITHMS", "UnsupportedEditorModel", "cpu_fallback", "register", "unregister", "is_registered"]

ALG_NAME = "AMIG"
#: Every algorithm name that :func:`register` adds to ``ALG_DICT``.
ALGORITHMS = ("AMIG", "LIKN")
_LOCK = threading.RLock()
_GUARD_MARK = "_amig_model_name_guard"


class UnsupportedEditorModel(AmigError, NotImplementedError):
    """EasyEdit's ``BaseEditor`` cannot load this model by name."""


def _apply():
    from .amig_main import apply_amig_to_model

    return apply_amig_to_model


def _base_editor():
    return importlib.import_module("easyeditor.editors.editor").BaseEditor


_EDIT_METHODS = ("edit", "edit_requests", "batch_edit", "edit_dataset")


def _asks_for_cuda(device: Any) -> bool:
    if isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True
    text = str(device).strip()
    return text.isdigit() or text == "cuda" or text.startswith("cuda:")


def cpu_fallback(hparams: Any) -> Optional[str]:
    """On a machine without CUDA, make ``hparams`` asking for a GPU run on the CPU and say so
    in one line on stderr. Returns ``None`` (nothing to do), ``"device"`` (GitHub main:
    ``hparams.device`` is now ``"cpu"``) or ``"cuda_to_cpu"`` (PyPI 0.0.1.dev0: its
    hard-coded ``cuda:N`` code must run inside :func:`~amig_plugin.easyedit.compat.cuda_to_cpu`)."""
    import torch

    from .compat import easyedit_flavour

    device = getattr(hparams, "device", None)
    if torch.cuda.is_available() or not _asks_for_cuda(device):
        return None
    print(f"amig_plugin: {getattr(hparams, 'alg_name', '?')} hparams ask for device {device!r}, but CUDA is not "
          "available here: running on the CPU", file=sys.stderr)
    if easyedit_flavour() == "github-main":
        hparams.device = "cpu"
        return "device"
    return "cuda_to_cpu"


def _on_cpu(method):
    from .compat import cuda_to_cpu

    @functools.wraps(method)
    def run(*args, **kwargs):
        with cuda_to_cpu():
            return method(*args, **kwargs)

    return run


def _guard(init):
    @functools.wraps(init)
    def __init__(self, hparams, *args, **kwargs):
        from .compat import cuda_to_cpu

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


def is_registered() -> bool:
    """Whether ``ALG_DICT['AMIG']`` is our apply function (imports easyeditor)."""
    from .compat import alg_dict

    return alg_dict().get(ALG_NAME) is _apply()


def register(force: bool = False) -> Dict[str, Any]:
    """Add ``AMIG`` and ``LIKN`` to EasyEdit's live ``ALG_DICT``, the ``fact_check`` metric to
    its per-request metrics, and the clear error for model names it cannot load; idempotent.

    Returns ``{"alg_name": "AMIG", "flavour": ..., "registered_now": bool (AMIG),
    "algorithms": {"AMIG": bool, "LIKN": bool} (added now), "metrics": ["fact_check"]}``.
    """
    from . import factcheck_metric
    from .compat import alg_dict, easyedit_flavour, registries
    from .likn_method import register_likn

    apply_fn = _apply()
    with _LOCK:
        table = alg_dict()
        current = table.get(ALG_NAME)
        if current is not None and current is not apply_fn and not force:
            raise RuntimeError(
                f"EasyEdit's ALG_DICT already maps {ALG_NAME!r} to {getattr(current, '__module__', '?')}."
                f"{getattr(current, '__qualname__', current)!r}; pass force=True to replace it"
            )
        registered_now = current is not apply_fn
        table[ALG_NAME] = apply_fn
        found = registries()
        for name in ("CALLABLE_RESTORE_ALGS", "PEFT_RESTORE_ALGS", "KEEP_EDITED_MODEL_ALGS"):
            algs = found.get(name)
            if algs is not None and ALG_NAME in algs:
                raise RuntimeError(
                    f"EasyEdit's {name} contains {ALG_NAME!r}: its weights_copy would not be restored "
                    "as a {name: tensor} dict; remove it from that set"
                )
        likn = register_likn(force=force)
        factcheck_metric.register()
        _guard_model_names()
    return {"alg_name": ALG_NAME, "flavour": easyedit_flavour(), "registered_now": registered_now,
            "algorithms": {ALG_NAME: registered_now, likn["alg_name"]: likn["registered_now"]},
            "metrics": ["fact_check"]}


def unregister() -> bool:
    """Take back everything :func:`register` added (only what is ours). Returns whether
    ``AMIG`` was registered."""
    from . import factcheck_metric
    from .compat import alg_dict
    from .likn_method import unregister_likn

    with _LOCK:
        table = alg_dict()
        was = table.get(ALG_NAME) is _apply()
        if was:
            del table[ALG_NAME]
        unregister_likn()
        factcheck_metric.unregister()
        cls = _base_editor()
        init = cls.__dict__["__init__"]
        if hasattr(init, _GUARD_MARK):
            cls.__init__ = getattr(init, _GUARD_MARK)
    return was
