"""Runs at scale: a YAML config -> a resumable, shardable run folder -> merged results.

    from amig_plugin.pipeline import load_config, run, merge_run
    result = run(load_config("configs/bmlama300_gemma.yaml"), "runs/bmlama300")

See ``docs/runs.md``. Modules, each importing only those above it:

- :mod:`.registry`: the study registry (:class:`Study`, :func:`register_study`) and :class:`ConfigError`
- :mod:`.config`: config keys and validation (study names checked against the registry)
- :mod:`.studies`: the built-in studies (localization, effect, LIKN overlap); :mod:`.plugins`: LIKN
  editing, DKN and fact-checking studies
- :mod:`.folder`: the run folder layout; :mod:`.units`: which units a rank computes
- :mod:`.merge`: joining shards, the summary; :mod:`.engine`: sharding, resume, running
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
