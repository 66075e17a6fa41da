"""The whole experiment: localize, intersect, run the protocols; the result and its files.

:func:`run_likn_experiment` orchestrates (localizations through the cache, measurements kept in
``out_dir/measurements.jsonl``); :class:`LIKNExperiment` holds the result, renders the report
(markdown) and saves / loads ``likn_results.json`` (NaN and inf survive the round trip).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..data import CAUSAL_MODES, Fact, prompt_drop_summary, prompt_languages
from ..loading import model_label
from ..localization import LocalizationCache, LocalizationSettings, model_fingerprint
from ..models import get_family
from ..store import RecordStore
from .controls import controls_markdown, likn_controls
from .protocols import PROTOCOLS, activation_protocol, value_protocol
from .report import LIKNReport, find_likn
from .sets import FactLIKN
from .statistics import aggregate, success_bootstrap, success_ratios
from .tables import activation_table, bootstrap_table, sturdy_table, value_table

__all__ = ["LIKNExperiment", "run_likn_experiment"]


@dataclass
class LIKNExperiment:
    """Everything :func:`run_likn_experiment` computed; ``save(dir)`` writes markdown + JSON."""

    config: dict
    likn: LIKNReport
    activation: list[dict] = field(default_factory=list)
    value: list[dict] = field(default_factory=list)

    def tables(self) -> dict:
        out = {}
        for name, recs in (("activation", self.activation), ("value", self.value)):
            if recs:
                out[name] = {subset: aggregate(recs, subset) for subset in ("likn", "all")}
        return out

    def to_json(self) -> dict:
        tables = self.tables()
        succ = {subset: success_ratios(tables["activation"][subset]) for subset in ("likn", "all")} if "activation" in tables else {}
        boot = {subset: success_bootstrap(self.activation, subset) for subset in ("likn", "all")} if self.activation else {}
        return dict(config=self.config, likn=self.likn.to_json(), tables=tables, success=succ,
                    success_bootstrap=boot, records=dict(activation=self.activation, value=self.value))

    def to_markdown(self, max_facts: int | None = 30) -> str:
        s = self.likn.summary()
        c = self.config
        parts = [f"# LIKN and cross-lingual editing: {model_label(c.get('model'))} (measured here)",
                 "",
                 f"{c.get('facts')} facts ({c.get('data', '')}), languages {', '.join(self.likn.languages)}, method "
                 f"{self.likn.method}, causal mode `{c.get('causal_mode')}`, {c.get('n_unrelated')} unrelated facts "
                 f"per fact, seed {c.get('seed')}.", ""]
        if c.get("cut_losses"):
            parts += ["Prompts that lose text after the mask in cut mode: " + ", ".join(
                f"{l} {v['lose_text']}/{v['prompts']}" for l, v in c["cut_losses"].items())
                + (" (scored in sentence mode: nothing lost)." if c.get("causal_mode") == "sentence" else "."), ""]
        parts += [f"Note: {n}" for n in c.get("notes", [])] + ([""] if c.get("notes") else [])
        parts += ["## Language-independent neurons", "", self.likn.to_markdown(max_facts=max_facts), "",
                  "## Overlap controls (every language pair)", "", controls_markdown(likn_controls(self.likn)), ""]
        tables = self.tables()
        n_likn = s["nonempty"]
        for subset, title in (("likn", f"facts with a non-empty LIKN ({n_likn})"), ("all", f"all {s['facts']} facts")):
            if "activation" in tables:
                parts += [f"## Suppression ×0 / enhancement ×2 at the target position — {title}", "",
                          activation_table(tables["activation"][subset]), "",
                          "Paired differences and medians (no division by the unrelated mean):", "",
                          sturdy_table(tables["activation"][subset]), "",
                          "The paper's success ratio with percentile-bootstrap intervals over facts:", "",
                          bootstrap_table(success_bootstrap(self.activation, subset)), ""]
            if "value" in tables:
                parts += [f"## Value-vector edit old → new (Dai et al.'s rule) — {title}", "",
                          value_table(tables["value"][subset]), ""]
        skipped = [r["fact_id"] for r in self.value if r.get("skipped")]
        if skipped:
            parts += [f"Value protocol: {len(skipped)} facts skipped (no candidate object that is the same in every "
                      f"language): {', '.join(skipped[:10])}{' …' if len(skipped) > 10 else ''}.", ""]
        parts += ["ΔP: mean over facts of (P_after − P_before)/P_before of the gold object, ± the 95% CI half-width; "
                  "related = the fact's own prompt, unrelated = the mean over other facts' prompts (same edit). "
                  "Success (paper's) = |related/unrelated| (enhance) + |related/unrelated| (suppress), as in the "
                  "paper's code; 'unstable' = an unrelated mean lies within its CI of 0, so the ratio divides by "
                  "noise. Accuracy = the gold object ranks first among the fact's candidate objects "
                  f"(log-prob {'per token' if c.get('rank_by') == 'mean' else 'sum'}); lost/gained = facts whose "
                  "accuracy flips. Mono-KN (A→B): A's neurons edited, measured in B; Own-KN (A): A's neurons, "
                  "measured in A (reference); Seq-KN: all languages' neurons edited together (value protocol: "
                  "one language after the other, nothing undone); Random: as many random neurons as the LIKN."]
        return "\n".join(parts) + "\n"

    @classmethod
    def load(cls, out_dir: str | Path) -> "LIKNExperiment":
        """Rebuild from ``out_dir/likn_results.json`` (no model needed): re-render with
        :meth:`save` / :meth:`to_markdown`."""
        with open(Path(out_dir) / "likn_results.json", encoding="utf-8") as fh:
            d = json.load(fh)
        lk = d["likn"]
        likn = LIKNReport(tuple(lk["languages"]), lk["method"], [FactLIKN.from_dict(f) for f in lk["facts"]],
                          num_layers=lk.get("num_layers"), ffn_width=lk.get("ffn_width"))
        return cls(d["config"], likn, _unjson(d["records"]["activation"]), _unjson(d["records"]["value"]))

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = dict(markdown=out / "likn_report.md", json=out / "likn_results.json", likn=out / "likn_neurons.json")
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        with open(paths["json"], "w", encoding="utf-8") as fh:
            json.dump(_jsonable(self.to_json()), fh, ensure_ascii=False, indent=1)
        with open(paths["likn"], "w", encoding="utf-8") as fh:
            json.dump(_jsonable(self.likn.to_json()), fh, ensure_ascii=False, indent=1)
        return paths


_NUMERIC = ("related", "unrelated", "log10_new_ratio", "logp_before", "logp_after", "logp_old_before",
            "logp_old_after", "logp_new_before", "logp_new_after")


def _unjson(records: list[dict]) -> list[dict]:
    """Per-fact records read back from JSON: NaN/inf (written as null / "inf") restored."""
    def num(v):
        if v is None:
            return float("nan")
        if isinstance(v, str) and v in ("inf", "-inf"):
            return float(v)
        return v

    for rec in records:
        for row in rec.get("rows", []):
            for k in _NUMERIC:
                if k in row:
                    row[k] = num(row[k])
            if "unrelated_each" in row:
                row["unrelated_each"] = [num(v) for v in row["unrelated_each"]]
    return records


def _jsonable(obj):
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def run_likn_experiment(model, tokenizer, facts: Sequence[Fact], langs: Sequence[str], *, method: str = "amig",
                        cache: LocalizationCache | bool | None = True, causal_mode: str = "cut",
                        protocols: Sequence[str] = PROTOCOLS, n_unrelated: int = 5, seed: int = 0,
                        rank_by: str = "mean", unrelated_accuracy: bool | Sequence[str] = (),
                        random_control: bool = True, out_dir: str | Path | None = None, progress: bool = True,
                        config: dict | None = None, localize_settings: dict | None = None,
                        lambda_old: float = 1.0, lambda_new: float = 8.0, signed: bool = True) -> LIKNExperiment:
    """Localize (cached), intersect, and run the editing protocols on the same facts.

    ``unrelated_accuracy``: the protocols (or True = both, False = none) that also rank the
    unrelated facts' candidates for accuracy flips on unrelated prompts (each unrelated
    candidate scored under every edit: about 4x the activation protocol's cost and 8x the
    value protocol's). ``lambda_old``/``lambda_new``/``signed``: the value-vector update
    (:func:`apply_value_edit`).

    With ``out_dir`` the measurements are kept in ``out_dir/measurements.jsonl`` (a second
    run reuses them) and the report is saved there (:meth:`LIKNExperiment.save`).
    """
    langs = list(dict.fromkeys(langs))
    if len(langs) < 2:
        raise ValueError(f"LIKN needs at least 2 languages, got {langs}")
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; use {list(PROTOCOLS)}")
    if len(facts) < 2:
        raise ValueError("the editing experiment needs at least 2 facts (unrelated prompts come from other facts)")
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    ids = [f.id for f in facts]
    if len(set(ids)) != len(ids):
        raise ValueError("fact ids must be unique")
    facts = [f.restrict(langs) for f in facts]
    settings = LocalizationSettings.of(localize_settings)
    if unrelated_accuracy is True or unrelated_accuracy is False:
        unrelated_accuracy = PROTOCOLS if unrelated_accuracy else ()
    unrelated_accuracy = tuple(unrelated_accuracy)
    with prompt_drop_summary(prompt_languages(facts, langs)):  # one warning per language, not one per prompt
        likn, _ = find_likn(model, tokenizer, facts, langs, method=method, cache=cache, causal_mode=causal_mode,
                            progress=progress, settings=settings)
        store = RecordStore(Path(out_dir) / "measurements.jsonl") if out_dir is not None else None
        common = dict(n_unrelated=n_unrelated, seed=seed, causal_mode=causal_mode, rank_by=rank_by,
                      random_control=random_control, store=store, progress=progress)
        act = (activation_protocol(model, tokenizer, facts, likn, unrelated_accuracy="activation" in unrelated_accuracy,
                                   **common) if "activation" in protocols else [])
        val = (value_protocol(model, tokenizer, facts, likn, unrelated_accuracy="value" in unrelated_accuracy,
                              lambda_old=lambda_old, lambda_new=lambda_new, signed=signed, **common)
               if "value" in protocols else [])
    cfg = dict(languages=langs, method=method, causal_mode=causal_mode, protocols=list(protocols),
               unrelated_accuracy=list(unrelated_accuracy), value_edit=dict(lambda_old=lambda_old, lambda_new=lambda_new,
                                                                            signed=signed),
               n_unrelated=n_unrelated, seed=seed, rank_by=rank_by, facts=len(facts), fact_ids=ids,
               localize_settings=settings.recorded(), model_fingerprint=model_fingerprint(get_family(model).model))
    cfg.update(config or {})
    exp = LIKNExperiment(cfg, likn, act, val)
    if out_dir is not None:
        exp.save(out_dir)
    return exp
