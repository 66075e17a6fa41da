"""Kill-safe, resumable records of an editing comparison: one record per request × method.

Layout: ``OUT/records/rank<R>.jsonl``, each an append-only
:class:`~amig_plugin.store.RecordStore` (whole-line appends with ``fsync``; a line cut by
``kill -9`` is removed on the next start). One process (rank) writes one file, so sharded
runs never share a file; every rank reads all files to know what is done.

Key of a record: ``sha256(request fingerprint, method, canonical JSON of the settings)``
(hex, 24 characters): the same request edited by the same method with the same settings is
done once, whatever the order or the sharding; changing a setting makes new keys (the old
records stay, unused). A record: ``{"key", "case_id", "method", "request": fingerprint,
"settings", "metrics", "seconds", "status": "ok" | "failed", "error"?}``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from .edit_data import EditRequest
from .store import RecordStore


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces, UTF-8 text): the hashing form."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_key(request: EditRequest | str, method: str, settings: Mapping[str, Any]) -> str:
    """Key of (request, method, settings); ``request`` an :class:`EditRequest` or its fingerprint."""
    fp = request if isinstance(request, str) else request.fingerprint()
    text = canonical({"request": fp, "method": method, "settings": dict(settings)})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class CompareRecords:
    """The records of one comparison folder; this process appends to ``rank<rank>.jsonl``."""

    def __init__(self, out_dir: str | Path, rank: int = 0):
        self.dir = Path(out_dir) / "records"
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

    def done(self, request: EditRequest, method: str, settings: Mapping[str, Any]) -> bool:
        """Whether (request, method, settings) has a record (``ok`` or ``failed``)."""
        return self.get(record_key(request, method, settings)) is not None

    def add(self, request: EditRequest, method: str, settings: Mapping[str, Any], metrics: Any, *,
            seconds: float | None = None, status: str = "ok", error: str | None = None) -> dict:
        """Append the record of (request, method, settings), durably."""
        record = {"case_id": request.case_id, "method": method, "request": request.fingerprint(),
                  "settings": json.loads(canonical(dict(settings))), "metrics": metrics,
                  "seconds": seconds, "status": status}
        if error is not None:
            record["error"] = error
        return self.store.add(record_key(request, method, settings), record)

    def pending(self, requests: Sequence[EditRequest], methods: Iterable[str],
                settings: Mapping[str, Mapping[str, Any]]) -> list[tuple[int, EditRequest, str]]:
        """(index, request, method) not done yet, in request order then method order.
        ``settings``: method -> its settings."""
        methods = list(methods)
        return [(i, r, m) for i, r in enumerate(requests) for m in methods if not self.done(r, m, settings[m])]

    def records(self, requests: Sequence[EditRequest], method: str, settings: Mapping[str, Any]) -> list[Optional[dict]]:
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
