"""Run configuration: one YAML file names the model, methods, languages, data and studies.

Every section has a fixed set of keys; an unknown or misspelled key is an error that names
the key, where it is, and the valid keys (with a "did you mean" when one is close)::

    model: gemma-3-270m          # embedded default, a local folder or a hub name
    dtype: float32               # weights: float32 | bfloat16 | float16 (attribution stays float32)
    device: cpu                  # cpu | cuda | cuda:N (under torchrun: cuda -> cuda:LOCAL_RANK)
    device_map: null             # "auto": spread a large model over the visible GPUs/CPU
    threads: 2                   # torch.set_num_threads per process (null: torch's choice)
    seed: 0                      # sampling of facts, random control sets, unrelated prompts
    methods: [amig]              # amig, kn
    languages: [en, zh]
    data: {kind: bmlama, path: /path/to/bmlama17, n: 300}
    localization: {steps: 20, tau: {en: 0.3, zh: 0.2}, ...}
    studies:
      localization: {}
      effect: {n_unrelated: 5}

See ``docs/runs.md`` for every key.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..defaults import (DEFAULT_AMIG_MODE, DEFAULT_IG_BATCH_SIZE, DEFAULT_OBJECTIVE, DEFAULT_QUADRATURE, DEFAULT_SHARE_P,
                        DEFAULT_STEPS, DEFAULT_TOP_K, QUADRATURE_NAMES)
from .registry import ConfigError, _suggest  # noqa: F401 (ConfigError is re-exported)


TOP_KEYS = ("name", "model", "dtype", "device", "device_map", "threads", "seed", "methods", "languages",
            "data", "localization", "studies", "progress", "dist_timeout_minutes")
DATA_KEYS = ("kind", "path", "n", "template_lang")
DATA_KINDS = ("bmlama", "jsonl", "shipped", "mlama")
LOCALIZATION_KEYS = ("steps", "objective", "quadrature", "amig_mode", "ig_batch_size", "share_p", "tau", "top_k",
                     "layers", "cache", "heatmap_facts", "on_unconverged")
METHODS = ("amig", "kn")
DTYPES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")

DEFAULT_LOCALIZATION = dict(steps=DEFAULT_STEPS, objective=DEFAULT_OBJECTIVE, quadrature=DEFAULT_QUADRATURE,
                            amig_mode=DEFAULT_AMIG_MODE, ig_batch_size=DEFAULT_IG_BATCH_SIZE, share_p=DEFAULT_SHARE_P,
                            tau=None, top_k=DEFAULT_TOP_K, layers=None, cache=True, heatmap_facts=1,
                            on_unconverged="warn")

# settings that change the numbers of existing records: a resumed run must not change them
RESULT_KEYS = ("model", "dtype", "seed", "data.kind", "data.path", "data.template_lang",
               *(f"localization.{k}" for k in LOCALIZATION_KEYS
                 if k not in ("cache", "ig_batch_size", "heatmap_facts", "on_unconverged")))


def check_keys(section: Mapping, valid, where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``section`` not in ``valid``."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(section).__name__}: {section!r}")
    for key in section:
        if key not in valid:
            raise ConfigError(f"unknown key {key!r} in {where}{_suggest(key, valid)}; valid keys: {', '.join(valid)}")


def _as_list(value, where: str) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(f"{where} must be a list (or a comma-separated string), got {value!r}")


@dataclass
class RunConfig:
    """A validated run configuration (see the module docstring)."""

    model: str
    languages: list[str]
    data: dict
    methods: list[str] = field(default_factory=lambda: ["amig"])
    name: str = ""
    dtype: str = "float32"
    device: str = "cpu"
    device_map: Any = None
    threads: int | None = None
    seed: int = 0
    localization: dict = field(default_factory=lambda: dict(DEFAULT_LOCALIZATION))
    studies: dict = field(default_factory=lambda: {"localization": {}})
    progress: bool = True
    dist_timeout_minutes: int = 24 * 60
    source: str = ""

    def to_dict(self) -> dict:
        d = {k: copy.deepcopy(getattr(self, k)) for k in TOP_KEYS}
        return d

    def tau(self, lang: str) -> float | None:
        """τ for ``lang`` (None: the engine's default, 0.3 en / 0.2 zh / 0.2 else)."""
        tau = self.localization.get("tau")
        if isinstance(tau, Mapping):
            return tau.get(lang)
        return tau

    def localize_settings(self, lang: str) -> dict:
        """Keyword arguments of :func:`amig_plugin.neurons.localize` for ``lang``."""
        loc = self.localization
        return dict(tau=self.tau(lang), share_p=loc["share_p"], steps=loc["steps"], objective=loc["objective"],
                    quadrature=loc["quadrature"], amig_mode=loc["amig_mode"], layers=loc["layers"],
                    ig_batch_size=loc["ig_batch_size"], top_k=loc["top_k"],
                    **({} if loc.get("on_unconverged", "warn") == "warn" else {"on_unconverged": loc["on_unconverged"]}))

    def get(self, dotted: str):
        value: Any = self.to_dict()
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value


def _check_int(value, where: str, minimum: int = 0, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_fraction(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ConfigError(f"{where} must be a number in (0, 1], got {value!r}")
    return float(value)


def parse_config(raw: Mapping, source: str = "<config>", study_registry: Mapping | None = None) -> RunConfig:
    """Validate a config mapping (as read from YAML) into a :class:`RunConfig`."""
    from ..data import FactFormatError, validate_language_code

    if study_registry is None:
        from .registry import STUDIES as study_registry
    check_keys(raw, TOP_KEYS, f"{source} (top level)")
    for required in ("model", "languages", "data"):
        if required not in raw or raw[required] in (None, "", []):
            raise ConfigError(f"{source}: missing key {required!r} (required: model, languages, data)")
    model = raw["model"]
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"'model' must be a model name or folder, got {model!r}")

    languages = _as_list(raw["languages"], "'languages'")
    for lang in languages:
        try:
            validate_language_code(lang)
        except FactFormatError as exc:
            raise ConfigError(f"'languages': {exc}") from None
    if len(set(languages)) != len(languages):
        raise ConfigError(f"'languages' lists a language twice: {languages}")

    methods = _as_list(raw.get("methods", ["amig"]), "'methods'")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r} in 'methods'{_suggest(m, METHODS)}; valid methods: {', '.join(METHODS)}")
    if not methods:
        raise ConfigError("'methods' is empty; give at least one of: " + ", ".join(METHODS))

    dtype = str(raw.get("dtype", "float32") or "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r} in 'dtype'{_suggest(dtype, DTYPES)}; valid: {', '.join(DTYPES)}")
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    device = str(raw.get("device", "cpu") or "cpu")
    device_map = raw.get("device_map")
    if device_map is not None and not isinstance(device_map, (str, dict)):
        raise ConfigError(f"'device_map' must be null, \"auto\" or a mapping, got {device_map!r}")
    threads = _check_int(raw.get("threads"), "'threads'", 1, allow_none=True)
    seed = _check_int(raw.get("seed", 0), "'seed'", 0)
    timeout = _check_int(raw.get("dist_timeout_minutes", 24 * 60), "'dist_timeout_minutes'", 1)

    data = dict(raw["data"]) if isinstance(raw["data"], Mapping) else raw["data"]
    check_keys(data, DATA_KEYS, "'data'")
    kind = data.get("kind")
    if kind not in DATA_KINDS:
        raise ConfigError(f"'data.kind' must be one of {', '.join(DATA_KINDS)}, got {kind!r}{_suggest(kind, DATA_KINDS)}")
    if kind != "shipped":
        if not data.get("path"):
            what = {"bmlama": "(the folder holding <lang>.tsv files)", "mlama": "(the folder holding "
                    "<lang>/templates.jsonl)", "jsonl": "(a facts JSONL file)"}[kind]
            raise ConfigError(f"'data.path' is required for data.kind={kind!r} {what}")
        data["path"] = str(data["path"])
    elif data.get("path"):
        raise ConfigError("'data.path' must not be set for data.kind='shipped' (the packaged facts)")
    data["n"] = _check_int(data.get("n"), "'data.n'", 1, allow_none=True)
    data.setdefault("template_lang", "en")

    loc = dict(DEFAULT_LOCALIZATION)
    raw_loc = raw.get("localization") or {}
    check_keys(raw_loc, LOCALIZATION_KEYS, "'localization'")
    loc.update(raw_loc)
    _check_int(loc["steps"], "'localization.steps'", 1)
    _check_int(loc["ig_batch_size"], "'localization.ig_batch_size'", 1)
    _check_int(loc["top_k"], "'localization.top_k'", 1)
    _check_int(loc["heatmap_facts"], "'localization.heatmap_facts'", 0)
    if loc["objective"] not in ("prob", "logprob"):
        raise ConfigError(f"'localization.objective' must be 'prob' or 'logprob', got {loc['objective']!r}")
    if loc["quadrature"] not in QUADRATURE_NAMES:
        raise ConfigError(f"'localization.quadrature' must be {'|'.join(QUADRATURE_NAMES)}, got {loc['quadrature']!r}")
    if loc["on_unconverged"] not in ("warn", "refuse", "refine"):
        raise ConfigError(f"'localization.on_unconverged' must be warn|refuse|refine, got {loc['on_unconverged']!r}")
    if loc["amig_mode"] not in ("mean", "per_position"):
        raise ConfigError(f"'localization.amig_mode' must be 'mean' or 'per_position', got {loc['amig_mode']!r}")
    if not isinstance(loc["share_p"], (int, float)) or not 0.0 <= loc["share_p"] < 1.0:
        raise ConfigError(f"'localization.share_p' must lie in [0, 1), got {loc['share_p']!r}")
    tau = loc["tau"]
    if isinstance(tau, Mapping):
        for lang, value in tau.items():
            if lang not in languages:
                raise ConfigError(f"unknown key {lang!r} in 'localization.tau'{_suggest(lang, languages)}; "
                                  f"valid keys (the run's languages): {', '.join(languages)}")
            _check_fraction(value, f"'localization.tau.{lang}'")
    elif tau is not None:
        _check_fraction(tau, "'localization.tau'")
    if loc["layers"] is not None:
        if not isinstance(loc["layers"], list) or not all(isinstance(l, int) and not isinstance(l, bool) for l in loc["layers"]):
            raise ConfigError(f"'localization.layers' must be null (all layers) or a list of layer indices, got {loc['layers']!r}")
    if not isinstance(loc["cache"], (bool, str)):
        raise ConfigError(f"'localization.cache' must be true, false or a cache folder, got {loc['cache']!r}")

    raw_studies = raw.get("studies")
    if raw_studies is None:
        raw_studies = {"localization": {}}
    if isinstance(raw_studies, (list, tuple)):
        raw_studies = {name: {} for name in raw_studies}
    check_keys(raw_studies, list(study_registry), "'studies'")
    studies: dict[str, dict] = {}
    for name, options in raw_studies.items():
        options = {} if options in (None, True) else options
        study = study_registry[name]
        studies[name] = study.validate_options(options, f"'studies.{name}'")
    # dependencies first, in registry order
    for name in list(studies):
        for dep in study_registry[name].requires:
            if dep not in studies:
                studies[dep] = study_registry[dep].validate_options({}, f"'studies.{dep}'")
    studies = {name: studies[name] for name in study_registry if name in studies}
    for name in studies:
        study_registry[name].check_config(languages, methods)

    progress = raw.get("progress", True)
    if not isinstance(progress, bool):
        raise ConfigError(f"'progress' must be true or false, got {progress!r}")
    return RunConfig(model=model, languages=languages, data=data, methods=methods, name=str(raw.get("name") or ""),
                     dtype=dtype, device=device, device_map=device_map, threads=threads, seed=seed,
                     localization=loc, studies=studies, progress=progress, dist_timeout_minutes=timeout,
                     source=source)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML run configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; give a YAML config (see configs/*.yaml) or a run folder holding config.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file (see configs/*.yaml)") from None
    if raw is None:
        raise ConfigError(f"{path} is empty; see configs/*.yaml for examples")
    return parse_config(raw, source=str(path))


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """Keys whose change would make a resumed run mix incompatible records."""
    problems = []
    for key in RESULT_KEYS:
        if old.get(key) != new.get(key):
            problems.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    for name, options in new.studies.items():
        if name in old.studies and old.studies[name] != options:
            for k in sorted(set(options) | set(old.studies[name])):
                if options.get(k) != old.studies[name].get(k):
                    problems.append(f"studies.{name}.{k}: {old.studies[name].get(k)!r} -> {options.get(k)!r}")
    return problems
