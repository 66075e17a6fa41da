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

from .defaults import DEFAULT_QUADRATURE, DEFAULT_STEPS
from .neurons import KnowledgeNeurons, UnconvergedError, localize, model_id
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
        still found, and so are midpoint records keyed without the rule (then the only default)."""
        result_settings = {k: v for k, v in settings.items() if k not in self.EXECUTION_ONLY}
        key = self.key(model_name, prompts, target, lang, method, result_settings)
        record = self.store.get(key)
        variants = [result_settings]
        if result_settings.get("quadrature") == "midpoint":  # callers that left the rule to the old default
            variants.append({k: v for k, v in result_settings.items() if k != "quadrature"})
        for variant in variants:
            if record is not None:
                break
            record = self.store.get(self.key(model_name, prompts, target, lang, method, variant))
            for batch in dict.fromkeys([settings.get("ig_batch_size", LEGACY_IG_BATCH_SIZE), LEGACY_IG_BATCH_SIZE]):
                if record is not None:
                    break
                legacy = {**variant, "ig_batch_size": batch}
                record = self.store.get(self.key(model_name, prompts, target, lang, method, legacy))
        return key, record

    def localize(self, model, tokenizer, prompts: str | Sequence[str], target: str, *, lang: str | None = None,
                 method: str = "amig", fact_id: str | None = None, **settings) -> KnowledgeNeurons:
        """:func:`amig_plugin.neurons.localize`, computed once per distinct input."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        # the rule is part of the key even where the caller left it to the default; 'warn' and
        # 'refuse' give the same record (refusal is checked on the way out), 'refine' does not
        settings = {"steps": DEFAULT_STEPS, "quadrature": DEFAULT_QUADRATURE, **settings}
        refuse = settings.get("on_unconverged") == "refuse"
        key_settings = {k: v for k, v in settings.items()
                        if not (k == "on_unconverged" and v in ("warn", "refuse"))}
        key, record = self._lookup(f"{model_id(model)}#{self._fingerprint(model)}", prompts, target, lang, method,
                                   key_settings)
        if record is not None:
            self.hits += 1
            kn = KnowledgeNeurons.from_dict(record["neurons"])
            kn.fact_id = fact_id if fact_id is not None else kn.fact_id
            if refuse and kn.converged is False:
                raise UnconvergedError(f"cached localization of {target!r} ({method}) is unconverged at layers "
                                       f"{kn.unconverged_layers}; use the steep quadrature or on_unconverged='refine'")
            return kn
        self.misses += 1
        kn = localize(model, tokenizer, prompts, target, lang=lang, method=method, fact_id=fact_id, **settings)
        self.store.add(key, {"fact_id": fact_id, "lang": lang, "method": method, "neurons": kn.to_dict()})
        return kn
