"""EasyEdit integration of amig_plugin.

This subpackage is the only place in amig_plugin that imports ``easyeditor``
(EasyEdit, PyPI ``easyeditor``), and it does so only through
:func:`amig_plugin.easyedit.compat.import_easyeditor`, which makes
``easyeditor==0.0.1.dev0`` importable with modern torch/transformers (placeholders for
missing optional packages, shims for names transformers removed, import side effects
undone).  Nothing below this subpackage (models, attribution, neurons, ...) imports it.

``import amig_plugin.easyedit`` imports neither easyeditor nor torch: the names below
are loaded lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MissingOptionalDependency": "compat",
    "alg_dict": "compat",
    "cuda_to_cpu": "compat",
    "easyedit_flavour": "compat",
    "easyedit_runtime": "compat",
    "easyeditor_available": "compat",
    "import_easyeditor": "compat",
    "placeholder_modules": "compat",
    "quiet_easyeditor_logging": "compat",
    "registries": "compat",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
