"""The run folder: everything a run writes, laid out so that it can be killed and resumed.

::

    RUN/
      config.yaml                 the run's configuration (latest compatible one)
      facts.jsonl                 the run's facts, in run order (sampled once, prefix-consistent)
      run.log                     one JSON object per line: start/finish of every process
                                  (config, versions, seeds, git commit, rank, timing)
      records/<study>/rank<R>.jsonl  append-only records of process R (one per fact and unit)
      attributions/*.pt           [L, W] attribution tensors of the heatmap facts
      results/<study>.jsonl       merged records, one per unit, in run order (``amig merge``)
      summary.json                counts per study: expected, ok, failed, missing, duplicates
      report/                     tables and plots (``amig report``)

Every record file is a :class:`~amig_plugin.store.RecordStore`: whole-line appends with
``fsync``; a line cut by ``kill -9`` is detected and removed on the next start. Every other
file is written to a temporary file and moved into place (``os.replace``).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import yaml

from ..store import RecordStore, append_json_line
from .config import RunConfig
from ..errors import AmigError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class UnsafeFileError(AmigError, ValueError):
    """A run-folder file that cannot be read safely (it could run code) or at all."""


class RunLocked(AmigError, RuntimeError):
    """Another live process is already writing this rank of this run."""


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- layout ------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def facts_path(self) -> Path:
        return self.path / "facts.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "run.log"

    @property
    def records_dir(self) -> Path:
        return self.path / "records"

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def shard_path(self, study: str, rank: int) -> Path:
        return self.records_dir / study / f"rank{rank}.jsonl"

    def shard_files(self, study: str | None = None) -> list[Path]:
        pattern = f"{study}/rank*.jsonl" if study else "*/rank*.jsonl"
        return sorted(self.records_dir.glob(pattern), key=lambda p: (p.parent.name, _rank_of(p)))

    def studies_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.records_dir.iterdir() if p.is_dir()) if self.records_dir.is_dir() else []

    def exists(self) -> bool:
        return self.config_path.is_file()

    # -- config and facts --------------------------------------------------------------
    def read_config(self) -> RunConfig | None:
        if not self.config_path.is_file():
            return None
        from .config import load_config

        return load_config(self.config_path)

    def write_config(self, config: RunConfig) -> None:
        text = "# written by `amig run`; the run's configuration (resume with `amig run RUN_DIR`)\n"
        text += yaml.safe_dump(config.to_dict(), allow_unicode=True, sort_keys=False)
        atomic_write_text(self.config_path, text)

    def write_facts(self, facts) -> None:
        lines = "".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in facts)
        atomic_write_text(self.facts_path, lines)

    def read_facts(self) -> list:
        from ..data import load_facts

        return load_facts(self.facts_path) if self.facts_path.is_file() else []

    # -- records -----------------------------------------------------------------------
    def repair_all(self) -> list[Path]:
        """Open every record file writable (cutting a damaged last line); the repaired paths."""
        repaired = []
        for path in self.shard_files():
            if RecordStore(path, allow_duplicates=True).repaired:
                repaired.append(path)
        return repaired

    def open_store(self, study: str, rank: int) -> RecordStore:
        return RecordStore(self.shard_path(study, rank), allow_duplicates=True)

    def iter_records(self, study: str | None = None) -> Iterator[tuple[Path, RecordStore]]:
        """Every record file, opened read-only (a damaged last line is skipped, not cut)."""
        for path in self.shard_files(study):
            yield path, RecordStore(path, allow_duplicates=True, read_only=True)

    def load_records(self, study: str | None = None) -> dict[str, dict]:
        """key -> record over all record files (first occurrence wins)."""
        out: dict[str, dict] = {}
        for _, store in self.iter_records(study):
            for rec in store:
                out.setdefault(rec["key"], rec)
        return out

    def lock_rank(self, rank: int):
        """An exclusive lock on this rank's record files (released when the process dies)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.records_dir / f".rank{rank}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise self._locked(rank, self.records_dir / f".rank{rank}.lock") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def _locked(self, rank: int, lock_file: Path) -> RunLocked:
        try:
            pid = lock_file.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            pid = "?"
        stop = f"stop it (kill {pid})" if pid.isdigit() else "stop it"
        return RunLocked(f"run folder {self.path} is in use: process {pid} is writing rank {rank} of this run; "
                         f"wait for it to finish or {stop}, then run again")

    def has_records(self) -> bool:
        """True when any record file holds a record (a run that computed something)."""
        return any(len(store) for _, store in self.iter_records())

    def check_unlocked(self, exclude: int | None = None) -> None:
        """Raise :class:`RunLocked` when a live process holds any rank lock of this run
        (before rank 0 repairs record files that such a process might be appending to)."""
        for path in sorted(self.records_dir.glob(".rank*.lock")) if self.records_dir.is_dir() else []:
            rank = _rank_of(Path(path.name.lstrip(".").removesuffix(".lock")))
            if rank == exclude:
                continue
            with open(path, "a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._locked(rank, path) from None
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- other files -------------------------------------------------------------------
    def log(self, event: dict) -> None:
        """Append one JSON line to ``run.log`` (a single write + fsync)."""
        self.path.mkdir(parents=True, exist_ok=True)
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **event}
        append_json_line(self.log_path, event, default=str)

    def read_log(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def save_tensor(self, name: str, obj) -> Path:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        path = self.path / name
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_tensor(self, name: str):
        """A file written by :meth:`save_tensor`, read with ``torch.load(weights_only=True)``:
        tensors and plain data only, so a planted file cannot run code (it is refused with
        :class:`UnsafeFileError`)."""
        import pickle

        import torch

        path = self.path / name
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise UnsafeFileError(f"{path}: refused to load: not a file of tensors and plain data "
                                  f"({_unpickler_detail(exc)}); loading such a file could run code. Delete it "
                                  "(a run writes it again, `amig report --recompute-heatmap` recomputes it)") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise UnsafeFileError(f"{path}: not a readable tensor file ({type(exc).__name__}: "
                                  f"{str(exc).strip()[:200]}); delete it and rerun to write it again") from None


def _unpickler_detail(exc: Exception) -> str:
    """The reason in torch's weights-only unpickler error (e.g. "... unsupported GLOBAL posix.system ...")."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [l.strip() for l in str(exc).splitlines() if l.strip() and not l.strip().startswith(boiler)]
    text = " ".join(lines).replace("WeightsUnpickler error:", "").strip()
    return (text or type(exc).__name__)[:160]


def _rank_of(path: Path) -> int:
    try:
        return int(path.stem.removeprefix("rank"))
    except ValueError:
        return 1 << 30
