"""Detections as resumable records: their keys, validation, the shared store, and
:func:`detect_facts` (every fact of a language, reusing what the store holds)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .. import defaults
from ..data import CAUSAL_MODES, Fact, FactFormatError, prompt_drop_summary
from ..localization import CacheWarning, LocalizationSettings, cache_root, model_fingerprint, model_folder_name
from ..models import QueryError, get_family
from ..neurons import model_id
from ..store import content_key
from .facts import detect_for_fact, effective_causal_mode
from .result import DEFAULT_HIGH, DEFAULT_K, DEFAULT_LOW, DEFAULT_MAX_SET_SIZE, DKNResult, check_thresholds

def model_key(model) -> str:
    """Model id + weight fingerprint (as the localization cache keys models)."""
    family = get_family(model)
    return f"{model_id(family.model)}#{model_fingerprint(family.model)}"


def detection_keys(model_key_: str, fact: Fact, lang: str, *, k: int, low: float, high: float, method: str,
                   settings: dict, grow: bool, max_set_size: int, causal_mode: str = "cut") -> list[str]:
    """[key] of a detection: the model (id and weight fingerprint), the attribution version,
    the fact's prompts and target, the causal mode (pass the effective one,
    :func:`effective_causal_mode`) and every setting that changes the result (execution-only
    settings such as ``ig_batch_size`` are left out). Cut-mode keys are those of earlier
    versions (existing stores stay valid); sentence mode adds the mode."""
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    result = LocalizationSettings.of(settings).result_settings()
    return [content_key(["dkn-v2", defaults.ATTRIBUTION_VERSION, model_key_, fact.id, lang, list(fact.prompts[lang]),
                  fact.target(lang), k, low, high, method, sorted(result.items()), grow,
                  max_set_size if grow else None] + ([["causal_mode", causal_mode]] if causal_mode != "cut" else []))]


def detection_key(model_key_: str, fact: Fact, lang: str, **kwargs) -> str:
    return detection_keys(model_key_, fact, lang, **kwargs)[0]


def check_detection_record(record, num_layers: int, ffn_width: int) -> str | None:
    """Why a stored detection record is unusable (None: it is fine): a mapping with either an
    ``error`` string or a ``result`` whose neurons lie inside the model's layers x FFN width,
    with one ``p_single`` per neuron, one ``p_pair`` per pair and pairs indexing the neurons."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not a mapping"
    if "result" not in record:
        return None if isinstance(record.get("error"), str) else "neither a result nor an error"
    r = record["result"]
    if not isinstance(r, dict):
        return "'result' is not a mapping"
    neurons = r.get("neurons")
    ok_int = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
    ok_num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if not isinstance(neurons, list) or not all(isinstance(n, list) and len(n) == 2 and all(map(ok_int, n))
                                                for n in neurons):
        return "'neurons' is not a list of [layer, index]"
    bad = [n for n in neurons if not (0 <= n[0] < num_layers and 0 <= n[1] < ffn_width)]
    if bad:
        return f"neuron {bad[0]} lies outside the model's {num_layers} layers x {ffn_width} FFN units"
    k = len(neurons)
    if not ok_num(r.get("p0")):
        return "'p0' is not a number"
    for name, size in (("p_single", k), ("p_pair", k * (k - 1) // 2)):
        values = r.get(name)
        if not isinstance(values, list) or len(values) != size or not all(map(ok_num, values)):
            return f"'{name}' must be {size} numbers"
    pairs = r.get("pairs")
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and all(ok_int(i) and 0 <= i < k for i in p)
                                              for p in pairs):
        return f"'pairs' must be index pairs into the {k} neurons"
    return None


def lookup_detection(store, model_key_: str, fact: Fact, lang: str, *, model=None, **kwargs) -> tuple[str, dict | None]:
    """(key to store a new detection under, the stored record or None). With ``model``, a
    stored record that :func:`check_detection_record` refuses is reported (a warning naming
    the store file) and treated as absent: store its recomputation with :func:`put_detection`."""
    key = detection_keys(model_key_, fact, lang, **kwargs)[0]
    record = store.get(key)
    if record is not None and model is not None:
        family = get_family(model)
        problem = check_detection_record(record, family.num_layers, family.ffn_width)
        if problem is not None:
            warnings.warn(f"{store.path}: stored DKN detection {key[:12]} of fact {fact.id!r} ({lang}) is unusable "
                          f"({problem}); recomputing it", CacheWarning, stacklevel=2)
            return key, None
    return key, record


def put_detection(store, key: str, record: dict) -> None:
    """Store ``record`` under ``key``, replacing an unusable record stored there."""
    if key in store:
        store.replace(key, record)
    else:
        store.add(key, record)


def default_store_dir(model) -> Path:
    """``<cache>/dkn/<model>``: the detection and fact-check stores that ``amig dkn``,
    ``amig factcheck`` and ``amig run``'s dkn study share."""
    return Path(cache_root()) / "dkn" / model_folder_name(model)


#: errors that mark a fact as unusable in a language (recorded, never a crash)
FACT_ERRORS = (FactFormatError, QueryError, ValueError)


def detect_facts(model, tokenizer, facts: Sequence[Fact], lang: str, *, store=None, cache=None, k: int = DEFAULT_K,
                 low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, method: str = "amig", settings: dict | None = None,
                 grow: bool = False, max_set_size: int = DEFAULT_MAX_SET_SIZE, batch_size: int = 256,
                 progress: bool = True, causal_mode: str = "cut") -> tuple[dict[str, DKNResult], dict[str, str]]:
    """Detection for every fact, resumable: ``({fact_id: result}, {fact_id: error})``.

    ``store``: a :class:`~amig_plugin.store.RecordStore`; results already there are reused,
    new ones appended as they are computed (kill and rerun: nothing is lost or repeated).
    A fact that cannot be used in ``lang`` (e.g. its prompt leaves a causal model nothing
    to read) is recorded with its error and skipped. ``causal_mode``: see the module docstring;
    it is part of the record key (a resumed run in one mode never reuses the other's).
    """
    check_thresholds(low, high)
    mode = effective_causal_mode(model, causal_mode)
    settings = dict(settings or {})
    with prompt_drop_summary(lang):  # one warning for the language, not one per prompt
        return _detect_facts(model, tokenizer, facts, lang, store=store, cache=cache, k=k, low=low, high=high,
                             method=method, settings=settings, grow=grow, max_set_size=max_set_size,
                             batch_size=batch_size, progress=progress, mode=mode)


def _detect_facts(model, tokenizer, facts, lang, *, store, cache, k, low, high, method, settings, grow, max_set_size,
                  batch_size, progress, mode):
    """The loop of :func:`detect_facts` (arguments checked there)."""
    mkey = model_key(model) if store is not None else ""
    results: dict[str, DKNResult] = {}
    errors: dict[str, str] = {}
    bar = tqdm(facts, desc=f"DKN [{lang}]", disable=not progress)
    for fact in bar:
        if lang not in fact.prompts:
            errors[fact.id] = f"fact has no {lang!r} prompts"
            continue
        key, record = None, None
        if store is not None:
            key, record = lookup_detection(store, mkey, fact, lang, model=model, k=k, low=low, high=high,
                                           method=method, settings=settings, grow=grow, max_set_size=max_set_size,
                                           causal_mode=mode)
        if record is None:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    r = detect_for_fact(model, tokenizer, fact, lang, k=k, low=low, high=high, cache=cache, method=method,
                                        settings=settings, grow=grow, max_set_size=max_set_size, batch_size=batch_size,
                                        causal_mode=mode)
                record = {"fact_id": fact.id, "lang": lang, "relation": fact.relation, "causal_mode": mode,
                          "result": r.to_dict(), "warnings": [str(w.message) for w in caught]}
            except FACT_ERRORS as exc:
                record = {"fact_id": fact.id, "lang": lang, "relation": fact.relation, "causal_mode": mode,
                          "error": f"{type(exc).__name__}: {exc}"}
            if store is not None:
                put_detection(store, key, record)
        if "error" in record:
            errors[fact.id] = record["error"]
        else:
            results[fact.id] = DKNResult.from_dict(record["result"])
            results[fact.id].relation = fact.relation
        bar.set_postfix(pairs=sum(len(r.pairs) for r in results.values()), skipped=len(errors))
    return results, errors

