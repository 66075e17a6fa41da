"""Dtypes and devices, and what every loaded model and tokenizer gets (eval mode, the device,
a truthful BOS flag, a pad token)."""

from __future__ import annotations

from typing import Any

from .errors import DeviceError

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
