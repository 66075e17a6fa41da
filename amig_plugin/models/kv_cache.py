"""The key/value cache keyword across transformers releases.

transformers 5.2x renamed the forward keyword ``past_key_values`` to ``cache`` (the old name
warns with a FutureWarning and goes away in 5.40) and the output field likewise; older
releases know only ``past_key_values``. Both helpers read the model, not the version number.
"""

from __future__ import annotations

import inspect

from torch import nn

__all__ = ["cache_keyword", "returned_cache"]


def cache_keyword(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes the key/value cache by: ``"cache"`` (newer
    transformers) or ``"past_key_values"``."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - forward without a signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(out: object) -> object:
    """The key/value cache of a model output (field ``cache`` in newer transformers,
    ``past_key_values`` before), without touching the deprecated name where both exist;
    ``None`` when the output has neither."""
    fields = getattr(type(out), "__dataclass_fields__", {})
    return getattr(out, "cache" if "cache" in fields else "past_key_values", None)
