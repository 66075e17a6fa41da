"""``amig run CONFIG.yaml`` / ``amig merge RUN_DIR`` / ``amig report RUN_DIR``.

    amig run configs/bmlama300_gemma.yaml [--out RUN_DIR] [--threads N] [--retry-failed]
    torchrun --nproc_per_node=2 -m amig_plugin.cli run CONFIG --out RUN_DIR   # sharded
    amig run RUN_DIR                      # resume with the folder's own config.yaml
    amig merge RUN_DIR [--strict]         # join the shards, check completeness/duplicates/failures
    amig report RUN_DIR                   # tables (markdown, CSV), PNG plots, index.md
    amig diff RUN_A RUN_B                 # same neurons? (e.g. a sharded run vs one process)
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import options as opt


def default_run_dir(config_path: Path, name: str) -> Path:
    return Path("runs") / (name or config_path.stem)


def cmd_run(args) -> int:
    from ..pipeline import format_summary, load_config, run

    target = Path(args.config)
    if target.is_dir():
        out = Path(args.out) if args.out else target
        config = load_config(target / "config.yaml")
    else:
        config = load_config(target)
        out = Path(args.out) if args.out else default_run_dir(target, config.name)
    result = run(config, out, retry_failed=args.retry_failed, merge=not args.no_merge, threads=args.threads,
                 limit=args.limit, allow_config_change=args.allow_config_change)
    if result.summary is not None:
        print(format_summary(result.summary))
        from ..pipeline.merge import exit_code

        return exit_code(result.summary)
    return 0


def cmd_merge(args) -> int:
    from ..pipeline import IncompleteRunError, format_summary, merge_run

    try:
        summary = merge_run(args.run_dir, strict=args.strict)
    except IncompleteRunError as exc:
        print(f"amig merge: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0 if summary["all_ok"] or not args.strict else 1


def cmd_report(args) -> int:
    from ..report import build_report

    index = build_report(args.run_dir, out=args.out, heatmap_fact=args.heatmap_fact, recompute=args.recompute_heatmap,
                         threads=args.threads)
    print(f"report: {index}")
    return 0


def cmd_diff(args) -> int:
    import json

    from ..report import diff_runs

    d = diff_runs(args.run_a, args.run_b, study=args.study)
    print(f"{d['study']}: {d['common']} units in both runs, {d['same']} identical, {len(d['differ'])} differ, "
          f"{len(d['status_differ'])} ok in one run only; {d['only_a']} only in A, {d['only_b']} only in B; "
          f"largest score difference of identical neuron sets: {d['max_score_diff']:.3g}")
    for item in d["differ"][:20]:
        print("  differs:", json.dumps(item))
    return 0 if not d["differ"] and not d["status_differ"] else 1


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("run", help="run (or resume) the studies of a YAML config in a run folder; "
                                          "shard with torchrun --nproc_per_node=N")
    p.add_argument("config", type=opt.existing_path,
                   help="run config (YAML, see configs/ and docs/runs.md), or a run folder to resume")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default: runs/<config name>)")
    p.add_argument("--threads", type=opt.threads, default=None, help="torch.set_num_threads per process (overrides the config)")
    p.add_argument("--retry-failed", action="store_true", help="recompute units recorded as failed (a new attempt)")
    p.add_argument("--no-merge", action="store_true", help="do not merge the shards at the end")
    p.add_argument("--limit", type=opt.positive_int, default=None, help="stop after computing this many units per process")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume although settings that change existing results differ (mixes results: avoid)")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("merge", help="join the record files of a run folder; check completeness and duplicates")
    p.add_argument("run_dir", type=opt.run_folder, help="a run folder written by `amig run`")
    p.add_argument("--strict", action="store_true", help="exit 1 when records are missing, duplicated or failed")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser("report", help="tables (markdown + CSV) and PNG plots of a run folder")
    p.add_argument("run_dir", type=opt.run_folder, help="a run folder written by `amig run`")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default RUN_DIR/report)")
    p.add_argument("--heatmap-fact", default=None, help="fact id for the layer x neuron heatmap (default: the stored one)")
    p.add_argument("--recompute-heatmap", action="store_true",
                   help="recompute the heatmap fact's attributions with the run's model when none is stored")
    p.add_argument("--threads", type=opt.threads, default=None, help="torch.set_num_threads for --recompute-heatmap")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("diff", help="compare the records two run folders have in common (e.g. sharded vs one process)")
    p.add_argument("run_a", type=opt.run_folder, help="first run folder")
    p.add_argument("run_b", type=opt.run_folder, help="second run folder")
    p.add_argument("--study", default="localization", help="the study whose records are compared (default localization)")
    p.set_defaults(func=cmd_diff)
