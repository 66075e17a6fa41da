"""Compatibility layer: run EasyEdit (``easyeditor``) with modern torch/transformers.

This module is the only place that imports ``easyeditor``; everything else in
``amig_plugin.easyedit`` goes through :func:`import_easyeditor`.

Public API
----------
``import_easyeditor()``          import ``easyeditor`` once, cleanly (see below), return it.
``easyeditor_available()``       ``True`` if the package can be found (nothing is imported).
``placeholder_modules()``        names served as placeholder modules during that import.
``removed_placeholders()``       submodules/names of installed packages served because they
                                 are gone (``transformers.modeling_attn_mask_utils``).
``cuda_to_cpu()``                context manager: map ``cuda``/``cuda:N`` device arguments to CPU
                                 when CUDA is not available (no-op otherwise).
``quiet_easyeditor_logging()``   context manager: no ``./logs/run.log`` (and, on GitHub main, no
                                 ``./logs/results.json``) in the working directory.
``easyedit_runtime()``           both of the above, for editor construction and ``edit()``.
``alg_dict()``                   the live ``ALG_DICT`` used by ``BaseEditor``.
``registries()``                 every live name-keyed registry of the installed flavour.
``easyedit_flavour()``           ``"pypi-0.0.1.dev0"`` or ``"github-main"``.
``MissingOptionalDependency``    the ``ImportError`` raised when a placeholder is used.

What ``import_easyeditor()`` does to the process
-----------------------------------------------
* Missing optional packages (``easyeditor/__init__`` imports every method, including
  multimodal trainers, LoRA, IKE, ...) are served as placeholder modules, *only* to
  imports made by easyeditor's own code, *only* when no real module can be found, and
  never for the packages easyeditor really needs (torch, transformers, numpy, yaml,
  tqdm, einops, higher, ...) nor for the standard library.  Attribute access on a
  placeholder returns placeholder classes; calling one (after the import) raises
  :class:`MissingOptionalDependency` ("easyeditor feature X needs package Y; pip install
  Y").  While the import runs, calls are tolerated (decorators such as
  ``@timm.models.registry.register_model`` are applied at import time).
  Choice: the placeholder modules are **removed from ``sys.modules``** (and the finder
  from ``sys.meta_path``) right after the import.  easyeditor keeps its references to
  the placeholder objects; a later ``import timm`` by the user either finds the real
  package or fails with the ordinary ``ModuleNotFoundError``.
* Submodules and names that an *installed* package no longer has (transformers 5.x removed
  ``transformers.modeling_attn_mask_utils``, which GitHub main's UnKE imports at import
  time): when easyeditor's own code fails on one, uncaught, the import is retried with a
  placeholder for it (used later, it raises :class:`MissingOptionalDependency` naming what is
  gone). Imports that easyeditor guards with ``try/except ImportError`` keep their own
  fallback. Placeholders and the attributes they took on their parent are removed again
  after the import.
* Names that transformers >= 4.56 / 5.x removed (``apply_chunking_to_forward``,
  ``find_pruneable_heads_and_indices``, ``prune_linear_layer`` in
  ``transformers.modeling_utils``; ``find_pruneable_heads_and_indices`` in
  ``transformers.pytorch_utils``, which GitHub main imports from there) are provided
  during the import and removed again afterwards (easyeditor's modules keep them bound).
  ``apply_chunking_to_forward`` and ``prune_linear_layer`` come from
  ``transformers.pytorch_utils``; ``find_pruneable_heads_and_indices`` is a local
  implementation.
* Import side effects are undone: the root logger's handlers and level
  (``logging.basicConfig(level=INFO)`` in ``editors/editor.py``), warning filters added
  by easyeditor's own code (filters that torch/sympy legitimately add while being
  imported are kept), and the global RNG states of ``random``/``numpy``/``torch``
  (GitHub main calls ``seed_everything(42)`` at import).
* Files: PyPI 0.0.1.dev0 creates ``./logs/run.log`` in ``BaseEditor.__init__`` (via
  ``make_logs()`` -> ``util.globals.get_handler('logs', 'run.log')``), not at import;
  GitHub main does the same and, in addition, ``editors.utils.summary_metrics`` writes
  ``./logs/results.json`` at the end of every ``edit()``.  Use
  :func:`quiet_easyeditor_logging` (or :func:`easyedit_runtime`) around construction
  and ``edit()``.

EasyEdit GitHub main vs PyPI ``easyeditor==0.0.1.dev0`` (facts; main read at commit
14cea82, July 2026)
-----------------------------------------------------------------------------------
* Registration.  Both: ``BaseEditor.__init__`` does ``self.apply_algo =
  ALG_DICT[hparams.alg_name]`` with ``ALG_DICT`` star-imported from
  ``easyeditor/util/alg_dict.py`` (same dict object in ``easyeditor.editors.editor``);
  mutate it, do not replace it.  ``easyeditor.util`` is shadowed by
  ``easyeditor.models.ike.util`` after ``import easyeditor`` (star imports), so use
  ``importlib.import_module("easyeditor.util.alg_dict")``.  Other name-keyed places:
  PyPI: ``ALG_MULTIMODAL_DICT`` and ``DS_DICT`` (alg_dict.py), ``ALG_TRAIN_DICT``
  (util/alg_train_dict.py, trainers), the ``SingletonEditor`` (ROME, KN) and
  ``BatchEditor`` (CALINET, SERAC, KE, MEND, MEMIT, FT) enums with hard-coded
  ``is_singleton_method``/``is_batchable_method`` (used by ``edit_dataset`` and
  ``batch_edit``), hard-coded ``alg_name == 'KN'``/``'LoRA'``/``'IKE'``/``'FT-Api'``
  branches in ``edit()``/``edit_requests()``, and the tokenizer padding rule
  (``padding_side='left'`` for GPT-2/Llama tokenizers unless alg is ROME/MEMIT).
  ``BaseEditor.from_hparams(hparams)`` is just ``cls(hparams)``: there is no hparams
  class registry; each ``XHyperParams.from_hparams(path)`` reads YAML itself.
  Main adds ``PER_ALG_DICT`` (per_editor), ``MULTIMODAL_EDIT_ALGS``,
  ``MULTIMODAL_DS_DICT``/``PER_DS_DICT``/``Safety_DS_DICT``; ``concept_editor`` and
  ``safety_editor`` also read ``ALG_DICT``; ``editors/utils.py`` has the sets
  ``CALLABLE_RESTORE_ALGS = {"KN", "GRACE", "WISE", "DEFER"}``,
  ``PEFT_RESTORE_ALGS = {"LoRA", "QLoRA", "DPO"}``, ``KEEP_EDITED_MODEL_ALGS = {"MELO"}``;
  longer ``BatchEditor`` enum and padding-side lists (ROME, MEMIT, EMMET, EAMET, R-ROME,
  AlphaEdit, CORE, SPHERE).
* ``apply_algo`` call.  Both call it with keywords after four positionals:
  ``apply_algo(model, tok, [request], hparams, copy=False, return_orig_weights=True,
  keep_original_weight=..., train_ds=kwargs['train_ds'] if alg == 'IKE' else None)``
  (PyPI passes the user's ``keep_original_weight``; main always passes
  ``keep_original_weight=False``; ``batch_edit`` passes no ``keep_original_weight``/
  ``train_ds`` in main and no ``train_ds`` in PyPI).  Return value: ``(edited_model,
  weights_copy)``; IKE/ICE return icl examples instead.
* ``edit()`` signature.  PyPI: ``edit(prompts, target_new, ground_truth=None,
  rephrase_prompts=None, locality_inputs=None, portability_inputs=None,
  keep_original_weight=False, verbose=True, **kwargs)``; forces
  ``hparams.batch_size = 1`` if the attribute exists; ``ground_truth`` defaults to
  ``'<|endoftext|>'``.  Main: ``edit(prompts, target_new, ground_truth=None,
  target_neg=None, rephrase_prompts=None, locality_inputs=None,
  portability_inputs=None, sequential_edit=False, verbose=True, **kwargs)``; *asserts*
  ``batch_size == 1`` for non-batchable algs; ``ground_truth`` defaults to ``None``
  (KN then raises); ``edit()`` delegates to ``edit_requests(requests, sequential_edit,
  verbose, test_generation=..., **kwargs)`` and accepts ``requests=`` in kwargs.
  In both, ``kwargs`` only feed ``_prepare_requests`` (``subject``; main also
  ``loc_prompts``) and flags (``test_generation``, ``eval_metric``, ``train_ds``,
  main: ``pre_edit``, ``pre_file``, ``metric_kwargs``); unknown kwargs are dropped.
* Restoring weights between edits.  PyPI: after *every* edit (whatever
  ``keep_original_weight`` says), ``if alg == 'KN': weights_copy()`` (callable),
  ``elif alg == 'LoRA' and keep_original_weight: edited_model.unload()``, else
  ``for k, v in weights_copy.items(): get_parameter(model, k)[...] =
  v.to(f"cuda:{device}")``.  Main: with ``sequential_edit=False``,
  ``editors.utils.restore_after_edit(editor, edited_model, weights_copy)``: callable
  ``weights_copy()`` only for names in ``CALLABLE_RESTORE_ALGS``; ``unload()`` for
  ``PEFT_RESTORE_ALGS``; keep the edited model for ``KEEP_EDITED_MODEL_ALGS``; else
  ``copy_to_param`` for each ``{name: tensor}`` item (``None`` skips restoring).  With
  ``sequential_edit=True`` nothing is restored (edits accumulate; LoRA/QLoRA/DPO set
  ``self.model = edited_model`` at the end).  So in PyPI the *apply function* decides:
  ROME/MEMIT/FT/LoRA return ``{}`` unless ``keep_original_weight=True`` (default
  ``False``: edits accumulate), KN always returns its unpatch callable (always undone);
  in main, whose ROME/MEMIT/FT no longer drop the copy, ``sequential_edit`` decides.
  A new algorithm should return a ``{param_name: original_tensor}`` dict (a callable
  is only called for KN in PyPI and for ``CALLABLE_RESTORE_ALGS`` names in main); to
  follow PyPI's convention return ``{}`` when ``keep_original_weight`` is false there,
  but never on main (main always passes ``keep_original_weight=False``).
* Devices.  PyPI hard-codes ``f"cuda:{hparams.device}"`` (model ``.to`` in
  ``__init__``, restores, evaluation, KN/ROME/FT internals).  Main uses
  ``util/device.py: normalize_device`` (``torch.device`` kept; ``None`` -> ``cuda`` if
  available else ``cpu``; int or digit string -> ``cuda:N``; other strings such as
  ``"cpu"`` -> ``torch.device(str)``), ``move_to_device``, ``copy_to_param``; so main
  runs on CPU with ``device: cpu`` in the hparams.
* HyperParams.  Both: ``@dataclass HyperParams`` with ``from_json`` and
  ``construct_float_from_scientific_notation``; method classes define
  ``from_hparams(path)`` (YAML, appends ``.yaml``, asserts ``alg_name``).  Main adds
  ``to_dict()``, ``load_hparams_config(path)`` (.yaml/.yml/.json) and
  ``normalize_alg_name``.  Fields the editors read: PyPI ``alg_name, model_name,
  device, model_parallel`` (+ ``batch_size`` when present, ``max_length`` in
  evaluation); main additionally ``fp16`` (via ``hasattr``), ``evaluation_type``/
  ``api_key``/``use_chat_template`` (via ``getattr``/``hasattr``), ``save_path`` (WISE),
  QLoRA fields.  ``KNHyperParams`` (both): ``lr_scale, n_toks, model_name, refine,
  batch_size, steps, adaptive_threshold, p, device, alg_name`` required,
  ``max_length=40, model_parallel=False``.
* Import side effects.  Both: ``logging.basicConfig(INFO)`` in ``editors/editor.py``;
  ``./logs/run.log`` per editor.  Main also: ``seed_everything(42)`` at import,
  ``./logs/results.json`` per ``edit()``; main wraps its own transformers-5 breakages in
  try/except (``find_pruneable_heads_and_indices``, ``generation.beam_search``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import random
import re
import sys
import tempfile
import threading
import types
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode
from ..errors import AmigError

__all__ = [
    "MissingOptionalDependency",
    "PIP_NAMES",
    "alg_dict",
    "cuda_to_cpu",
    "easyedit_flavour",
    "easyedit_runtime",
    "easyeditor_available",
    "import_easyeditor",
    "placeholder_modules",
    "quiet_easyeditor_logging",
    "registries",
    "removed_placeholders",
]

FLAVOUR_PYPI = "pypi-0.0.1.dev0"
FLAVOUR_MAIN = "github-main"

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
_IMPORT_LOCK = threading.RLock()
_STATE = threading.local()
_LAST_PLACEHOLDERS: Dict[str, Tuple[str, ...]] = {}
_LAST_REMOVED: Dict[str, Tuple[str, ...]] = {}


def _importing() -> bool:
    return getattr(_STATE, "importing", 0) > 0


def _in_package(module_name: str, package: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


# --------------------------------------------------------------------------------------
# Placeholders
# --------------------------------------------------------------------------------------


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
    here = __file__
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            filename.startswith("<frozen importlib")
            or filename == here
            or filename.endswith(os.path.join("importlib", "__init__.py"))
            or filename.endswith(os.path.join("importlib", "_bootstrap.py"))
            or filename.endswith(os.path.join("importlib", "_bootstrap_external.py"))
        ):
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
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith("<frozen importlib") or filename == __file__
                or filename.endswith(os.path.join("importlib", "__init__.py"))):
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


# --------------------------------------------------------------------------------------
# cuda -> cpu
# --------------------------------------------------------------------------------------


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        device = device.strip()
        return device == "cuda" or device.startswith("cuda:")
    return False


def _map_device(device: Any, ints: bool) -> Any:
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if _is_cuda(device):
        return "cpu"
    if ints and isinstance(device, int) and not isinstance(device, bool):
        return "cpu"
    return device


_TENSOR_TO = torch.Tensor.to
_TENSOR_CUDA = torch.Tensor.cuda
_TENSOR_PIN = torch.Tensor.pin_memory
_PARSE_TO = torch._C._nn._parse_to


class _CudaToCpuMode(TorchFunctionMode):
    """Map cuda device arguments to CPU: ``device=`` keywords of every torch function
    (strings, ``torch.device``, ints), the first argument of ``Tensor.to`` and of
    ``nn.Module.to`` (``_parse_to``), ``Tensor.cuda()``/``Module.cuda()`` (identity on
    CPU tensors) and ``Tensor.pin_memory()`` (identity)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs) if kwargs else {}
        if func is _TENSOR_CUDA or func is _TENSOR_PIN:
            return args[0]
        if "device" in kwargs:
            kwargs["device"] = _map_device(kwargs["device"], ints=True)
        if func is _TENSOR_TO and len(args) > 1:
            args = (args[0], _map_device(args[1], ints=True), *args[2:])
        elif func is _PARSE_TO and len(args) > 0:
            args = (_map_device(args[0], ints=True), *args[1:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_to_cpu(enabled: Optional[bool] = None) -> Iterator[bool]:
    """Run easyeditor's hard-coded ``cuda:{device}`` code on CPU.

    ``enabled=None`` (default): active only when ``torch.cuda.is_available()`` is False;
    a no-op otherwise.  Yields whether the mapping is active.  Not covered:
    ``torch.cuda.*`` calls (``set_device``, ``current_device``), ``torch.load``'s
    ``map_location`` and legacy ``torch.cuda.FloatTensor`` constructors.
    """
    if enabled is None:
        enabled = not torch.cuda.is_available()
    if not enabled:
        yield False
        return
    with _CudaToCpuMode():
        yield True


# --------------------------------------------------------------------------------------
# logging / files
# --------------------------------------------------------------------------------------


class _PathProxy:
    def __init__(self, redirect: Callable[[str], str]):
        self._redirect = redirect

    def __getattr__(self, name: str) -> Any:
        return getattr(os.path, name)

    def exists(self, path: Any) -> bool:
        return os.path.exists(self._redirect(path))

    def isdir(self, path: Any) -> bool:
        return os.path.isdir(self._redirect(path))


class _OSProxy:
    """``os`` for one function: relative paths resolve under a chosen directory."""

    def __init__(self, base: str):
        self._base = base
        self.path = _PathProxy(self._redirect)

    def _redirect(self, path: Any) -> Any:
        if isinstance(path, (str, os.PathLike)) and not os.path.isabs(os.fspath(path)):
            return os.path.join(self._base, os.fspath(path))
        return path

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def makedirs(self, path: Any, *args: Any, **kwargs: Any) -> None:
        os.makedirs(self._redirect(path), *args, **kwargs)

    def mkdir(self, path: Any, *args: Any, **kwargs: Any) -> None:
        os.mkdir(self._redirect(path), *args, **kwargs)


def _redirected_function(func: Callable, base: str) -> Callable:
    """A copy of ``func`` whose relative file paths (``os``/``open``) land in ``base``."""
    proxy = _OSProxy(base)

    def _open(file: Any, *args: Any, **kwargs: Any) -> Any:
        return open(proxy._redirect(file), *args, **kwargs)

    namespace = dict(func.__globals__)
    namespace["os"] = proxy
    namespace["open"] = _open
    clone = types.FunctionType(
        func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__
    )
    clone.__kwdefaults__ = func.__kwdefaults__
    clone.__wrapped__ = func  # type: ignore[attr-defined]
    return clone


def _easyeditor_modules() -> list:
    return [
        (name, module)
        for name, module in list(sys.modules.items())
        if module is not None and _in_package(name, _PACKAGE)
    ]


@contextlib.contextmanager
def quiet_easyeditor_logging(log_dir: Optional[str] = None) -> Iterator[str]:
    """No files in the working directory while editors are built and run.

    Within the block, every easyeditor ``make_logs()`` (called by each editor's
    ``__init__``; it would add a ``FileHandler('logs/run.log')`` and a stderr
    ``StreamHandler`` to the module logger on *every* construction) adds nothing, or, if
    ``log_dir`` is given, one ``FileHandler`` on ``log_dir/run.log`` (added once per
    logger).  GitHub main's ``summary_metrics`` (``./logs/results.json`` per ``edit()``)
    writes under ``log_dir`` (or a temporary directory removed on exit).  Yields the
    directory used.  Patches module globals of easyeditor for the duration of the block
    (process-wide; not meant for concurrent use from several threads).
    """
    import_easyeditor()
    own_tmp = None
    if log_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="easyeditor-logs-")
        base = own_tmp.name
    else:
        base = os.fspath(log_dir)
        os.makedirs(base, exist_ok=True)

    patched: list = []

    def _make_quiet(module: types.ModuleType) -> Callable[[], None]:
        def make_logs() -> None:
            if log_dir is None:
                return
            logger = getattr(module, "LOG", None) or logging.getLogger(module.__name__)
            target = os.path.abspath(os.path.join(base, "run.log"))
            for handler in logger.handlers:
                if getattr(handler, "baseFilename", None) == target:
                    return
            handler = logging.FileHandler(target)
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(
                logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
            )
            logger.addHandler(handler)

        return make_logs

    try:
        for name, module in _easyeditor_modules():
            attrs = vars(module)
            make_logs = attrs.get("make_logs")
            if callable(make_logs) and getattr(make_logs, "__module__", None) == name:
                patched.append((module, "make_logs", make_logs))
                setattr(module, "make_logs", _make_quiet(module))
            summary = attrs.get("summary_metrics")
            if isinstance(summary, types.FunctionType) and _in_package(
                getattr(summary, "__module__", ""), _PACKAGE
            ):
                patched.append((module, "summary_metrics", summary))
                setattr(module, "summary_metrics", _redirected_function(summary, base))
        yield base
    finally:
        for module, attr, original in reversed(patched):
            setattr(module, attr, original)
        if own_tmp is not None:
            own_tmp.cleanup()


@contextlib.contextmanager
def easyedit_runtime(log_dir: Optional[str] = None, cpu: Optional[bool] = None) -> Iterator[None]:
    """``cuda_to_cpu(cpu)`` + ``quiet_easyeditor_logging(log_dir)``: wrap editor
    construction and every ``edit()``/``batch_edit()`` call in it."""
    with quiet_easyeditor_logging(log_dir), cuda_to_cpu(cpu):
        yield


# --------------------------------------------------------------------------------------
# registries and flavour
# --------------------------------------------------------------------------------------


def alg_dict() -> Dict[str, Callable]:
    """The live ``ALG_DICT`` that ``BaseEditor.__init__`` reads (mutate, don't replace)."""
    import_easyeditor()
    return importlib.import_module("easyeditor.util.alg_dict").ALG_DICT


def _optional_module(name: str) -> Optional[types.ModuleType]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


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


def easyedit_flavour() -> str:
    """``"github-main"`` if ``editors/utils.py`` defines ``CALLABLE_RESTORE_ALGS`` or
    ``BaseEditor.edit`` takes ``sequential_edit``; otherwise ``"pypi-0.0.1.dev0"``
    (``keep_original_weight`` interface)."""
    import_easyeditor()
    utils = _optional_module("easyeditor.editors.utils")
    if utils is not None and hasattr(utils, "CALLABLE_RESTORE_ALGS"):
        return FLAVOUR_MAIN
    editor = importlib.import_module("easyeditor.editors.editor")
    params = inspect.signature(editor.BaseEditor.edit).parameters
    if "sequential_edit" in params:
        return FLAVOUR_MAIN
    return FLAVOUR_PYPI
