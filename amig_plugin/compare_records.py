"""Kill-safe, resumable records of an editing comparison: one record per request × method.

Layout: ``RECORDS/rank<R>.jsonl``, each an append-only
:class:`~amig_plugin.store.RecordStore` (whole-line appends with ``fsync``; a line cut by
``kill -9`` is removed on the next start). One process (rank) writes one file, so sharded
runs never share a file; every rank reads all files to know what is done.

Key of a record: ``sha256(request fingerprint, method, canonical JSON of the settings)``
(hex, 24 characters): the same request edited by the same method with the same settings is
done once, whatever the order or the sharding; changing a setting makes new keys (the old
records stay, unused). A record: ``{"key", "case_id", "method", "request": fingerprint,
"settings", "metrics", "seconds", "status": "ok" | "failed", "error"?}``.

:class:`CachedPredictions`: the model's own answers (the ground truth where a format has
none) are computed once per (model weights, tokenizer, predictor, prompt, length) and kept in
``<cache>/ground-truth/<model>.jsonl``, so that a run that raises ``--n`` predicts the new
requests only.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .data.edits import EditRequest
from .store import RecordStore, content_key


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces, UTF-8 text): the hashing form."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


Request = Union[EditRequest, Mapping[str, Any], str]


def request_fingerprint(request: Request) -> str:
    """An :class:`EditRequest`'s fingerprint; sha256 of a request dict's canonical JSON; a
    string is taken as a fingerprint already."""
    if isinstance(request, str):
        return request
    if isinstance(request, EditRequest):
        return request.fingerprint()
    return hashlib.sha256(canonical(dict(request)).encode("utf-8")).hexdigest()


def _case_id(request: Request) -> str:
    if isinstance(request, EditRequest):
        return request.case_id
    if isinstance(request, Mapping):
        return str(request.get("case_id", request.get("fact_id", "")))
    return ""


def record_key(request: Request, method: str, settings: Mapping[str, Any]) -> str:
    """Key of (request, method, settings); ``request`` an :class:`EditRequest`, an EasyEdit
    request dict or a fingerprint."""
    fp = request_fingerprint(request)
    text = canonical({"request": fp, "method": method, "settings": dict(settings)})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class CompareRecords:
    """The records folder of one comparison; this process appends to ``rank<rank>.jsonl``."""

    def __init__(self, records_dir: str | Path, rank: int = 0):
        self.dir = Path(records_dir)
        self.rank = rank
        self.store = RecordStore(self.dir / f"rank{rank}.jsonl", allow_duplicates=True)
        self._others: dict[str, dict] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the other ranks' files (read-only: their last line may be in progress)."""
        self._others = {}
        for path in sorted(self.dir.glob("rank*.jsonl")):
            if path != self.store.path:
                for rec in RecordStore(path, allow_duplicates=True, read_only=True):
                    self._others.setdefault(rec["key"], rec)

    def get(self, key: str) -> Optional[dict]:
        return self.store.get(key) or self._others.get(key)

    def done(self, request: Request, method: str, settings: Mapping[str, Any]) -> bool:
        """Whether (request, method, settings) has a record (``ok`` or ``failed``)."""
        return self.get(record_key(request, method, settings)) is not None

    def add(self, request: Request, method: str, settings: Mapping[str, Any], metrics: Any, *,
            seconds: float | None = None, status: str = "ok", error: str | None = None,
            extra: Optional[Mapping[str, Any]] = None) -> dict:
        """Append the record of (request, method, settings), durably; ``extra``: more fields."""
        record = {"case_id": _case_id(request), "method": method, "request": request_fingerprint(request),
                  "settings": json.loads(canonical(dict(settings))), "metrics": metrics,
                  "seconds": seconds, "status": status}
        if error is not None:
            record["error"] = error
        record.update(extra or {})
        return self.store.add(record_key(request, method, settings), record)

    def pending(self, requests: Sequence[Request], methods: Iterable[str],
                settings: Mapping[str, Mapping[str, Any]]) -> list[tuple[int, Request, str]]:
        """(index, request, method) not done yet, in request order then method order.
        ``settings``: method -> its settings."""
        methods = list(methods)
        return [(i, r, m) for i, r in enumerate(requests) for m in methods if not self.done(r, m, settings[m])]

    def records(self, requests: Sequence[Request], method: str, settings: Mapping[str, Any]) -> list[Optional[dict]]:
        """The records of ``method`` for ``requests``, in order (``None`` where missing)."""
        return [self.get(record_key(r, method, settings)) for r in requests]

    def __iter__(self) -> Iterator[dict]:
        seen = set()
        for rec in list(self.store) + list(self._others.values()):
            if rec["key"] not in seen:
                seen.add(rec["key"])
                yield rec

    def __len__(self) -> int:
        return sum(1 for _ in self)


def shard(items: Sequence, rank: int, world: int) -> list:
    """Every ``world``-th item starting at ``rank`` (a deterministic split over processes)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    return list(items[rank::world])


class CachedPredictions:
    """``predict(model, tokenizer, prompt, n) -> str`` (e.g.
    :func:`~amig_plugin.models.generation.greedy_continuation`), cached on disk.

    Key: the model's weight fingerprint
    (:func:`~amig_plugin.localization.cache.model_fingerprint`), the tokenizer's name and
    size, the predictor's qualified name and ``version``, the prompt and n: a model edited or
    fine-tuned under the same name, another tokenizer or a changed predictor never gets an
    old answer. A record read back must hold a string, else it is recomputed and replaced
    with a :class:`~amig_plugin.localization.cache.CacheWarning`. ``fresh=True`` recomputes
    every answer (and replaces the cached one). ``hits``/``computed`` count the calls."""

    def __init__(self, predict: Callable[..., str], model, tokenizer, path: str | Path, *, version: str = "1",
                 fresh: bool = False):
        from .localization.cache import model_fingerprint

        self.predict, self.fresh = predict, fresh
        self.store = RecordStore(path, allow_duplicates=True)
        self._identity = {"model": model_fingerprint(model), "predictor": f"{predict.__module__}.{predict.__qualname__}",
                          "version": version, "tokenizer": [str(getattr(tokenizer, "name_or_path", "")),
                                                            len(tokenizer) if hasattr(tokenizer, "__len__") else None]}
        self.hits = self.computed = 0

    def __call__(self, model, tokenizer, prompt: str, n: int) -> str:
        from .localization.cache import CacheWarning

        key = content_key({**self._identity, "prompt": prompt, "n": int(n)})
        record = None if self.fresh else self.store.get(key)
        if record is not None:
            if isinstance(record.get("prediction"), str):
                self.hits += 1
                return record["prediction"]
            warnings.warn(f"{self.store.path}: the cached answer to {prompt!r} is not a string; recomputing it",
                          CacheWarning, stacklevel=2)
        answer = self.predict(model, tokenizer, prompt, n)
        self.computed += 1
        entry = {"prompt": prompt, "n": int(n), "prediction": answer}
        if key in self.store:
            self.store.replace(key, entry)
        else:
            self.store.add(key, entry)
        return answer
