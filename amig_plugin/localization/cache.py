"""A persistent cache of localizations, shared by every study (LIKN, DKN, runs, demo).

Attribution is the expensive step (seconds per fact and language on a 270M model); it is
deterministic on CPU, so a localization is keyed by everything it depends on — model id, a
fingerprint of every weight (:func:`model_fingerprint`), the algorithm's version
(:data:`~amig_plugin.defaults.ATTRIBUTION_VERSION`), prompts, target, language, method and
settings — and stored once in a JSONL :class:`~amig_plugin.store.RecordStore`
(``<cache>/localizations/<model>.jsonl``). A model fine-tuned or edited and saved under the
same name has another fingerprint, so it never gets the old model's neurons.

A record read back is checked before it is served (:func:`check_neurons_record`: types,
neurons inside the model's layers and FFN width, the requested prompts and target); a bad
record is recomputed and replaced, with a :class:`CacheWarning` naming the cache file.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..models import ModelFamily, get_family
from ..neurons import KnowledgeNeurons, UnconvergedError, adaptive_from_record, localize, model_id
from .settings import LocalizationSettings
from ..store import RecordStore

#: identity of the fingerprint scheme (part of each fingerprint)
FINGERPRINT_FORMAT = "sha256-all-parameters-v1"

# model -> (weights state, fingerprint); the state is (name, data pointer, version counter,
# shape, dtype, device) per parameter: in-place changes under autograd bump a version counter
_FINGERPRINTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


class CacheWarning(UserWarning):
    """A cached record was unusable (wrong type, neurons out of range, ...): it is recomputed."""


class InvalidRecord(ValueError):
    """A cached record that does not fit the request or the model (see :func:`check_neurons_record`)."""


def model_folder_name(model) -> str:
    """A file-name-safe name for ``model``'s cache files (its id, at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id(model)).strip("_")[-80:] or "model"


def cache_root() -> Path:
    """``$AMIG_CACHE`` or ``~/.cache/amig-plugin``."""
    return Path(os.environ.get("AMIG_CACHE") or Path.home() / ".cache" / "amig-plugin")


def shown_path(path: str | Path) -> str:
    """``path`` as printed in notes and tables that people share: under the cache root it
    reads ``$AMIG_CACHE/...`` (the variable, or ``~/.cache/amig-plugin`` where it is unset),
    else under the home folder ``~/...``; other paths unchanged. A table then names no
    user's machine."""
    path = Path(path).expanduser()
    root = cache_root().expanduser()
    for base, shown in ((root, "$AMIG_CACHE" if os.environ.get("AMIG_CACHE") else "~/.cache/amig-plugin"),
                        (Path.home(), "~")):
        try:
            rest = path.resolve().relative_to(base.resolve())
        except ValueError:
            continue
        return shown if str(rest) == "." else f"{shown}/{rest.as_posix()}"
    return str(path)


# ----------------------------------------------------------------------------------------
# fingerprint of the weights


def _module(model) -> nn.Module:
    return model.model if isinstance(model, ModelFamily) else model


def _weights_state(params: list[tuple[str, torch.Tensor]]) -> tuple:
    return tuple((name, p.data_ptr(), p._version, tuple(p.shape), str(p.dtype), str(p.device)) for name, p in params)


def _tensor_digest(tensor: torch.Tensor) -> bytes:
    """sha256 of the tensor's raw bytes in row-major order (copied to the CPU when elsewhere)."""
    t = tensor.detach()
    if t.device.type == "meta":  # offloaded by accelerate: no data in this process
        return b"meta"
    t = t.contiguous().reshape(-1)
    if t.device.type != "cpu":
        t = t.cpu()
    return hashlib.sha256(t.view(torch.uint8).numpy()).digest()


