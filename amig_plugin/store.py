"""Append-only, resumable JSONL record stores.

One JSON object per line, each with a unique ``"key"``. Records are appended with a
single ``write`` of a whole line followed by ``fsync``, so killing the process at any
moment (even ``kill -9``) leaves at most one partial last line; opening the store again
detects such a line (no trailing newline or invalid JSON), cuts it off (keeping a copy in
``<file>.corrupt``) and resumes. Keys already present are never written twice, except through :meth:`RecordStore.replace`
(a record found unusable and recomputed): its line carries ``"replaces": true`` and wins
over the earlier line of its key when the store is read again.

``read_only=True`` opens a store that another process may be appending to: nothing is
written, and a damaged last line (a write in progress, or a crash) is skipped, not cut
(``partial_last_line`` tells); :meth:`RecordStore.add` is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from .errors import AmigError


def content_key(obj: Any) -> str:
    """sha1 (hex) of ``obj`` as canonical JSON (sorted keys, UTF-8, ``str`` for other types):
    the key of a record in every store and cache."""
    blob = json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


class StoreError(AmigError, ValueError):
    """A store file is damaged somewhere other than its last line."""


def append_json_line(path: str | os.PathLike, obj, default=None) -> None:
    """Append ``obj`` as one JSON line to ``path``: a single ``write`` + ``fsync``, so a killed
    process leaves at most one partial last line."""
    line = (json.dumps(obj, ensure_ascii=False, default=default) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordStore:
    def __init__(self, path: str | os.PathLike, allow_duplicates: bool = False, read_only: bool = False):
        """``allow_duplicates``: a key seen twice on load keeps its first record (for caches
        shared by several writers, whose records are deterministic) instead of failing.
        ``read_only``: never write (see the module docstring)."""
        self.path = Path(path)
        self.allow_duplicates = allow_duplicates
        self.read_only = read_only
        self.duplicates_ignored = 0
        self.partial_last_line = False
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        self.repaired = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        lines = data.split(b"\n")
        offset = 0
        for lineno, raw in enumerate(lines, start=1):
            end = offset + len(raw) + 1  # incl. newline
            complete = end <= len(data)  # the last element after the final "\n" has no newline
            if raw.strip():
                try:
                    if not complete:
                        raise ValueError("no trailing newline")
                    record = json.loads(raw)
                    key = record["key"]
                except (ValueError, KeyError, TypeError) as exc:
                    if any(rest.strip() for rest in lines[lineno:]):
                        raise StoreError(f"{self.path}:{lineno}: damaged record ({exc}) before the last line; "
                                         "fix or delete the line by hand") from exc
                    if self.read_only:
                        self.partial_last_line = True
                        return
                    self._repair(data, good_end, lineno)
                    return
                if key in self._records and record.get("replaces") is True:
                    self._records[key] = record
                elif key in self._records and self.allow_duplicates:
                    self.duplicates_ignored += 1
                elif key in self._records:
                    raise StoreError(f"{self.path}:{lineno}: duplicate key {key!r}")
                else:
                    self._records[key] = record
            if complete:
                good_end = end
            offset = end

    def _repair(self, data: bytes, good_end: int, lineno: int) -> None:
        with open(str(self.path) + ".corrupt", "ab") as f:
            f.write(data[good_end:] + b"\n")
        with open(self.path, "r+b") as f:
            f.truncate(good_end)
        self.repaired = True
        print(f"note: {self.path}:{lineno}: incomplete last record (interrupted write) removed; "
              f"it will be recomputed (copy in {self.path.name}.corrupt)", file=sys.stderr)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._records.values())

    def get(self, key: str, default=None):
        return self._records.get(key, default)

    def keys(self) -> list[str]:
        return list(self._records)

    def add(self, key: str, record: dict) -> dict:
        """Append ``record`` under ``key`` (written durably); a present key is an error."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        if key in self._records:
            raise KeyError(f"record {key!r} already in {self.path}")
        return self._append(key, record)

    def replace(self, key: str, record: dict) -> dict:
        """Append ``record`` as the new record of ``key`` (present or not); written durably,
        marked ``"replaces": true`` so that it wins over the old line on the next load."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        return self._append(key, {**record, "replaces": True})

    def _append(self, key: str, record: dict) -> dict:
        record = {"key": key, **{k: v for k, v in record.items() if k != "key"}}
        append_json_line(self.path, record)
        self._records[key] = record
        return record
