"""``AMIGHyperParams``: the hyper-parameters of the ``AMIG`` editing method for EasyEdit.

A plain dataclass, read from YAML the way EasyEdit reads its own (``from_hparams(path)``,
``.yaml`` appended when the path has no suffix), with strict validation: an unknown or
misspelled key, a missing required key or a bad value raises :class:`HParamsError`
(a ``ValueError``) that names the key, suggests the closest valid key and lists the valid
ones. Importing this module imports neither ``easyeditor`` nor ``torch``.

Fields read by EasyEdit's editors (both PyPI 0.0.1.dev0 and GitHub main): ``alg_name``
(must be ``AMIG``), ``model_name``, ``device``, ``model_parallel``, ``max_length``,
``fp16`` and ``batch_size`` (EasyEdit forces/asserts 1 for single edits; it is the number
of requests per edit call, not the IG batch, which is ``ig_batch_size``).

Ours (see :func:`amig_plugin.easyedit.methods.amig.main.apply_amig_to_model`):

==================  ===========  ==============================================================
key                 default      meaning
==================  ===========  ==============================================================
method              amig         ``amig`` (Chen et al. 2024 baseline) or ``kn`` (Dai et al.'s 0)
steps               (engine)     IG path points m: the engine's default (``DEFAULT_STEPS`` in
                                 ``amig_plugin/defaults.py``); >= 2 (``steps: 1`` is not IG)
ig_batch_size       (engine)     path points per forward/backward batch (``DEFAULT_IG_BATCH_SIZE``)
objective           prob         F = P(target) (paper) or ``logprob``
quadrature          (engine)     the engine's default rule (``DEFAULT_QUADRATURE``); midpoint | left |
                                 right | linspace (EasyEdit/EleutherAI's rule) | gauss | steep |
                                 gauss-adaptive
amig_mode           mean         IG from the mean masked baseline, or ``per_position``
layers              null         layers to attribute (null = all)
lang                auto         language of the requests: ``auto`` (CJK characters -> zh,
                                 else en) or a code; picks tau (below)
tau                 null         threshold tau x max attribution; null = the study default
                                 :func:`amig_plugin.defaults.default_tau` (KN: Dai et al.'s 0.2;
                                 AMIG: 0.3 en, 0.2 zh and other languages), or ``tau_by_lang``
tau_by_lang         null         optional {language: tau} overriding that default per language
share_p             0.7          with several prompts, keep neurons shared by > p of them
localize_on         prompt       ``prompt`` or ``prompt+rephrase`` (both prompts, shared filter)
max_neurons         20           edit at most this many (best attribution first); null = all
min_neurons         1            if fewer pass tau, take the best ``min_neurons`` by attribution
edit_mode           update       ``update`` (Dai et al.: v -= lambda_old e(old), += lambda_new
                                 e(new)) or ``erase`` (v = 0)
lambda_old          1.0          weight of the ground truth's word embedding
lambda_new          8.0          weight of the new target's word embedding
edit_rule           null         ``dai`` (= edit_mode update), ``erase`` (= edit_mode erase) or
                                 ``optimize`` (this package's extension: Adam on the value
                                 vectors only, NLL(target_new) + kl_weight x KL on kl_prompts,
                                 ||delta_i|| <= norm_bound x mean ||v||; see
                                 :mod:`amig_plugin.intervene.neuron_edit`); null = follow edit_mode
optimize_steps      40           Adam steps of ``optimize``
optimize_lr         0.1          its step, in units of the layer's RMS value-vector entry
kl_weight           1.0          weight of the KL (locality) term
norm_bound          4.0          per-neuron bound on ||delta_i|| (x the layer's mean ||v||)
kl_prompts          (5 prompts)  unrelated prompts whose next-token distributions the KL term
                                 keeps ("{subject}" is filled in); never the evaluation's
                                 locality prompts
sequential          false        accumulate edits across requests (see ``main``)
==================  ===========  ==============================================================
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from ....defaults import (DEFAULT_AMIG_MODE, DEFAULT_IG_BATCH_SIZE, DEFAULT_OBJECTIVE, DEFAULT_QUADRATURE,
                         DEFAULT_SHARE_P, DEFAULT_STEPS, QUADRATURE_NAMES, default_tau)
from ..validation import HParamsError, reject_unknown_keys, require_mapping

__all__ = ["AMIGHyperParams", "HParamsError", "VALID_KEYS", "REQUIRED_KEYS"]

ALG_NAME = "AMIG"

#: Unrelated prompts of the ``optimize`` rule's KL term (ROME's "{subject} is a" keeps what
#: the model says about the subject itself).
DEFAULT_KL_PROMPTS = ("{subject} is a", "The capital of France is", "Water is made of",
                      "The first president of the United States was", "The sun rises in the")


@dataclass
class AMIGHyperParams:
    # EasyEdit's fields
    alg_name: str
    model_name: str
    device: Union[int, str] = 0
    model_parallel: bool = False
    max_length: int = 40
    fp16: bool = False
    batch_size: int = 1
    # localization
    method: str = "amig"
    steps: int = DEFAULT_STEPS
    ig_batch_size: int = DEFAULT_IG_BATCH_SIZE
    objective: str = DEFAULT_OBJECTIVE
    quadrature: str = DEFAULT_QUADRATURE
    amig_mode: str = DEFAULT_AMIG_MODE
    layers: Optional[List[int]] = None
    lang: str = "auto"
    tau: Optional[float] = None
    tau_by_lang: Optional[Dict[str, float]] = None
    share_p: float = DEFAULT_SHARE_P
    localize_on: str = "prompt"
    max_neurons: Optional[int] = 20
    min_neurons: int = 1
    # the edit
    edit_mode: str = "update"
    lambda_old: float = 1.0
    lambda_new: float = 8.0
    edit_rule: Optional[str] = None
    optimize_steps: int = 40
    optimize_lr: float = 0.1
    kl_weight: float = 1.0
    norm_bound: float = 4.0
    kl_prompts: List[str] = field(default_factory=lambda: list(DEFAULT_KL_PROMPTS))
    sequential: bool = False

    def __post_init__(self) -> None:
        _validate(self, source="AMIGHyperParams")

    # -- EasyEdit-compatible constructors -------------------------------------------------

    @classmethod
    def from_hparams(cls, hparams_name_or_path: Union[str, os.PathLike]) -> "AMIGHyperParams":
        """Read and validate a YAML file (``.yaml`` is appended when the name has no
        ``.yaml``/``.yml``/``.json`` suffix, as EasyEdit does)."""
        path = os.fspath(hparams_name_or_path)
        if not path.endswith((".yaml", ".yml", ".json")):
            path = path + ".yaml"
        if not os.path.isfile(path):
            raise HParamsError(f"{path}: no such hparams file (give the path of an AMIG YAML, e.g. hparams/AMIG/gpt2.yaml)")
        with open(path, encoding="utf-8") as stream:
            if path.endswith(".json"):
                try:
                    config = json.load(stream)
                except json.JSONDecodeError as exc:
                    raise HParamsError(f"{path}: invalid JSON: {exc}") from None
            else:
                import yaml

                try:
                    config = yaml.safe_load(stream)
                except yaml.YAMLError as exc:
                    raise HParamsError(f"{path}: invalid YAML: {exc}") from None
        return cls.from_dict(config, source=path)

    @classmethod
    def from_json(cls, fpath: Union[str, os.PathLike]) -> "AMIGHyperParams":
        """EasyEdit's ``HyperParams.from_json``, with the same validation."""
        path = os.fspath(fpath)
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        except FileNotFoundError:
            raise HParamsError(f"{path}: no such hparams file") from None
        except json.JSONDecodeError as exc:
            raise HParamsError(f"{path}: invalid JSON: {exc}") from None
        return cls.from_dict(config, source=path)

    @classmethod
    def from_dict(cls, config: Any, source: str = "hparams") -> "AMIGHyperParams":
        """Validate a mapping (unknown/missing keys, types, values) and build the object."""
        if config is None:
            raise HParamsError(f"{source}: the file is empty; it needs at least {list(REQUIRED_KEYS)}")
        config = cls.construct_float_from_scientific_notation(require_mapping(config, source))
        reject_unknown_keys(config, VALID_KEYS, source)
        missing = [k for k in REQUIRED_KEYS if k not in config]
        if missing:
            raise HParamsError(
                f"{source}: missing required key(s) {missing}; an AMIG hparams file needs "
                f"{list(REQUIRED_KEYS)} (alg_name: AMIG); optional keys: "
                f"{', '.join(k for k in VALID_KEYS if k not in REQUIRED_KEYS)}"
            )
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in config:
                value = config[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            object.__setattr__(obj, f.name, value)
        _validate(obj, source=source)
        return obj

    @staticmethod
    def construct_float_from_scientific_notation(config: dict) -> dict:
        """EasyEdit's rule: strings such as ``"1e-3"`` become floats (YAML reads them as str)."""
        for key, value in config.items():
            if isinstance(value, str):
                try:
                    config[key] = float(value)
                except ValueError:
                    pass
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # -- helpers -------------------------------------------------------------------------

    def rule(self) -> str:
        """The edit rule in force: ``edit_rule``, or ``dai``/``erase`` from ``edit_mode``."""
        if self.edit_rule is not None:
            return self.edit_rule
        return "dai" if self.edit_mode == "update" else "erase"

    def tau_for(self, lang: Optional[str]) -> float:
        """tau for a request in ``lang``: ``tau`` if set, else ``tau_by_lang[lang]`` if given
        there, else the study default :func:`~amig_plugin.defaults.default_tau` for ``lang``
        and ``method`` (the value the CLI and the localization cache use when no tau is given)."""
        if self.tau is not None:
            return float(self.tau)
        code = (lang or "").split("-")[0].lower()
        if self.tau_by_lang and code in self.tau_by_lang:
            return float(self.tau_by_lang[code])
        return default_tau(code, self.method)


REQUIRED_KEYS = ("alg_name", "model_name")
VALID_KEYS = tuple(f.name for f in dataclasses.fields(AMIGHyperParams))

_CHOICES = {
    "method": ("amig", "kn"),
    "objective": ("prob", "logprob"),
    "quadrature": QUADRATURE_NAMES,
    "amig_mode": ("mean", "per_position"),
    "localize_on": ("prompt", "prompt+rephrase"),
    "edit_mode": ("update", "erase"),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate(h: AMIGHyperParams, source: str) -> None:
    def bad(key: str, why: str) -> HParamsError:
        return HParamsError(f"{source}: {key}: {why} (got {getattr(h, key)!r})")

    if h.alg_name != ALG_NAME:
        raise bad("alg_name", f"must be {ALG_NAME!r} for AMIGHyperParams; other methods have their own hparams classes")
    if isinstance(h.model_name, os.PathLike):
        h.model_name = os.fspath(h.model_name)
    if not isinstance(h.model_name, str) or not h.model_name.strip():
        raise bad("model_name", "must be a non-empty string: a hub name, a local folder or 'gemma-3-270m'")
    if not (_is_int(h.device) or isinstance(h.device, str)):
        raise bad("device", "must be a GPU index (0) or a device string ('cpu', 'cuda:0')")
    for key in ("model_parallel", "fp16", "sequential"):
        if not isinstance(getattr(h, key), bool):
            raise bad(key, "must be true or false")
    if not _is_int(h.max_length) or h.max_length < 1:
        raise bad("max_length", "must be a positive integer (EasyEdit's tokenization limit)")
    if h.batch_size != 1:
        raise bad("batch_size", "must be 1: EasyEdit edits one request per call for AMIG; the IG batch is ig_batch_size")
    for key, choices in _CHOICES.items():
        if getattr(h, key) not in choices:
            raise bad(key, f"must be one of {list(choices)}")
    if not _is_int(h.steps) or h.steps < 2:
        raise bad("steps", "must be an integer >= 2 (IG path points; the paper uses 20; steps: 1 evaluates "
                  "one gradient, which is not integrated gradients)")
    if not _is_int(h.ig_batch_size) or h.ig_batch_size < 1:
        raise bad("ig_batch_size", "must be a positive integer")
    if h.layers is not None:
        if not isinstance(h.layers, list) or not h.layers or not all(_is_int(l) and l >= 0 for l in h.layers):
            raise bad("layers", "must be null (all layers) or a non-empty list of layer indices")
    if not isinstance(h.lang, str) or not h.lang:
        raise bad("lang", "must be 'auto' or a language code such as 'en' or 'zh'")
    if h.tau is not None and (not _is_number(h.tau) or not 0 < h.tau <= 1):
        raise bad("tau", "must be null (per-language) or a number in (0, 1]")
    if h.tau_by_lang is not None and (not isinstance(h.tau_by_lang, Mapping) or not all(
        isinstance(k, str) and _is_number(v) and 0 < v <= 1 for k, v in h.tau_by_lang.items()
    )):
        raise bad("tau_by_lang", "must be null (the study defaults) or map language codes to numbers in (0, 1], "
                  "e.g. {en: 0.3, zh: 0.2}")
    if not _is_number(h.share_p) or not 0 <= h.share_p < 1:
        raise bad("share_p", "must be a number in [0, 1)")
    if h.max_neurons is not None and (not _is_int(h.max_neurons) or h.max_neurons < 1):
        raise bad("max_neurons", "must be null (no cap) or a positive integer")
    if not _is_int(h.min_neurons) or h.min_neurons < 0:
        raise bad("min_neurons", "must be an integer >= 0")
    if h.max_neurons is not None and h.min_neurons > h.max_neurons:
        raise bad("min_neurons", f"must not exceed max_neurons ({h.max_neurons})")
    for key in ("lambda_old", "lambda_new"):
        if not _is_number(getattr(h, key)):
            raise bad(key, "must be a number")
    if h.edit_rule not in (None, "dai", "erase", "optimize"):
        raise bad("edit_rule", "must be null, 'dai', 'erase' or 'optimize'")
    if h.edit_rule == "dai" and h.edit_mode == "erase":
        raise bad("edit_rule", "contradicts edit_mode: erase; give one of them")
    if not _is_int(h.optimize_steps) or h.optimize_steps < 1:
        raise bad("optimize_steps", "must be a positive integer")
    for key in ("optimize_lr", "norm_bound"):
        if not _is_number(getattr(h, key)) or getattr(h, key) <= 0:
            raise bad(key, "must be a positive number")
    if not _is_number(h.kl_weight) or h.kl_weight < 0:
        raise bad("kl_weight", "must be a number >= 0")
    if not isinstance(h.kl_prompts, list) or not all(isinstance(p, str) and p.strip() for p in h.kl_prompts):
        raise bad("kl_prompts", "must be a list of non-empty prompts ('{subject}' is filled in)")
