"""The hook :func:`amig_plugin.easyedit.registration.register` puts on EasyEdit's
``BaseEditor.__init__`` (every method, not only ours), and takes off again.

* CPU fallback: on a machine without CUDA, hparams asking for a GPU (``device: 0``, ``cuda``,
  ``cuda:N``) run on the CPU, and one line on stderr says so
  (:func:`amig_plugin.easyedit.compat.cpu_fallback`). GitHub main then reads
  ``hparams.device = "cpu"``; on PyPI 0.0.1.dev0 the editor's construction and its
  ``edit``/``edit_requests``/``batch_edit``/``edit_dataset`` run inside ``cuda_to_cpu``.
* Generation: those edit methods (of every editor that does not handle devices itself) run
  inside :func:`amig_plugin.easyedit.compat.cache_keyword_generation`, so EasyEdit's
  ``generate_fast`` works on transformers that take the key/value cache as ``cache``.
* Model names: both flavours pick the model class from substrings of ``model_name`` and raise
  a bare ``NotImplementedError`` for others (Gemma, BERT); with the hook that becomes
  :class:`UnsupportedEditorModel`, one sentence naming ``load_editor``.
"""

from __future__ import annotations

import functools
import importlib

from ..errors import AmigError
from .compat import cache_keyword_generation, cpu_fallback, cuda_to_cpu

__all__ = ["UnsupportedEditorModel", "install", "uninstall"]

_GUARD_MARK = "_amig_model_name_guard"
_EDIT_METHODS = ("edit", "edit_requests", "batch_edit", "edit_dataset")


class UnsupportedEditorModel(AmigError, NotImplementedError):
    """EasyEdit's ``BaseEditor`` cannot load this model by name."""


def _base_editor():
    return importlib.import_module("easyeditor.editors.editor").BaseEditor


def _in_runtime(method, on_cpu: bool):
    """``method`` run with EasyEdit's ``generate_fast`` on the cache keyword the model takes,
    and inside ``cuda_to_cpu`` when ``on_cpu``."""
    @functools.wraps(method)
    def run(*args, **kwargs):
        with cuda_to_cpu(on_cpu), cache_keyword_generation():
            return method(*args, **kwargs)

    return run


def _guard(init):
    @functools.wraps(init)
    def __init__(self, hparams, *args, **kwargs):
        how = cpu_fallback(hparams) if hparams is not None else None
        try:
            with cuda_to_cpu(how == "cuda_to_cpu"):
                result = init(self, hparams, *args, **kwargs)
            if not getattr(type(self), "handles_devices", False):
                for name in _EDIT_METHODS:
                    if hasattr(self, name):
                        setattr(self, name, _in_runtime(getattr(self, name), how == "cuda_to_cpu"))
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


def install() -> bool:
    """Wrap ``BaseEditor.__init__`` once; returns whether it was wrapped now."""
    cls = _base_editor()
    init = cls.__dict__["__init__"]
    if hasattr(init, _GUARD_MARK):
        return False
    cls.__init__ = _guard(init)
    return True


def uninstall() -> None:
    """Give ``BaseEditor`` its own ``__init__`` back (nothing when it is not wrapped)."""
    cls = _base_editor()
    init = cls.__dict__["__init__"]
    if hasattr(init, _GUARD_MARK):
        cls.__init__ = getattr(init, _GUARD_MARK)
