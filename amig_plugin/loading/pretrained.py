"""Loading a local ``save_pretrained`` folder or a Hugging Face hub name (and the embedded
default through its cache): :func:`load_model`, with one-line errors for folders and
checkpoints that cannot load."""

from __future__ import annotations

import json
import os
from typing import Any

from .embedded import ensure_embedded_model
from .errors import MissingWeightsError, ModelLoadError, ModelNotFoundError, _first_line, _not_found
from .names import DEFAULT_MODEL, is_embedded_name, is_masked_lm_config
from .runtime import _dtype_kwarg, _finish, check_device


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
