"""What a localization is computed with, and its cache key.

:class:`LocalizationSettings` holds the fields that define a localization's result (τ,
sharing p, path points and rule, objective, AMIG mode, layers, top-k, adaptive range,
unconverged policy) and the fields that only change its speed (IG batch size, progress
bars); :meth:`LocalizationSettings.key` is the key of a request in every cache and store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .. import defaults
from ..checks import did_you_mean
from ..defaults import (DEFAULT_AMIG_MODE, DEFAULT_IG_BATCH_SIZE, DEFAULT_OBJECTIVE, DEFAULT_QUADRATURE, DEFAULT_SHARE_P,
                        DEFAULT_STEPS, DEFAULT_TOP_K, default_tau)
from ..store import content_key

#: The settings every localization key holds (with ``tau`` resolved for the language).
RESULT_FIELDS = ("tau", "share_p", "steps", "objective", "quadrature", "amig_mode", "layers", "top_k")
#: Settings that change how the work is batched or shown, never the result (left out of keys).
EXECUTION_FIELDS = ("ig_batch_size", "progress")
#: Settings that enter a key only where they differ from their default (so that the keys of
#: records computed before they existed stay valid). ``on_unconverged`` ``warn`` and
#: ``refuse`` give the same record (refusal is checked on the way out); ``refine`` does not.
OPTIONAL_RESULT_FIELDS = ("adaptive", "on_unconverged", "refine_max_steps")


@dataclass(frozen=True)
class LocalizationSettings:
    """How a fact is localized (keyword arguments of :func:`amig_plugin.neurons.localize`).

    ``tau=None``: the method's default for the language (:func:`amig_plugin.defaults.default_tau`).
    """

    tau: float | None = None
    share_p: float = DEFAULT_SHARE_P
    steps: int = DEFAULT_STEPS
    objective: str = DEFAULT_OBJECTIVE
    quadrature: str = DEFAULT_QUADRATURE
    amig_mode: str = DEFAULT_AMIG_MODE
    layers: tuple[int, ...] | None = None
    top_k: int = DEFAULT_TOP_K
    adaptive: tuple[int, int] | None = None
    on_unconverged: str = "warn"
    refine_max_steps: int = 96
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("layers", "adaptive"):  # lists from JSON/YAML: hashable and equal to tuples
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def of(cls, settings: "LocalizationSettings | Mapping[str, Any] | None" = None,
           **overrides: Any) -> "LocalizationSettings":
        """Settings from an instance, a mapping of field values or ``None`` (the defaults),
        with ``overrides`` on top; an unknown name is a ``TypeError`` naming the valid ones."""
        base = dataclasses.asdict(settings) if isinstance(settings, LocalizationSettings) else dict(settings or {})
        values = {**base, **overrides}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"unknown localization setting(s) {unknown}{did_you_mean(unknown[0], names)}; "
                            f"valid: {names}")
        return cls(**values)

    def replace(self, **changes: Any) -> "LocalizationSettings":
        return dataclasses.replace(self, **changes)

    def resolved(self, lang: str | None, method: str = "amig") -> "LocalizationSettings":
        """The same settings with ``tau`` filled in for ``lang`` and ``method``."""
        return self if self.tau is not None else self.replace(tau=default_tau(lang, method))

    def localize_kwargs(self) -> dict:
        """Every field, as keyword arguments of :func:`amig_plugin.neurons.localize`."""
        out = dataclasses.asdict(self)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out

    def result_settings(self) -> dict:
        """The fields that define the result (:data:`RESULT_FIELDS`, plus the optional ones
        that differ from their defaults): what keys hold."""
        out = {name: getattr(self, name) for name in RESULT_FIELDS}
        out["layers"] = None if self.layers is None else list(self.layers)
        if self.adaptive is not None:
            out["adaptive"] = list(self.adaptive)
        if self.quadrature == "gauss-adaptive":  # its refinement constants define the result too
            out["gauss_adaptive"] = [defaults.ADAPTIVE_TOLERANCE, defaults.ADAPTIVE_MAX_STEPS, defaults.ADAPTIVE_MIN_GAIN]
        if self.quadrature == "gauss-adaptive" or self.on_unconverged == "refine":
            # both refine the layers whose relative residual is too large: how it is measured counts
            out["residual_floors"] = [defaults.RESIDUAL_FLOOR, defaults.FLOAT_NOISE]
        if self.on_unconverged == "refine":
            out["on_unconverged"] = "refine"
            if self.refine_max_steps != 96:
                out["refine_max_steps"] = self.refine_max_steps
        return out

    def recorded(self) -> dict:
        """What a result file records: :meth:`result_settings` and the IG batch size."""
        return {**self.result_settings(), "ig_batch_size": self.ig_batch_size}

    def key(self, model_name: str, prompts: Sequence[str], target: str, lang: str | None, method: str) -> str:
        """Cache key of localizing ``prompts`` -> ``target`` in ``lang`` with ``method`` on
        ``model_name`` (``<id>#<weights fingerprint>``): a hash of the attribution version,
        the request and :meth:`result_settings` with ``tau`` resolved."""
        settings = self.resolved(lang, method).result_settings()
        return content_key([defaults.ATTRIBUTION_VERSION, model_name, list(prompts), target, lang, method,
                            sorted(settings.items())])


DEFAULT_SETTINGS = LocalizationSettings()