def model_fingerprint(model, *, refresh: bool = False) -> str:
    """Identity of every weight of ``model`` (a module or a :class:`ModelFamily`): sha256 over
    each parameter's name, shape, dtype and raw bytes, in ``named_parameters()`` order (tied
    weights once); 32 hex digits.

    Hashing reads every weight once (~1.7 GB/s per core with SHA extensions; tensors are
    hashed on up to ``torch.get_num_threads()`` threads). The result is kept per model
    object and reused while no parameter changed: an optimizer step, ``load_state_dict``,
    ``p.copy_()`` under ``torch.no_grad()`` or a replaced ``p.data`` all show in the
    parameters' version counters or data pointers and make the next call hash again.
    In-place writes through ``p.data`` (untracked by autograd) do not: pass
    ``refresh=True`` after such an edit."""
    module = _module(model)
    params = list(module.named_parameters())
    state = _weights_state(params)
    if not refresh:
        known = _FINGERPRINTS.get(module)
        if known is not None and known[0] == state:
            return known[1]
    tensors = [p for _, p in params]
    workers = max(1, min(8, torch.get_num_threads(), os.cpu_count() or 1, len(tensors)))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # hashlib releases the GIL on large buffers
            digests = list(pool.map(_tensor_digest, tensors))
    else:
        digests = [_tensor_digest(p) for p in tensors]
    h = hashlib.sha256(FINGERPRINT_FORMAT.encode())
    for (name, p), digest in zip(params, digests):
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        h.update(digest)
    fingerprint = h.hexdigest()[:32]
    _FINGERPRINTS[module] = (state, fingerprint)
    return fingerprint


# ----------------------------------------------------------------------------------------
# checking records read back


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _text(s: str) -> str:
    return unicodedata.normalize("NFC", s).strip()


def _check_neuron_list(items, num_layers: int, width: int, what: str, with_score: bool = False) -> None:
    if not isinstance(items, list):
        raise InvalidRecord(f"{what} is {type(items).__name__}, not a list")
    arity = 3 if with_score else 2
    for n in items:
        if not isinstance(n, list) or len(n) != arity or not (_is_int(n[0]) and _is_int(n[1])):
            raise InvalidRecord(f"{what} holds {n!r}, not a [layer, index{', score' if with_score else ''}] entry")
        if not (0 <= n[0] < num_layers and 0 <= n[1] < width):
            raise InvalidRecord(f"{what} holds neuron {n[:2]} outside the model's {num_layers} layers x "
                                f"{width} FFN units")
        if with_score and not _is_number(n[2]):
            raise InvalidRecord(f"{what} holds a non-numeric score {n[2]!r}")


def check_neurons_record(record, num_layers: int, ffn_width: int, prompts: Sequence[str] | None = None,
                         target: str | None = None) -> KnowledgeNeurons:
    """The :class:`KnowledgeNeurons` of a cached record, once checked: its fields have the
    right types, every neuron (kept, per prompt, top) lies inside the model's
    ``num_layers`` x ``ffn_width``, one score per neuron, one neuron list per prompt, and
    its prompts and target are the requested ones. Raises :class:`InvalidRecord` naming the
    first problem."""
    d = record.get("neurons") if isinstance(record, dict) else None
    if not isinstance(d, dict):
        raise InvalidRecord(f"'neurons' is {type(d).__name__}, not a KnowledgeNeurons mapping")
    _check_neuron_list(d.get("neurons"), num_layers, ffn_width, "'neurons'")
    scores = d.get("scores")
    if not isinstance(scores, list) or len(scores) != len(d["neurons"]) or not all(_is_number(s) for s in scores):
        raise InvalidRecord(f"'scores' must be {len(d['neurons'])} numbers, one per neuron")
    per_prompt = d.get("per_prompt", [])
    if not isinstance(per_prompt, list) or (prompts is not None and len(per_prompt) != len(prompts)):
        raise InvalidRecord("'per_prompt' must hold one neuron list per prompt")
    for i, ns in enumerate(per_prompt):
        _check_neuron_list(ns, num_layers, ffn_width, f"'per_prompt[{i}]'")
    _check_neuron_list(d.get("top", []), num_layers, ffn_width, "'top'", with_score=True)
    for key in ("completeness_residuals", "clean_scores"):
        values = d.get(key, [])
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise InvalidRecord(f"'{key}' must be a list of numbers")
    if not isinstance(d.get("settings", {}), dict):
        raise InvalidRecord("'settings' is not a mapping")
    stored_prompts, stored_target = d.get("prompts"), d.get("target")
    if not isinstance(stored_prompts, list) or not all(isinstance(p, str) for p in stored_prompts):
        raise InvalidRecord("'prompts' is not a list of strings")
    if not isinstance(stored_target, str):
        raise InvalidRecord("'target' is not a string")
    # compared as text (NFC, outer blanks stripped): localize may normalise what it records
    if prompts is not None and [_text(p) for p in stored_prompts] != [_text(p) for p in prompts]:
        raise InvalidRecord(f"its prompts {stored_prompts!r} are not the requested {list(prompts)!r}")
    if target is not None and _text(stored_target) != _text(target):
        raise InvalidRecord(f"its target {stored_target!r} is not the requested {target!r}")
    try:
        return KnowledgeNeurons.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(str(exc)) from None


