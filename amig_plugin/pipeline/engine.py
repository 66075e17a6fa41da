"""Executing a run: facts sharded over processes, records appended per unit, resumable.

One process (``amig run CONFIG``) or N under ``torchrun --nproc_per_node=N amig run CONFIG``
(torch.distributed; ``gloo`` on CPU, ``nccl`` on CUDA). Fact i of the run belongs to rank
``i % N``; each rank appends its records to its own files (``records/<study>/rank<R>.jsonl``)
and skips every unit already recorded in ANY record file, so a run can be resumed with a
different number of processes. After all ranks finish, rank 0 merges the shards
(:func:`amig_plugin.pipeline.merge.merge_run`).

Crash safety: a record is one line written with a single ``write`` + ``fsync`` after the
unit is computed, so ``kill -9`` loses at most the unit in progress, and a line cut in the
middle is removed on the next start (rank 0 repairs every record file before the others
open theirs). A unit that raises (out of memory, a bad prompt) is recorded with
``status: "error"`` and the error; it is counted, never dropped (``--retry-failed``
recomputes failed units as a new attempt).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from ..data import prompt_drop_summary, prompt_languages
from .config import ConfigError, RunConfig, config_changes, load_config
from .folder import RunFolder
from .studies import STUDIES, StudyContext
from .units import RUN_FACT, Unit, latest, plan_units  # noqa: F401 (re-exported)


# ----------------------------------------------------------------------------------------
# facts and units


def load_run_facts(config: RunConfig) -> list:
    """The run's facts: loaded from ``config.data``, restricted to the run's languages,
    and sampled with :func:`amig_plugin.data.sample_facts` (prefix-consistent: a larger
    ``n`` extends a run instead of changing its first facts)."""
    from ..data import sample_facts
    from ..sources import load_fact_source

    data = config.data
    source = load_fact_source(data.get("path") if data["kind"] != "shipped" else None, config.languages,
                              template_lang=data.get("template_lang"), option="'data.path'")
    if source.kind != data["kind"]:
        raise ConfigError(f"'data.path' {data.get('path')} holds {source.kind} facts but 'data.kind' is {data['kind']!r}; "
                          f"set 'data.kind: {source.kind}'")
    facts = source.facts
    if not facts:
        raise ConfigError(f"data {data} has no facts in all of the languages {config.languages}")
    n = data.get("n")
    if n is None:
        n = len(facts)
    if n > len(facts):
        raise ConfigError(f"'data.n' = {n} but the data has only {len(facts)} facts in {config.languages}")
    return sample_facts(facts, n, seed=config.seed)


# ----------------------------------------------------------------------------------------
# environment


def git_commit() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": sha, "dirty": bool(dirty)} if sha else {}


def versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "amig_plugin": __version__, "platform": platform.platform(), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.barrier()


def init_distributed(config: RunConfig) -> Dist:
    """torch.distributed from torchrun's environment (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = config.device.startswith("cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        kwargs = {"backend": backend, "timeout": datetime.timedelta(minutes=config.dist_timeout_minutes)}
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(**kwargs)
    return Dist(rank=rank, world=world, local_rank=local_rank, initialized=True)


def load_run_model(config: RunConfig, dist: Dist):
    """(model, tokenizer) per the config: dtype for the weights, device or device_map."""
    from ..loading import load_model

    kwargs = {}
    device = config.device
    if config.device_map is not None:
        kwargs["device_map"] = config.device_map
        device = None
    elif dist.world > 1 and device == "cuda":
        device = f"cuda:{dist.local_rank}"
    return load_model(config.model, device=device, dtype=config.dtype, **kwargs)


# ----------------------------------------------------------------------------------------
# the run


@dataclass
class RunResult:
    run_dir: Path
    rank: int
    world: int
    computed: int
    skipped: int
    failed: int
    seconds: float
    summary: dict | None = None


def merged_config(old: RunConfig | None, new: RunConfig, allow_changes: bool = False) -> RunConfig:
    """The folder's configuration after starting ``new`` on a folder made with ``old``:
    settings that change existing records must be equal (else :class:`ConfigError`);
    studies, languages and methods are the union (a resumed run completes the folder's
    units and the new ones); the rest (n, threads, device, ...) is taken from ``new``."""
    if old is None:
        return new
    problems = config_changes(old, new)
    if problems and not allow_changes:
        raise ConfigError("the run folder was made with a different configuration; these settings change the "
                          "results of existing records: " + "; ".join(problems)
                          + ". Use a new run folder (--out), or restore the settings.")
    studies = {**old.studies, **new.studies}
    studies = {name: studies[name] for name in STUDIES if name in studies}
    return replace(new, studies=studies, languages=list(dict.fromkeys(old.languages + new.languages)),
                   methods=list(dict.fromkeys(old.methods + new.methods)))


