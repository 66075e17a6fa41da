"""Units of a run: one (study, fact, language, method) each; which units a rank computes
(:func:`plan_units`) and the latest attempt of each (:func:`latest`).

Used by the engine (what to compute) and by the merge (what should be there); it imports
neither of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .registry import STUDIES, unit_key

RUN_FACT = "*"  # fact id of the units of run-stage studies


@dataclass
class Unit:
    study: str
    fact_index: int
    fact_id: str
    lang: str | None
    method: str | None

    @property
    def key(self) -> str:
        return unit_key(self.study, self.fact_id, self.lang, self.method)


def plan_units(config: RunConfig, facts, rank: int = 0, world: int = 1) -> list[Unit]:
    """The units of ``rank``: per fact (i % world == rank), each study in dependency order;
    then (rank 0) the units of run-stage studies."""
    units = []
    for i, fact in enumerate(facts):
        if i % world != rank:
            continue
        for name in config.studies:
            if STUDIES[name].stage == "fact":
                for u in STUDIES[name].units(config.languages, config.methods):
                    units.append(Unit(name, i, fact.id, u["lang"], u["method"]))
    if rank == 0:
        for name in config.studies:
            if STUDIES[name].stage == "run":
                for u in STUDIES[name].units(config.languages, config.methods):
                    units.append(Unit(name, -1, RUN_FACT, u["lang"], u["method"]))
    return units


def latest(records: dict[str, dict]) -> dict[str, dict]:
    """unit key -> its last attempt (records of retried units carry ``attempt`` > 1)."""
    out: dict[str, dict] = {}
    for rec in records.values():
        base = rec.get("unit", rec["key"])
        if base not in out or rec.get("attempt", 1) > out[base].get("attempt", 1):
            out[base] = rec
    return out