# ----------------------------------------------------------------------------------------
# the cache


class LocalizationCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.store = RecordStore(self.path, allow_duplicates=True)
        self.hits = 0
        self.misses = 0
        self.replaced = 0  # bad records recomputed

    @classmethod
    def for_model(cls, model, root: str | os.PathLike | None = None) -> "LocalizationCache":
        return cls(Path(root or cache_root()) / "localizations" / f"{model_folder_name(model)}.jsonl")

    @staticmethod
    def key(model_name: str, prompts: Sequence[str], target: str, lang: str | None, method: str, settings: dict) -> str:
        """Key of a localization; ``model_name`` is ``<id>#<fingerprint>`` (see
        :meth:`amig_plugin.localization.LocalizationSettings.key`)."""
        return LocalizationSettings.of(settings).key(model_name, prompts, target, lang, method)

    def model_name(self, model) -> str:
        """``<model id>#<fingerprint of every weight>``: the model part of the keys."""
        return f"{model_id(_module(model))}#{model_fingerprint(model)}"

    def _checked(self, record: dict, key: str, model, prompts: list[str], target: str) -> KnowledgeNeurons | None:
        """The record's neurons if it passes :func:`check_neurons_record`, else ``None`` with a
        :class:`CacheWarning` naming the store file."""
        family = get_family(model)
        try:
            return check_neurons_record(record, family.num_layers, family.ffn_width, prompts, target)
        except InvalidRecord as exc:
            warnings.warn(f"{self.path}: cached localization {key[:12]} is unusable ({exc}); recomputing it",
                          CacheWarning, stacklevel=3)
            return None

    def localize(self, model, tokenizer, prompts: str | Sequence[str], target: str, *, lang: str | None = None,
                 method: str = "amig", fact_id: str | None = None, **settings) -> KnowledgeNeurons:
        """:func:`amig_plugin.neurons.localize`, computed once per distinct input (and model
        weights); ``settings``: fields of :class:`~amig_plugin.localization.LocalizationSettings`.
        A cached record that fails :func:`check_neurons_record` is recomputed."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        request = LocalizationSettings.of(settings).resolved(lang, method)
        name = self.model_name(model)
        key = request.key(name, prompts, target, lang, method)
        record = self.store.get(key)
        kn = self._checked(record, key, model, prompts, target) if record is not None else None
        if kn is None and record is None and request.adaptive is not None and len(prompts) == 1:
            # one prompt: the adaptive set follows from the plain record's top attributions (no new IG)
            plain_key = request.replace(adaptive=None).key(name, prompts, target, lang, method)
            plain = self.store.get(plain_key)
            plain_kn = self._checked(plain, plain_key, model, prompts, target) if plain is not None else None
            kn = adaptive_from_record(plain_kn, request.adaptive) if plain_kn is not None else None
            if kn is not None:
                self.store.add(key, {"fact_id": fact_id, "lang": lang, "method": method, "neurons": kn.to_dict()})
        if kn is not None:
            self.hits += 1
            kn.fact_id = fact_id if fact_id is not None else kn.fact_id
            if request.on_unconverged == "refuse" and kn.converged is False:
                raise UnconvergedError(f"cached localization of {target!r} ({method}) is unconverged at layers "
                                       f"{kn.unconverged_layers}; use the steep quadrature or on_unconverged='refine'")
            return kn
        self.misses += 1
        kn = localize(model, tokenizer, prompts, target, lang=lang, method=method, fact_id=fact_id,
                      **request.localize_kwargs())
        new = {"fact_id": fact_id, "lang": lang, "method": method, "neurons": kn.to_dict()}
        if record is None:
            self.store.add(key, new)
        else:
            self.store.replace(key, new)
            self.replaced += 1
        return kn
