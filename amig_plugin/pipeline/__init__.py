"""Runs at scale: a YAML config -> a resumable, shardable run folder -> merged results.

    from amig_plugin.pipeline import load_config, run, merge_run
    result = run(load_config("configs/bmlama300_gemma.yaml"), "runs/bmlama300")

See ``docs/runs.md``; modules: :mod:`.config` (keys and validation), :mod:`.studies`
(what is computed; :func:`register_study` adds one), :mod:`.engine` (sharding, resume),
:mod:`.folder` (the run folder layout), :mod:`.merge` (joining shards, the summary).
"""

from .config import ConfigError, RunConfig, load_config, parse_config
from .engine import load_run_facts, plan_units, run
from .folder import RunFolder, RunLocked
from .merge import IncompleteRunError, format_summary, merge_run
from .studies import STUDIES, DependencyError, Study, StudyContext, register_study, unit_key
from . import plugins as _plugins  # noqa: F401  (registers LIKN / DKN / fact-checking studies when present)

__all__ = [
    "ConfigError", "RunConfig", "load_config", "parse_config", "run", "load_run_facts", "plan_units",
    "RunFolder", "RunLocked", "merge_run", "format_summary", "IncompleteRunError", "STUDIES", "Study",
    "StudyContext", "DependencyError", "register_study", "unit_key",
]
