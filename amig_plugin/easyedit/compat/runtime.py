"""Running EasyEdit's editors here: which EasyEdit this is, CPU instead of CUDA, no log files.

* :func:`easyedit_flavour`: ``"pypi-0.0.1.dev0"`` or ``"github-main"`` (their interfaces
  differ: ``keep_original_weight`` vs ``sequential_edit``, hard-coded ``cuda:N`` vs
  ``normalize_device``);
* :func:`cuda_to_cpu`: easyeditor's hard-coded ``cuda:{device}`` arguments go to the CPU when
  CUDA is not available; :func:`cpu_fallback` decides, per hparams, whether that is needed;
* :func:`quiet_easyeditor_logging`: no ``./logs/run.log`` or ``./logs/results.json`` in the
  working directory; :func:`easyedit_runtime`: these and
  :func:`~.generation.cache_keyword_generation`, around construction and ``edit()``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import tempfile
import types
from typing import Any, Callable, Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode

from .generation import cache_keyword_generation
from .importer import _easyeditor_modules, _optional_module, import_easyeditor
from .placeholders import _PACKAGE, _in_package

FLAVOUR_PYPI = "pypi-0.0.1.dev0"
FLAVOUR_MAIN = "github-main"


# --------------------------------------------------------------------------------------
# flavour
# --------------------------------------------------------------------------------------


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
    hard-coded ``cuda:N`` code must run inside :func:`cuda_to_cpu`)."""
    device = getattr(hparams, "device", None)
    if torch.cuda.is_available() or not _asks_for_cuda(device):
        return None
    print(f"amig_plugin: {getattr(hparams, 'alg_name', '?')} hparams ask for device {device!r}, but CUDA is not "
          "available here: running on the CPU", file=sys.stderr)
    if easyedit_flavour() == FLAVOUR_MAIN:
        hparams.device = "cpu"
        return "device"
    return "cuda_to_cpu"


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
    """``cuda_to_cpu(cpu)`` + ``quiet_easyeditor_logging(log_dir)`` +
    ``cache_keyword_generation()``: wrap editor construction and every
    ``edit()``/``batch_edit()`` call in it."""
    with quiet_easyeditor_logging(log_dir), cuda_to_cpu(cpu), cache_keyword_generation():
        yield

