"""Joining the record files of a run (one per study and process) into results.

For every study: the expected units (the run's facts x the study's units, from the run
folder's config), the records present in ``records/<study>/rank*.jsonl``, and

* ``ok`` / ``failed``: units whose latest attempt succeeded / raised (failures are kept,
  with their error, in the results);
* ``missing``: expected units without a record (the run is not finished);
* ``duplicates``: a unit key written more than once (over all files; 0 for a correct run);
* ``extra``: records of units the config no longer expects (e.g. ``data.n`` reduced);
  left out of the results;
* ``partial_lines``: record files whose last line is cut (a process killed mid-write that
  was not resumed); that unit counts as missing.

``results/<study>.jsonl`` (one record per expected unit, in run order) and ``summary.json``
are written atomically. The summary also carries each study's table rows.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from pathlib import Path

from .config import RunConfig
from .folder import RunFolder, atomic_write_text
from .studies import STUDIES
from .units import latest, plan_units
from ..errors import AmigError


class IncompleteRunError(AmigError, RuntimeError):
    """``merge_run(strict=True)`` found missing, duplicate or failed records."""


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def merge_run(run_dir: str | os.PathLike, *, config: RunConfig | None = None, facts=None, strict: bool = False) -> dict:
    """Merge the record files of ``run_dir``; returns (and writes) the summary."""
    folder = RunFolder(run_dir)
    config = config or folder.read_config()
    if config is None:
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); start one with `amig run CONFIG`")
    facts = facts if facts is not None else folder.read_facts()
    expected = plan_units(config, facts)
    summary: dict = {"run_dir": str(folder.path), "model": config.model, "dtype": config.dtype,
                     "languages": config.languages, "methods": config.methods, "facts": len(facts),
                     "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "studies": {}}
    studies = list(dict.fromkeys(list(config.studies) + folder.studies_on_disk()))
    complete = True
    for name in studies:
        occurrences: Counter = Counter()
        records: dict[str, dict] = {}
        partial = []
        files = []
        for path, store in folder.iter_records(name):
            files.append(str(path.relative_to(folder.path)))
            if store.partial_last_line:
                partial.append(str(path.relative_to(folder.path)))
            occurrences.update(_raw_key_counts(path))
            for rec in store:
                records.setdefault(rec["key"], rec)
        duplicates = {k: n for k, n in occurrences.items() if n > 1}
        units = latest(records)
        exp = [u for u in expected if u.study == name]
        exp_keys = [u.key for u in exp]
        exp_set = set(exp_keys)
        merged = [units[k] for k in exp_keys if k in units]
        missing = [k for k in exp_keys if k not in units]
        extra = sorted(k for k in units if k not in exp_set)
        failed = [r for r in merged if r.get("status") != "ok"]
        study = STUDIES.get(name)
        rows = []
        if study is not None and study.summarize is not None and merged:
            rows = study.summarize(merged, config)
        atomic_write_text(folder.results_dir / f"{name}.jsonl",
                          "".join(json.dumps(_json_safe(r), ensure_ascii=False) + "\n" for r in merged))
        seconds = [r.get("meta", {}).get("seconds", 0.0) for r in records.values()]
        summary["studies"][name] = {
            "expected": len(exp_keys), "records": len(records), "ok": len(merged) - len(failed),
            "failed": len(failed), "missing": len(missing), "duplicates": sum(n - 1 for n in duplicates.values()),
            "extra": len(extra), "attempts": len(records), "partial_lines": partial, "files": files,
            "compute_seconds": round(sum(seconds), 1),
            "failures": [{"unit": r["unit"] if "unit" in r else r["key"], "error": r.get("error")} for r in failed][:200],
            "missing_units": missing[:50], "duplicate_keys": sorted(duplicates)[:50],
            "rows": rows, "configured": name in config.studies,
        }
        complete &= not missing and not duplicates
    summary["complete"] = complete
    summary["failed"] = sum(st["failed"] for st in summary["studies"].values())
    summary["all_ok"] = complete and summary["failed"] == 0
    summary = _json_safe(summary)
    atomic_write_text(folder.summary_path, json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    if strict and not summary["all_ok"]:
        bad = {n: (s["missing"], s["duplicates"], s["failed"]) for n, s in summary["studies"].items()
               if s["missing"] or s["duplicates"] or s["failed"]}
        raise IncompleteRunError(f"{run_dir}: (missing, duplicates, failed) per study: {bad}; "
                                 f"resume the run, or rerun failed units with --retry-failed")
    return summary


def _raw_key_counts(path: Path) -> Counter:
    """Occurrences of every key in a record file, duplicates included (the store keeps one)."""
    counts: Counter = Counter()
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue  # a cut last line: not a record
            try:
                counts[json.loads(raw)["key"]] += 1
            except (ValueError, KeyError, TypeError):
                continue
    return counts


def format_summary(summary: dict) -> str:
    lines = [f"run {summary['run_dir']}: {summary['facts']} facts, model {summary['model']} ({summary['dtype']}), "
             f"languages {', '.join(summary['languages'])}, methods {', '.join(summary['methods'])}",
             "| study | expected | ok | failed | missing | duplicates | extra | compute s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summary["studies"].items():
        lines.append(f"| {name} | {s['expected']} | {s['ok']} | {s['failed']} | {s['missing']} | {s['duplicates']} | "
                     f"{s['extra']} | {s['compute_seconds']} |")
    lines.append(summary_line(summary))
    return "\n".join(lines)


def summary_line(summary: dict) -> str:
    """One line: complete, incomplete (resume), or finished with failed units (retry)."""
    run_dir = summary["run_dir"]
    if not summary["complete"]:
        return f"INCOMPLETE (resume with `amig run {run_dir}`)"
    failed = summary.get("failed", 0)
    if failed:
        first = next(f for s in summary["studies"].values() for f in s["failures"])
        return (f"FAILED: {failed} unit(s) failed (first: {first['unit']}: {str(first['error'])[:200]}); fix the cause, "
                f"then `amig run {run_dir} --retry-failed` (every failure: summary.json, report/failures.csv)")
    return "complete"


def exit_code(summary: dict) -> int:
    """0 when every expected unit is recorded once and ok; 1 when units are missing or failed."""
    return 0 if summary["complete"] and not summary.get("failed", 0) else 1
