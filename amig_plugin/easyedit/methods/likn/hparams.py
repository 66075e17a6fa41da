"""``LIKNHyperParams``: AMIG's hyper-parameters plus the keys of the ``LIKN`` method
(``languages``, ``signed``, ``empty_likn``, ``cache``), validated the same strict way.
Imports neither ``easyeditor`` nor ``torch``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Optional

from ..amig.hparams import AMIGHyperParams
from ..validation import HParamsError, reject_unknown_keys, require_mapping

__all__ = ["ALG_NAME", "LIKN_KEYS", "LIKNHyperParams"]

ALG_NAME = "LIKN"
LIKN_KEYS = ("languages", "signed", "empty_likn", "cache")


@dataclass
class LIKNHyperParams(AMIGHyperParams):
    """AMIG's hyper-parameters (localization, τ per language, the update rule) plus:

    ==========  ========  ==================================================================
    key         default   meaning
    ==========  ========  ==================================================================
    languages   null      languages every request must carry (null: those it carries, >= 2)
    signed      true      orient each neuron's update by the sign of its activation
    empty_likn  skip      ``skip`` (edit nothing, record it) or ``error`` for an empty LIKN
                          (also where a language has no ground truth to localize)
    cache       false     localize through the shared LocalizationCache
    ==========  ========  ==================================================================

    ``alg_name`` must be ``LIKN``; ``max_neurons`` caps the intersection (best mean
    attribution first); ``min_neurons`` is not used (the intersection is what it is);
    ``sequential: true`` is not supported.
    """

    languages: Optional[List[str]] = None
    signed: bool = True
    empty_likn: str = "skip"
    cache: bool = False

    def __post_init__(self) -> None:
        _validate_likn(self, source="LIKNHyperParams")

    @classmethod
    def from_dict(cls, config: Any, source: str = "hparams") -> "LIKNHyperParams":
        config = require_mapping(config, source)
        if config.get("alg_name") != ALG_NAME:
            raise HParamsError(f"{source}: alg_name: must be {ALG_NAME!r} for LIKNHyperParams (got "
                               f"{config.get('alg_name')!r})")
        reject_unknown_keys(config, [f.name for f in dataclasses.fields(cls)], source)
        extra = {k: config.pop(k) for k in LIKN_KEYS if k in config}
        try:
            base = AMIGHyperParams.from_dict({**config, "alg_name": "AMIG"}, source=source)
        except HParamsError as exc:
            raise HParamsError(f"{exc} (LIKN adds: {', '.join(LIKN_KEYS)})") from None
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in extra:
                value = extra[f.name]
            elif f.name in LIKN_KEYS:
                value = f.default
            else:
                value = getattr(base, f.name)
            object.__setattr__(obj, f.name, value)
        obj.alg_name = ALG_NAME
        _validate_likn(obj, source=source)
        return obj


def _validate_likn(h: LIKNHyperParams, source: str) -> None:
    if h.alg_name != ALG_NAME:
        raise HParamsError(f"{source}: alg_name: must be {ALG_NAME!r} (got {h.alg_name!r})")
    base = {f.name: getattr(h, f.name) for f in dataclasses.fields(AMIGHyperParams)}
    AMIGHyperParams(**{**base, "alg_name": "AMIG"})  # AMIG's validation of the shared keys
    if h.sequential:
        raise HParamsError(f"{source}: sequential: true is not supported by LIKN (got True); edit one request at a time")
    if h.edit_rule == "optimize":
        raise HParamsError(f"{source}: edit_rule: 'optimize' is not supported by LIKN yet (got 'optimize'); "
                           "use edit_mode update or erase")
    if h.languages is not None:
        from ....data import FactFormatError, validate_language_code

        if not isinstance(h.languages, list) or len(h.languages) < 2:
            raise HParamsError(f"{source}: languages: must be null or a list of at least 2 language codes "
                               f"(got {h.languages!r})")
        for code in h.languages:
            try:
                validate_language_code(code)
            except FactFormatError as exc:
                raise HParamsError(f"{source}: languages: {exc}") from None
    for key in ("signed", "cache"):
        if not isinstance(getattr(h, key), bool):
            raise HParamsError(f"{source}: {key}: must be true or false (got {getattr(h, key)!r})")
    if h.empty_likn not in ("skip", "error"):
        raise HParamsError(f"{source}: empty_likn: must be 'skip' or 'error' (got {h.empty_likn!r})")