def prepare_folder(folder: RunFolder, config: RunConfig, allow_changes: bool = False) -> tuple[RunConfig, list, list[Path]]:
    """Rank 0, before the other ranks open their files: check the config against the
    folder's, write config and facts, repair a damaged last line of every record file.
    Returns (the folder's config, the run's facts, the repaired files)."""
    try:
        old = folder.read_config()
    except ConfigError:
        if folder.has_records():
            raise
        old = None  # an unreadable configuration of a folder without records: replaced below
    if old is not None and not folder.has_records():
        # an earlier start failed before computing anything (a wrong model path, device, ...):
        # nothing depends on its configuration, so the new one replaces it
        if config_changes(old, config):
            print(f"note: {folder.path} has no records yet: its configuration is replaced by this one",
                  file=sys.stderr)
        old = None
    config = merged_config(old, config, allow_changes)
    facts = load_run_facts(config)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_config(config)
    folder.write_facts(facts)
    return config, facts, folder.repair_all()


def _progress(total: int, initial: int, rank: int, world: int, enabled: bool):
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=f"run rank {rank}/{world}" if world > 1 else "run",
                unit="unit", position=rank if tty else None, dynamic_ncols=True, disable=not enabled,
                mininterval=0.5 if tty else 30.0, smoothing=0.05)


def run(config: RunConfig | str | os.PathLike, run_dir: str | os.PathLike, *, retry_failed: bool = False,
        merge: bool = True, threads: int | None = None, limit: int | None = None,
        allow_config_change: bool = False, model=None, tokenizer=None) -> RunResult:
    """Run (or resume) ``config`` in ``run_dir``; see the module docstring.

    ``limit``: stop after computing this many units (smoke tests). ``model`` /
    ``tokenizer``: an already loaded model (skips loading ``config.model``).
    """
    import torch

    if not isinstance(config, RunConfig):
        config = load_config(config)
    if threads is not None:
        config = replace(config, threads=threads)
    if config.threads:
        torch.set_num_threads(config.threads)
    folder = RunFolder(run_dir)
    dist = init_distributed(config)
    t_start = time.time()
    lock = None
    error: str | None = None
    if dist.rank == 0:
        try:
            if config.device_map is None:  # a device that does not exist: refused before the folder is touched
                from ..loading import check_device

                check_device(config.device)
            lock = folder.lock_rank(0)
            folder.check_unlocked(exclude=0)
            config, facts, repaired = prepare_folder(folder, config, allow_changes=allow_config_change)
            for path in repaired:
                print(f"repaired {path}: removed a partial last record (it is recomputed)", file=sys.stderr)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            if not dist.initialized:
                if lock is not None:
                    lock.close()
                raise
            _broadcast_error(error)
            lock.close() if lock is not None else None
            raise
        _broadcast_error(None) if dist.initialized else None
    else:
        message = _broadcast_error(None)
        if message is not None:
            raise RuntimeError(f"rank 0 could not prepare the run folder: {message}")
        config = folder.read_config()
        if threads is not None:
            config = replace(config, threads=threads)
        facts = folder.read_facts()
        lock = folder.lock_rank(dist.rank)
    try:
        return _run_rank(config, folder, facts, dist, retry_failed=retry_failed, merge=merge, limit=limit,
                         model=model, tokenizer=tokenizer, t_start=t_start)
    finally:
        lock.close()


