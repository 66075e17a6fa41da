"""The study registry: :class:`Study`, :func:`register_study`, ``STUDIES``, and the
:class:`ConfigError` that both the registry and :mod:`.config` raise.

It imports no other module of the pipeline, so the config (which validates study names),
the studies (which register themselves) and the engine all depend on it one way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import AmigError


class ConfigError(AmigError, ValueError):
    """A run configuration is invalid; the message names the key and the fix."""


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


PER_KINDS = ("lang_method", "lang", "method", "fact")


class DependencyError(AmigError, RuntimeError):
    """A unit's dependency (another study's record of the same fact) failed or is missing."""


@dataclass
class StudyContext:
    """What a study's per-fact function may use."""

    model: Any
    tokenizer: Any
    config: Any  # RunConfig
    facts: list  # every fact of the run, in run order
    options: dict  # this study's validated options
    lookup: Callable[[str], dict | None]  # unit key -> merged record (or None)
    run_dir: Any = None
    fact_index: dict = field(default_factory=dict)  # fact id -> position in the run
    cache: Any = None  # LocalizationCache or None
    rank: int = 0

    def record(self, study: str, fact_id: str, lang: str | None = None, method: str | None = None) -> dict:
        """The ``result`` of ``study`` for this fact (raises :class:`DependencyError`)."""
        key = unit_key(study, fact_id, lang, method)
        rec = self.lookup(key)
        if rec is None:
            raise DependencyError(f"{key}: no record (study {study!r} must run first)")
        if rec.get("status") != "ok":
            raise DependencyError(f"{key} failed: {rec.get('error')}")
        return rec["result"]


def unit_key(study: str, fact_id: str, lang: str | None = None, method: str | None = None) -> str:
    return f"{study}|{fact_id}|{lang or '-'}|{method or '-'}"


@dataclass
class Study:
    """A study of a run (see the module docstring)."""

    name: str
    compute: Callable[[StudyContext, Any, dict], dict]
    summarize: Callable[[list[dict], Any], list[dict]] | None = None
    per: str = "lang_method"
    requires: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    min_languages: int = 1
    description: str = ""
    check: Callable[[dict, str], None] | None = None
    stage: str = "fact"

    def __post_init__(self):
        if self.per not in PER_KINDS:
            raise ValueError(f"study {self.name!r}: per must be one of {PER_KINDS}, got {self.per!r}")
        if self.stage not in ("fact", "run"):
            raise ValueError(f"study {self.name!r}: stage must be 'fact' (per fact, sharded) or 'run' "
                             f"(once, over all facts' records, after them), got {self.stage!r}")

    def validate_options(self, options: Mapping, where: str) -> dict:
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where} must be a mapping of options (or {{}}), got {options!r}")
        for key in options:
            if key not in self.defaults:
                valid = ", ".join(self.defaults) or "(none: use {})"
                raise ConfigError(f"unknown key {key!r} in {where}{_suggest(key, self.defaults)}; valid keys: {valid}")
        merged = {**self.defaults, **dict(options)}
        if self.check is not None:
            self.check(merged, where)
        return merged

    def check_config(self, languages: Sequence[str], methods: Sequence[str]) -> None:
        if len(languages) < self.min_languages:
            raise ConfigError(f"study {self.name!r} needs at least {self.min_languages} languages, "
                              f"the config has {list(languages)}")

    def units(self, languages: Sequence[str], methods: Sequence[str]) -> list[dict]:
        if self.per == "lang_method":
            return [{"lang": l, "method": m} for m in methods for l in languages]
        if self.per == "lang":
            return [{"lang": l, "method": None} for l in languages]
        if self.per == "method":
            return [{"lang": None, "method": m} for m in methods]
        return [{"lang": None, "method": None}]


STUDIES: dict[str, Study] = {}


def register_study(study: Study, replace: bool = False) -> Study:
    """Make ``study`` available to run configs under ``studies: {<name>: {...}}``."""
    if study.name in STUDIES and not replace:
        raise ValueError(f"a study named {study.name!r} is already registered")
    for dep in study.requires:
        if dep not in STUDIES:
            raise ValueError(f"study {study.name!r} requires unknown study {dep!r}; register it first")
    STUDIES[study.name] = study
    return study
