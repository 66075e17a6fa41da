"""A persistent cache of localizations, shared by every study (LIKN, DKN, runs, demo).

Attribution is the expensive step (seconds per fact and language on a 270M model); it is
deterministic on CPU, so a localization is keyed by everything it depends on — model id,
prompts, target, language, method and settings — and stored once in a JSONL
:class:`~amig_plugin.store.RecordStore` (``<cache>/localizations/<model>.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

from .neurons import KnowledgeNeurons, adaptive_from_record, default_tau, localize, model_id
from .store import RecordStore


#: ``ig_batch_size``'s default while it was part of the cache keys: records keyed with it are still found
LEGACY_IG_BATCH_SIZE = 64


def model_folder_name(model) -> str:
    """A file-name-safe name for ``model``'s cache files (its id, at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id(model)).strip("_")[-80:] or "model"


def cache_root() -> Path:
    """``$AMIG_CACHE`` or ``~/.cache/amig-plugin``."""
    return Path(os.environ.get("AMIG_CACHE") or Path.home() / ".cache" / "amig-plugin")


def model_fingerprint(model) -> str:
    """Cheap identity of the weights: hash of parameter shapes and the first 256 values of
    the first, middle and last parameter (models built in code share a class name)."""
    model = getattr(model, "model", model) if not hasattr(model, "named_parameters") else model
    params = list(model.named_parameters())
    h = hashlib.sha1()
    for name, p in params:
        h.update(f"{name}{tuple(p.shape)}".encode())
    for _, p in (params[0], params[len(params) // 2], params[-1]):
        h.update(p.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class LocalizationCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.store = RecordStore(self.path, allow_duplicates=True)
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_model(cls, model, root: str | os.PathLike | None = None) -> "LocalizationCache":
        return cls(Path(root or cache_root()) / "localizations" / f"{model_folder_name(model)}.jsonl")

    def _fingerprint(self, model) -> str:
        if getattr(self, "_fp_model", None) is not model:
            self._fp_model, self._fp = model, model_fingerprint(model)
        return self._fp

    #: settings that change how the work is batched, not its result (beyond float rounding)
    EXECUTION_ONLY = ("ig_batch_size", "progress")

    @staticmethod
    def key(model_name: str, prompts: Sequence[str], target: str, lang: str | None, method: str, settings: dict) -> str:
        blob = json.dumps([model_name, list(prompts), target, lang, method, sorted(settings.items())],
                          ensure_ascii=False, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()

    def _lookup(self, model_name: str, prompts: list[str], target: str, lang: str | None, method: str,
                settings: dict) -> tuple[str, dict | None]:
        """(key to store under, record or None). The key leaves out execution-only settings;
        records written before that (keyed with ``ig_batch_size``, 64 by default then) are
        still found."""
        result_settings = {k: v for k, v in settings.items() if k not in self.EXECUTION_ONLY}
        key = self.key(model_name, prompts, target, lang, method, result_settings)
        record = self.store.get(key)
        if record is None:
            for batch in dict.fromkeys([settings.get("ig_batch_size", LEGACY_IG_BATCH_SIZE), LEGACY_IG_BATCH_SIZE]):
                legacy = {**result_settings, "ig_batch_size": batch}
                record = self.store.get(self.key(model_name, prompts, target, lang, method, legacy))
                if record is not None:
                    break
        return key, record

    def _find(self, name: str, prompts: list[str], target: str, lang: str | None, method: str,
              given: dict) -> tuple[str, dict | None]:
        """(key, record) with τ resolved into the key (:func:`default_tau`); a record keyed
        before that (τ = None then meant AMIG's default for both methods, so KN's English
        records, made with τ = 0.3, are not reused) is still found."""
        settings = {**given, "tau": default_tau(lang, method) if given.get("tau") is None else given["tau"]}
        key, record = self._lookup(name, prompts, target, lang, method, settings)
        if record is None and given.get("tau") is None and settings["tau"] == default_tau(lang, "amig"):
            _, record = self._lookup(name, prompts, target, lang, method, given)
        return key, record

    def localize(self, model, tokenizer, prompts: str | Sequence[str], target: str, *, lang: str | None = None,
                 method: str = "amig", fact_id: str | None = None, **settings) -> KnowledgeNeurons:
        """:func:`amig_plugin.neurons.localize`, computed once per distinct input."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        name = f"{model_id(model)}#{self._fingerprint(model)}"
        key, record = self._find(name, prompts, target, lang, method, settings)
        if record is None and settings.get("adaptive") is not None and len(prompts) == 1:
            # one prompt: the adaptive set follows from the plain record's top attributions (no new IG)
            base = {k: v for k, v in settings.items() if k != "adaptive"}
            _, plain = self._find(name, prompts, target, lang, method, base)
            derived = adaptive_from_record(KnowledgeNeurons.from_dict(plain["neurons"]), settings["adaptive"]) \
                if plain is not None else None
            if derived is not None:
                self.store.add(key, {"fact_id": fact_id, "lang": lang, "method": method, "neurons": derived.to_dict()})
                record = {"neurons": derived.to_dict()}
        if record is not None:
            self.hits += 1
            kn = KnowledgeNeurons.from_dict(record["neurons"])
            kn.fact_id = fact_id if fact_id is not None else kn.fact_id
            return kn
        settings = {**settings, "tau": default_tau(lang, method) if settings.get("tau") is None else settings["tau"]}
        self.misses += 1
        kn = localize(model, tokenizer, prompts, target, lang=lang, method=method, fact_id=fact_id, **settings)
        self.store.add(key, {"fact_id": fact_id, "lang": lang, "method": method, "neurons": kn.to_dict()})
        return kn
