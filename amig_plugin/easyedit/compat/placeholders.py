"""Placeholder modules for what ``easyeditor`` imports but this environment lacks.

While :func:`~amig_plugin.easyedit.compat.import_easyeditor` runs, :class:`_PlaceholderFinder`
is the last entry of ``sys.meta_path``: it serves a :class:`_PlaceholderModule` for a missing
optional package imported by easyeditor's own code (never for :data:`ESSENTIAL` packages nor
the standard library). Attribute access yields placeholder classes; calling one after the
import raises :class:`MissingOptionalDependency` naming the pip package (during the import,
calls are tolerated: decorators such as ``@register_model`` run at import time).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
import types
from typing import Any, Dict, Optional

from ...errors import AmigError

#: Top-level import name -> pip distribution name, for error messages.  Every optional
#: package imported at ``import easyeditor`` time by 0.0.1.dev0 or GitHub main.
#: Top-level import name -> pip distribution name, for error messages.  Every optional
#: package imported at ``import easyeditor`` time by 0.0.1.dev0 or GitHub main.
PIP_NAMES: Dict[str, str] = {
    "PIL": "Pillow",
    "av": "av",
    "bitsandbytes": "bitsandbytes",
    "cv2": "opencv-python",
    "datasets": "datasets",
    "fairscale": "fairscale",
    "hydra": "hydra-core",
    "iopath": "iopath",
    "matplotlib": "matplotlib",
    "nltk": "nltk",
    "omegaconf": "omegaconf",
    "openai": "openai",
    "pandas": "pandas",
    "peft": "peft",
    "qwen_vl_utils": "qwen-vl-utils",
    "requests": "requests",
    "rouge": "rouge",
    "scipy": "scipy",
    "seaborn": "seaborn",
    "sentence_transformers": "sentence-transformers",
    "sklearn": "scikit-learn",
    "timm": "timm",
    "torchvision": "torchvision",
    "zhipuai": "zhipuai",
}

#: Packages that easyeditor really uses on the paths we need: never replaced.
ESSENTIAL = frozenset(
    {
        "easyeditor",
        "einops",
        "higher",
        "huggingface_hub",
        "numpy",
        "safetensors",
        "tokenizers",
        "torch",
        "tqdm",
        "transformers",
        "yaml",
    }
)

_PACKAGE = "easyeditor"
_STATE = threading.local()
_COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))


def _importing() -> bool:
    return getattr(_STATE, "importing", 0) > 0


def _in_package(module_name: str, package: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")



def _is_machinery(filename: str) -> bool:
    """Whether a frame's file is importlib's or this compatibility layer's own code."""
    return (
        filename.startswith("<frozen importlib")
        or os.path.dirname(os.path.abspath(filename)) == _COMPAT_DIR
        or filename.endswith(os.path.join("importlib", "__init__.py"))
        or filename.endswith(os.path.join("importlib", "_bootstrap.py"))
        or filename.endswith(os.path.join("importlib", "_bootstrap_external.py"))
    )


class MissingOptionalDependency(AmigError, ImportError):
    """Raised when a placeholder for a missing optional package is used."""


#: ``_ph_pip`` of placeholders for what an installed package no longer has.
_REMOVED = "<removed>"


def _missing_error(qualname: str, pip_name: str, feature: str) -> MissingOptionalDependency:
    top = qualname.partition(".")[0]
    if pip_name == _REMOVED:
        return MissingOptionalDependency(
            f"easyeditor feature {feature} needs {qualname.replace('()', '')}, which the installed {top} "
            f"no longer has; use another EasyEdit method or an older {top}",
            name=top,
        )
    return MissingOptionalDependency(
        f"easyeditor feature {feature} needs package {pip_name}; pip install {pip_name}"
        f" (placeholder {qualname!r} was called)",
        name=top,
    )


class _PlaceholderMeta(type):
    """Metaclass of placeholder classes: attribute access yields more placeholders,
    calling raises :class:`MissingOptionalDependency` (tolerated during the import)."""

    _ph_qualname: str
    _ph_pip: str
    _ph_feature: str

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _make_placeholder(f"{cls._ph_qualname}.{name}", cls._ph_pip, cls._ph_feature)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if _importing():
            # import-time use: a decorator (``@register_model``) or a factory call
            if len(args) == 1 and not kwargs and callable(args[0]):
                return args[0]
            return _make_placeholder(f"{cls._ph_qualname}()", cls._ph_pip, cls._ph_feature)
        raise _missing_error(cls._ph_qualname, cls._ph_pip, cls._ph_feature)

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __repr__(cls) -> str:
        return f"<placeholder {cls._ph_qualname} (missing package {cls._ph_pip})>"


def _make_placeholder(qualname: str, pip_name: str, feature: str) -> type:
    name = qualname.rsplit(".", 1)[-1].replace("()", "") or "placeholder"
    return _PlaceholderMeta(
        name,
        (),
        {
            "_ph_qualname": qualname,
            "_ph_pip": pip_name,
            "_ph_feature": feature,
            "__module__": qualname.rsplit(".", 1)[0] if "." in qualname else qualname,
            "__doc__": f"Placeholder for {qualname}: pip install {pip_name}",
        },
    )


class _PlaceholderModule(types.ModuleType):
    """A stand-in module; every public attribute is a placeholder class."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        info = self.__dict__.get("_ph_info", ("?", "?"))
        obj = _make_placeholder(f"{self.__name__}.{name}", info[0], info[1])
        setattr(self, name, obj)
        return obj

    def __repr__(self) -> str:
        return f"<placeholder module {self.__name__!r}>"


def _requesting_module() -> str:
    """``__name__`` of the module whose code triggered the current import."""
    frame = sys._getframe(2)
    while frame is not None:
        if not _is_machinery(frame.f_code.co_filename):
            return str(frame.f_globals.get("__name__", ""))
        frame = frame.f_back
    return ""


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last entry of ``sys.meta_path`` during the guarded import: reached only for
    modules no real finder can find.  Serves a placeholder when the requester is
    the guarded package (top-level names) or the parent is itself a placeholder."""

    def __init__(self, package: str, pip_names: Dict[str, str]):
        self.package = package
        self.pip_names = pip_names
        self.served: Dict[str, str] = {}  # top-level name -> feature (first requester)
        self.removed: Dict[str, str] = {}  # removed submodule of a real package -> feature
        self.modules: list = []

    def _removed_root(self, fullname: str) -> Optional[str]:
        for name in self.removed:
            if fullname == name or fullname.startswith(name + "."):
                return name
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        top = fullname.partition(".")[0]
        if top in self.served or self._removed_root(fullname) is not None:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        if "." in fullname:  # a missing submodule of a real package: served only once an
            return None      # import of the package's own code failed on it (_guarded_import)
        if top in ESSENTIAL or top == self.package or top in sys.stdlib_module_names:
            return None
        requester = _requesting_module()
        if not _in_package(requester, self.package):
            return None
        self.served[top] = requester
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        top = spec.name.partition(".")[0]
        module = _PlaceholderModule(spec.name)
        root = self._removed_root(spec.name)
        if root is not None:
            module.__dict__["_ph_info"] = (_REMOVED, f"`{self.removed[root]}`")
        else:
            module.__dict__["_ph_info"] = (self.pip_names.get(top, top), f"`{self.served[top]}`")
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []  # a package, so that ``import x.y.z`` works
        self.modules.append(module.__name__)