def _broadcast_error(message: str | None) -> str | None:
    """Rank 0 sends ``message`` (None = ready) to every rank; returns what rank 0 sent."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        return message
    box = [message]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


class _Worker:
    """Computes units of one process and appends their records to its own files."""

    def __init__(self, config, folder, facts, dist, model, tokenizer):
        self.config, self.folder, self.facts, self.dist = config, folder, facts, dist
        self.model, self.tokenizer = model, tokenizer
        self.done: dict[str, dict] = {}
        self.contexts: dict[str, StudyContext] = {}
        self.stores: dict = {}
        self.by_id = {f.id: f for f in facts}
        self.computed = self.failed = 0

    def reload(self) -> None:
        self.done = latest(self.folder.load_records())

    def pending(self, units: list[Unit], retry_failed: bool) -> list[Unit]:
        if retry_failed:
            return [u for u in units if u.key not in self.done or self.done[u.key].get("status") != "ok"]
        return [u for u in units if u.key not in self.done]

    def _setup(self) -> None:
        if self.contexts:
            return
        from ..localization import LocalizationCache

        config = self.config
        if self.model is None:
            t_load = time.time()
            self.model, self.tokenizer = load_run_model(config, self.dist)
            print(f"[rank {self.dist.rank}] model {config.model} ({type(self.model).__name__}, {config.dtype}) "
                  f"loaded in {time.time() - t_load:.1f}s", file=sys.stderr)
        cache = None
        loc_cache = config.localization["cache"]
        if loc_cache:
            cache = LocalizationCache.for_model(self.model, root=None if loc_cache is True else loc_cache)
        base = StudyContext(model=self.model, tokenizer=self.tokenizer, config=config, facts=self.facts, options={},
                            lookup=lambda key: self.done.get(key), run_dir=self.folder,
                            fact_index={f.id: i for i, f in enumerate(self.facts)}, cache=cache, rank=self.dist.rank)
        self.contexts = {name: replace(base, options=config.studies[name]) for name in config.studies}
        self.stores = {name: self.folder.open_store(name, self.dist.rank) for name in config.studies}

    def compute(self, pending: list[Unit], total: int, limit: int | None) -> bool:
        """Compute ``pending`` in order; False when stopped by ``limit``."""
        if not pending:
            return True
        self._setup()
        bar = _progress(total, total - len(pending), self.dist.rank, self.dist.world, self.config.progress)
        try:
            for unit in pending:
                if limit is not None and self.computed >= limit:
                    return False
                fact = self.by_id.get(unit.fact_id)
                rec = compute_unit(self.contexts[unit.study], unit, fact, prior=self.done.get(unit.key))
                rec["meta"]["rank"] = self.dist.rank
                key = unit.key if rec["attempt"] == 1 else f"{unit.key}#{rec['attempt']}"
                self.stores[unit.study].add(key, rec)
                self.done[unit.key] = {"key": key, **rec}
                self.computed += 1
                self.failed += rec["status"] != "ok"
                bar.update(1)
                bar.set_postfix(failed=self.failed, refresh=False)
        finally:
            bar.close()
        return True


def _run_rank(config, folder, facts, dist, *, retry_failed, merge, limit, model, tokenizer, t_start) -> RunResult:
    units = plan_units(config, facts, dist.rank, dist.world)
    fact_units = [u for u in units if u.fact_id != RUN_FACT]
    run_units = [u for u in units if u.fact_id == RUN_FACT]
    worker = _Worker(config, folder, facts, dist, model, tokenizer)
    worker.reload()
    pending = worker.pending(fact_units, retry_failed)
    seeds = {"seed": config.seed, "fact_sampling": f"sample_facts(seed={config.seed})",
             "random_sets": f"Random('{config.seed}:random:<fact>:<lang>:<method>')",
             "unrelated": f"Random('{config.seed}:unrelated:<fact>')"}
    folder.log({"event": "start", "rank": dist.rank, "world": dist.world, "pid": os.getpid(), "argv": sys.argv,
                "config": config.to_dict(), "versions": versions(), "git": git_commit(), "seeds": seeds,
                "facts": len(facts), "units_total": len(units), "units_pending": len(pending)})
    print(f"[rank {dist.rank}/{dist.world}] {len(facts)} facts, {len(fact_units)} per-fact units in this process, "
          f"{len(fact_units) - len(pending)} already recorded, {len(pending)} to compute", file=sys.stderr)
    t0 = time.time()
    with prompt_drop_summary(prompt_languages(facts, config.languages)):  # one warning per language, not per prompt
        finished = worker.compute(pending, len(fact_units), limit)
        dist.barrier()
        if finished and run_units:
            # run-stage studies need every fact's records, from every rank
            worker.reload()
            everything = plan_units(config, facts)
            missing = [u for u in everything if u.fact_id != RUN_FACT and u.key not in worker.done]
            if missing:
                print(f"[rank {dist.rank}] run-stage studies wait: {len(missing)} per-fact units are not recorded yet "
                      f"(e.g. {missing[0].key})", file=sys.stderr)
                finished = False
            else:
                finished = worker.compute(worker.pending(run_units, retry_failed), len(run_units), limit)
    elapsed = time.time() - t0
    folder.log({"event": "finish", "rank": dist.rank, "world": dist.world, "pid": os.getpid(),
                "computed": worker.computed, "failed": worker.failed, "seconds": round(elapsed, 2),
                "complete": finished})
    print(f"[rank {dist.rank}] computed {worker.computed} units ({worker.failed} failed) in {elapsed:.1f}s",
          file=sys.stderr)
    dist.barrier()
    summary = None
    if merge and dist.rank == 0:
        from .merge import merge_run

        summary = merge_run(folder.path, config=config, facts=facts)
    if dist.initialized:
        import torch.distributed as tdist

        dist.barrier()
        tdist.destroy_process_group()
    return RunResult(folder.path, dist.rank, dist.world, worker.computed, len(units) - len(pending) - len(run_units),
                     worker.failed, time.time() - t_start, summary)


def compute_unit(ctx: StudyContext, unit: Unit, fact, prior: dict | None = None) -> dict:
    """Run one unit; a raised exception becomes an error record (with the traceback tail)."""
    import torch

    study = STUDIES[unit.study]
    attempt = (prior.get("attempt", 1) + 1) if prior is not None else 1
    rec = {"unit": unit.key, "study": unit.study, "fact_id": unit.fact_id, "lang": unit.lang, "method": unit.method,
           "attempt": attempt}
    t0 = time.time()
    try:
        result = study.compute(ctx, fact, {"lang": unit.lang, "method": unit.method})
        rec.update(status="ok", result=result)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # out of memory, bad input, a bug in one study: record it
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])[-4000:])
    rec["meta"] = {"seconds": round(time.time() - t0, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "pid": os.getpid()}
    return rec
