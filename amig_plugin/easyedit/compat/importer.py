"""Making ``easyeditor`` importable with modern torch/transformers, and leaving the process
as it was.

:func:`import_easyeditor` imports it once with placeholders for missing optional packages
(:mod:`.placeholders`), placeholders for submodules and names an installed package no longer
has (retried import), the names transformers removed provided for the duration of the import
(:func:`_transformers_shims`), and its import side effects undone (root logger, warning
filters, RNG states: :func:`_undo_side_effects`). The user guide's "How the compatibility
layer works" (``docs/easyedit.md``) explains each step.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import random
import re
import sys
import threading
import types
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from .placeholders import (
    _PACKAGE,
    _REMOVED,
    _STATE,
    PIP_NAMES,
    _in_package,
    _is_machinery,
    _make_placeholder,
    _PlaceholderFinder,
    _PlaceholderMeta,
    _PlaceholderModule,
)

_IMPORT_LOCK = threading.RLock()
_LAST_PLACEHOLDERS: Dict[str, Tuple[str, ...]] = {}
_LAST_REMOVED: Dict[str, Tuple[str, ...]] = {}


# --------------------------------------------------------------------------------------
# transformers shims
# --------------------------------------------------------------------------------------


def _find_pruneable_heads_and_indices(heads, n_heads: int, head_size: int, already_pruned_heads):
    """Heads still to prune (minus those already pruned) and the flat indices to keep.

    Stand-in for the helper removed from ``transformers``: returns
    ``(set_of_heads, LongTensor_of_kept_indices)``.
    """
    already = set(already_pruned_heads)
    to_prune = set(int(h) for h in heads) - already
    keep = torch.ones(n_heads, head_size, dtype=torch.bool)
    for head in to_prune:
        shifted = head - sum(1 for h in already if h < head)
        keep[shifted] = False
    index = torch.arange(n_heads * head_size)[keep.view(-1)].long()
    return to_prune, index


def _transformers_shims() -> Dict[str, Dict[str, Any]]:
    shims: Dict[str, Dict[str, Any]] = {}
    try:
        pytorch_utils = importlib.import_module("transformers.pytorch_utils")
    except ImportError:  # pragma: no cover - transformers without torch support
        return shims
    modeling = {
        "find_pruneable_heads_and_indices": getattr(
            pytorch_utils, "find_pruneable_heads_and_indices", _find_pruneable_heads_and_indices
        ),
    }
    for name in ("apply_chunking_to_forward", "prune_linear_layer", "prune_conv1d_layer", "prune_layer"):
        if hasattr(pytorch_utils, name):
            modeling[name] = getattr(pytorch_utils, name)
    shims["transformers.modeling_utils"] = modeling
    shims["transformers.pytorch_utils"] = {
        "find_pruneable_heads_and_indices": _find_pruneable_heads_and_indices,
    }
    return shims


@contextlib.contextmanager
def _provide_names(shims: Dict[str, Dict[str, Any]]) -> Iterator[Dict[str, list]]:
    """Temporarily add missing attributes to modules; remove what was added."""
    added: Dict[str, list] = {}
    try:
        for module_name, names in shims.items():
            module = importlib.import_module(module_name)
            for name, value in names.items():
                if not hasattr(module, name):
                    setattr(module, name, value)
                    added.setdefault(module_name, []).append(name)
        yield added
    finally:
        for module_name, names in added.items():
            module = sys.modules.get(module_name)
            for name in names:
                if module is not None and name in module.__dict__:
                    delattr(module, name)



# --------------------------------------------------------------------------------------
# Guarded import: placeholders, shims, side effects undone
# --------------------------------------------------------------------------------------


def _refresh_warning_filters() -> None:
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()
        return
    mutated = getattr(warnings, "_filters_mutated_lock_held", None)  # Python >= 3.13
    lock = getattr(warnings, "_lock", None)
    if mutated is not None:
        if lock is not None:
            with lock:
                mutated()
        else:
            mutated()


@contextlib.contextmanager
def _undo_side_effects(package: str) -> Iterator[None]:
    """Restore the root logger, warning filters added by ``package``'s own code and
    the global RNG states after importing ``package``."""
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    root_level = root.level

    added_filters: list = []
    orig_filterwarnings = warnings.filterwarnings
    orig_simplefilter = warnings.simplefilter

    def _tracking(orig: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = list(warnings.filters)
            result = orig(*args, **kwargs)
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if _in_package(str(caller), package):
                added_filters.extend(f for f in warnings.filters if f not in before)
            return result

        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        return wrapper

    py_state = random.getstate()
    try:
        np_module: Optional[types.ModuleType] = importlib.import_module("numpy")
    except ImportError:  # pragma: no cover - numpy is a torch/easyeditor dependency
        np_module = None
    np_state = np_module.random.get_state() if np_module is not None else None
    torch_state = torch.random.get_rng_state()
    cuda_states = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = torch.cuda.get_rng_state_all()

    warnings.filterwarnings = _tracking(orig_filterwarnings)
    warnings.simplefilter = _tracking(orig_simplefilter)
    try:
        yield
    finally:
        warnings.filterwarnings = orig_filterwarnings
        warnings.simplefilter = orig_simplefilter
        if added_filters:
            for entry in added_filters:
                if entry in warnings.filters:
                    warnings.filters.remove(entry)
            _refresh_warning_filters()

        for handler in list(root.handlers):
            if handler not in root_handlers:
                root.removeHandler(handler)
        for handler in root_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(root_level)

        random.setstate(py_state)
        if np_state is not None:
            np_module.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


_CANNOT_IMPORT = re.compile(r"cannot import name '([^']+)' from '([^']+)'")
_MAX_REMOVED = 32


def _failing_importer(exc: BaseException) -> str:
    """``__name__`` of the innermost non-importlib frame of ``exc``'s traceback: the
    module whose import statement failed."""
    name = ""
    tb = exc.__traceback__
    while tb is not None:
        if not _is_machinery(tb.tb_frame.f_code.co_filename):
            name = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return name


def _removed_from_real_package(exc: ImportError, package: str) -> Optional[Tuple[str, str, str]]:
    """What an uncaught import error of ``package``'s own code says is gone from an
    installed package: ``("module", "pkg.sub", requester)`` for a missing submodule of
    an importable package, ``("name", "pkg.mod:Name", requester)`` for a name that an
    importable module no longer has; ``None`` for anything else."""
    requester = _failing_importer(exc)
    if not _in_package(requester, package):
        return None
    match = _CANNOT_IMPORT.match(str(exc))
    if match is not None:
        name, module_name = match.groups()
        if module_name in sys.modules and not _in_package(module_name, package):
            return ("name", f"{module_name}:{name}", requester)
        return None
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and missing and "." in missing:
        parent = missing.rpartition(".")[0]
        top = missing.partition(".")[0]
        if top != package and parent in sys.modules and not isinstance(sys.modules[parent], _PlaceholderModule):
            return ("module", missing, requester)
    return None


def _guarded_import(
    package: str = _PACKAGE, pip_names: Optional[Dict[str, str]] = None
) -> types.ModuleType:
    """Import ``package`` with placeholders for missing optional dependencies,
    transformers shims, and its import side effects undone.  Generic in ``package``
    so that the mechanism can be tested without easyeditor.

    When the package's own code fails, uncaught, on a submodule or a name that an
    installed package no longer has (``transformers.modeling_attn_mask_utils`` in
    transformers 5), the import is retried with a placeholder for it; imports that the
    package guards with ``try/except ImportError`` keep their own fallback.  The
    placeholders are taken away again afterwards, like the shims."""
    with _IMPORT_LOCK:
        if package in sys.modules:
            return sys.modules[package]
        finder = _PlaceholderFinder(package, PIP_NAMES if pip_names is None else pip_names)
        names = _transformers_shims()
        sys.meta_path.append(finder)
        _STATE.importing = getattr(_STATE, "importing", 0) + 1
        try:
            with _undo_side_effects(package):
                while True:
                    try:
                        with _provide_names(names):
                            module = importlib.import_module(package)
                        break
                    except BaseException as exc:
                        for name in [m for m in sys.modules if _in_package(m, package)]:
                            del sys.modules[name]
                        if not isinstance(exc, ImportError):
                            raise
                        gone = _removed_from_real_package(exc, package)
                        known = len(finder.removed) + sum(map(len, names.values()))
                        if gone is not None and known < _MAX_REMOVED:
                            kind, what, requester = gone
                            if kind == "module" and what not in finder.removed:
                                finder.removed[what] = requester
                                continue
                            module_name, _, attr = what.partition(":")
                            if kind == "name" and attr not in names.get(module_name, {}):
                                names.setdefault(module_name, {})[attr] = _make_placeholder(
                                    f"{module_name}.{attr}", _REMOVED, f"`{requester}`")
                                continue
                        raise ImportError(
                            f"importing {package} failed even with placeholders for missing "
                            f"optional packages ({sorted(finder.served) or 'none'}): {exc}"
                        ) from exc
        finally:
            _STATE.importing -= 1
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            for name in finder.modules:
                if isinstance(sys.modules.get(name), _PlaceholderModule):
                    del sys.modules[name]
                parent, _, child = name.rpartition(".")
                holder = sys.modules.get(parent)
                if holder is not None and isinstance(holder.__dict__.get(child), _PlaceholderModule):
                    delattr(holder, child)
        _LAST_PLACEHOLDERS[package] = tuple(sorted(finder.modules))
        _LAST_REMOVED[package] = tuple(sorted(
            [m for m in finder.modules if finder._removed_root(m) is not None]
            + [f"{mod}.{attr}" for mod, attrs in names.items() for attr, value in attrs.items()
               if isinstance(value, _PlaceholderMeta)]))
        return module


def easyeditor_available() -> bool:
    """Whether ``easyeditor`` can be imported (checked without importing it)."""
    if _PACKAGE in sys.modules:
        return True
    try:
        return importlib.util.find_spec(_PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def import_easyeditor() -> types.ModuleType:
    """Import and return ``easyeditor`` (once; later calls return the same module).

    If the user already imported it, that module is returned as is.
    """
    return _guarded_import(_PACKAGE, PIP_NAMES)


def placeholder_modules(package: str = _PACKAGE) -> Tuple[str, ...]:
    """Module names that were served as placeholders while ``package`` was imported
    by this process (empty if it was imported elsewhere or nothing was missing)."""
    return _LAST_PLACEHOLDERS.get(package, ())


def removed_placeholders(package: str = _PACKAGE) -> Tuple[str, ...]:
    """Submodules and names of installed packages that ``package``'s own code imports but
    that those packages no longer have (e.g. ``transformers.modeling_attn_mask_utils``),
    served as placeholders while this process imported it."""
    return _LAST_REMOVED.get(package, ())



def _easyeditor_modules() -> list:
    """``(name, module)`` of every imported easyeditor module."""
    return [
        (name, module)
        for name, module in list(sys.modules.items())
        if module is not None and _in_package(name, _PACKAGE)
    ]


def _optional_module(name: str) -> Optional[types.ModuleType]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
