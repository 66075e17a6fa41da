"""Checks every method's hyper-parameters share: the error class, a mapping of keys, no unknown
key (with the closest valid one suggested), and turning whatever EasyEdit passes into the
method's hparams class. Imports neither ``easyeditor`` nor ``torch``."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence, Type, TypeVar

from ...checks import did_you_mean
from ...errors import AmigError

__all__ = ["HParamsError", "require_mapping", "reject_unknown_keys", "as_hparams"]

T = TypeVar("T")


class HParamsError(AmigError, ValueError):
    """An AMIG hyper-parameter file or value is invalid; the message says how to fix it."""


def require_mapping(config: Any, source: str) -> dict:
    """``dict(config)``, or :class:`HParamsError` when ``config`` is not a mapping."""
    if not isinstance(config, Mapping):
        raise HParamsError(f"{source}: expected a mapping of keys to values, got {type(config).__name__}")
    return dict(config)


def reject_unknown_keys(config: Mapping, valid: Sequence[str], source: str) -> None:
    """:class:`HParamsError` naming every key of ``config`` not in ``valid``, each with the
    closest valid key when one is close, then the valid keys."""
    unknown = [k for k in config if k not in valid]
    if not unknown:
        return
    parts = []
    for key in unknown:
        parts.append(f"{key!r}" + did_you_mean(key, valid))
    raise HParamsError(f"{source}: unknown key(s) {', '.join(parts)}; valid keys are: {', '.join(valid)}")


def as_hparams(cls: Type[T], hparams: Any) -> T:
    """``hparams`` as an instance of the dataclass ``cls``: kept when it is one, else built
    with ``cls.from_dict`` from a mapping or from the fields of another hparams object."""
    if isinstance(hparams, cls):
        return hparams
    if isinstance(hparams, Mapping):
        return cls.from_dict(hparams)  # type: ignore[attr-defined]
    if hasattr(hparams, "__dataclass_fields__") or hasattr(hparams, "__dict__"):
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls.from_dict({k: v for k, v in vars(hparams).items() if k in fields})  # type: ignore[attr-defined]
    raise TypeError(f"hparams must be {cls.__name__} ({cls.__name__}.from_hparams(path)), got {type(hparams).__name__}")
