"""EasyEdit's name-keyed registries, live: where a new algorithm name is looked up.

EasyEdit has no plugin mechanism: ``BaseEditor.__init__`` reads ``ALG_DICT[hparams.alg_name]``
from ``easyeditor/util/alg_dict.py`` (both flavours). :func:`alg_dict` returns that dict, to be
mutated in place (the editor modules star-imported it, so a new dict would not reach them);
:func:`registries` returns every other name-keyed table that exists in the installed flavour.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from .importer import _optional_module, import_easyeditor


def alg_dict() -> Dict[str, Callable]:
    """The live ``ALG_DICT`` that ``BaseEditor.__init__`` reads (mutate, don't replace)."""
    import_easyeditor()
    return importlib.import_module("easyeditor.util.alg_dict").ALG_DICT


def registries() -> Dict[str, Any]:
    """Every live, name-keyed registry of the installed easyeditor that a new
    algorithm name may have to appear in (only those that exist are returned):
    ``ALG_DICT``, ``ALG_MULTIMODAL_DICT``, ``PER_ALG_DICT``, ``DS_DICT``,
    ``ALG_TRAIN_DICT`` and, on GitHub main, ``CALLABLE_RESTORE_ALGS``,
    ``PEFT_RESTORE_ALGS``, ``KEEP_EDITED_MODEL_ALGS``.  The ``BatchEditor`` and
    ``SingletonEditor`` enums are returned as classes (hard-coded, not extensible)."""
    import_easyeditor()
    found: Dict[str, Any] = {}
    sources = {
        "easyeditor.util.alg_dict": ("ALG_DICT", "ALG_MULTIMODAL_DICT", "PER_ALG_DICT", "DS_DICT"),
        "easyeditor.util.alg_train_dict": ("ALG_TRAIN_DICT",),
        "easyeditor.editors.utils": (
            "CALLABLE_RESTORE_ALGS",
            "PEFT_RESTORE_ALGS",
            "KEEP_EDITED_MODEL_ALGS",
        ),
        "easyeditor.editors.batch_editor": ("BatchEditor",),
        "easyeditor.editors.singleton_editor": ("SingletonEditor",),
    }
    for module_name, names in sources.items():
        module = _optional_module(module_name)
        if module is None:
            continue
        for name in names:
            if hasattr(module, name):
                found[name] = getattr(module, name)
    return found

