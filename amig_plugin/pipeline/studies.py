"""Studies: what a run computes, one JSON record per fact and unit.

A :class:`Study` is a per-fact function ``compute(ctx, fact, unit) -> dict`` (the record's
``result``) plus an optional ``summarize(records, config) -> list[dict]`` (table rows over
the merged records). ``unit`` says how often the function runs per fact:

=================  ===============================================  ========================
``per``            units per fact                                   example
=================  ===============================================  ========================
``lang_method``    one per (language, method)                      localization, effect
``lang``           one per language                                (a method-free study)
``method``         one per method, all languages at once           LIKN overlap
``fact``           one                                             -
=================  ===============================================  ========================

``stage="run"`` studies (fact-checking, the LIKN editing experiment) need the records of
every fact: they run once per unit (``fact_id = "*"``), on rank 0, after all ranks have
finished their facts; ``fact`` is then ``None``.

``ctx.record(study, fact_id, lang, method)`` returns another study's result for the same
fact (``requires`` makes sure it is computed first, in the same process); a failed
dependency makes this unit fail too, with a clear error. New studies (LIKN editing, DKN,
fact-checking) plug in with :func:`register_study`.
"""

from __future__ import annotations

import math
import random

from .registry import (PER_KINDS, STUDIES, ConfigError, DependencyError, Study, StudyContext,  # noqa: F401 (re-exported)
                       register_study, unit_key)

# ----------------------------------------------------------------------------------------
# localization


def _localize_one(ctx: StudyContext, fact, lang: str, method: str, with_attributions: bool):
    from ..localization import localize_fact

    settings = ctx.config.localize_settings(lang)
    if with_attributions:
        return localize_fact(ctx.model, ctx.tokenizer, fact, lang, method=method, settings=settings,
                             return_attributions=True)
    return localize_fact(ctx.model, ctx.tokenizer, fact, lang, method=method, settings=settings, cache=ctx.cache), None


def localization_compute(ctx: StudyContext, fact, unit: dict) -> dict:
    import torch

    lang, method = unit["lang"], unit["method"]
    heatmap = ctx.fact_index.get(fact.id, 1 << 30) < ctx.config.localization["heatmap_facts"]
    kn, results = _localize_one(ctx, fact, lang, method, with_attributions=heatmap)
    d = kn.to_dict()
    out = {k: d[k] for k in ("neurons", "scores", "target", "prompts", "top", "per_prompt",
                             "completeness_residuals", "layer_relative_residuals", "residual_tolerance",
                             "clean_scores", "settings", "model_id")}
    out["converged"] = kn.converged
    out["layers"] = sorted({l for l, _ in kn.neurons})
    if heatmap and ctx.run_dir is not None:
        mean = torch.stack([r.attributions for r in results]).mean(0)
        name = attribution_file(fact.id, lang, method)
        ctx.run_dir.save_tensor(name, {"attributions": mean, "layers": results[0].layers,
                                       "fact_id": fact.id, "lang": lang, "method": method,
                                       "prompts": list(fact.prompts[lang]), "target": fact.target(lang)})
        out["attributions_file"] = name
    return out


def attribution_file(fact_id: str, lang: str, method: str) -> str:
    import re

    return "attributions/" + re.sub(r"[^A-Za-z0-9._-]+", "_", f"{fact_id}.{lang}.{method}") + ".pt"


def _by_method_lang(records: list[dict]):
    """(method, lang, the group's records, the ``result`` of its ok records), sorted by (method, lang)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["lang"]), []).append(r)
    for (method, lang), recs in sorted(groups.items()):
        yield method, lang, recs, [r["result"] for r in recs if r["status"] == "ok"]


def localization_summary(records: list[dict], config) -> list[dict]:
    rows = []
    for method, lang, recs, ok in _by_method_lang(records):
        sizes = [len(r["neurons"]) for r in ok]
        residuals = [max(r["completeness_residuals"]) for r in ok if r["completeness_residuals"]]
        probs = [r["clean_scores"][0] for r in ok if r["clean_scores"]]
        relative = [max(x for rs in r["layer_relative_residuals"] for x in rs) for r in ok
                    if r.get("layer_relative_residuals")]
        rows.append(dict(
            method=method, lang=lang, facts=len(recs), failed=len(recs) - len(ok),
            mean_neurons=_mean(sizes), median_neurons=_median(sizes), empty=sum(s == 0 for s in sizes),
            mean_p_gold=_mean(probs), max_residual=max(residuals) if residuals else float("nan"),
            max_rel_residual=max(relative) if relative else float("nan"),
            unconverged=sum(r.get("converged") is False for r in ok),
            seconds_per_fact=_mean([r["meta"]["seconds"] for r in recs if r["status"] == "ok"]),
        ))
    return rows


# ----------------------------------------------------------------------------------------
# localization effect (suppress / enhance; related vs unrelated prompts; random control)


def _check_effect(options: dict, where: str) -> None:
    from ..intervene import MODE_FACTORS

    for mode in options["modes"]:
        if mode not in MODE_FACTORS:
            raise ConfigError(f"{where}.modes: unknown mode {mode!r}; valid: {', '.join(MODE_FACTORS)}")
    if not isinstance(options["n_unrelated"], int) or options["n_unrelated"] < 0:
        raise ConfigError(f"{where}.n_unrelated must be an integer >= 0, got {options['n_unrelated']!r}")
    if not isinstance(options["random"], bool):
        raise ConfigError(f"{where}.random must be true or false, got {options['random']!r}")


def effect_compute(ctx: StudyContext, fact, unit: dict) -> dict:
    """Relative change of P(gold), (P' - P) / P, with the fact's neurons suppressed (x0) /
    enhanced (x2) at the target position: on the fact's own prompts (related) and on the
    first prompt of ``n_unrelated`` other facts of the run (unrelated; a seeded choice per
    fact, the same whatever the sharding); the same for a random neuron set of equal size.
    An unrelated prompt the model cannot read (e.g. longer than its positions) is left out
    and named, with the reason, in ``skipped_unrelated`` (:func:`amig_plugin.intervene.fact_effect`)."""
    from ..intervene import fact_effect, random_control_set, unrelated_sample
    from ..models import get_family

    lang, method = unit["lang"], unit["method"]
    opts = ctx.options
    loc = ctx.record("localization", fact.id, lang, method)
    sets = {method: [tuple(n) for n in loc["neurons"]]}
    seed = ctx.config.seed
    if opts["random"]:
        sets["random"] = random_control_set(get_family(ctx.model), len(sets[method]), seed, fact.id, lang, method,
                                            layers=ctx.config.localization["layers"])
    pool = [f for f in ctx.facts if lang in f.prompts]
    unrelated = unrelated_sample(fact.id, pool, opts["n_unrelated"], seed, id_of=lambda f: f.id)
    out = fact_effect(ctx.model, ctx.tokenizer, [(p, fact.target(lang)) for p in fact.prompts[lang]],
                      [(f.id, f.prompts[lang][0], f.target(lang)) for f in unrelated], sets, opts["modes"])
    out = {"sizes": {name: len(s) for name, s in sets.items()}, **out}
    if opts["random"]:
        out["random_neurons"] = [list(n) for n in sets["random"]]
    return out


def effect_summary(records: list[dict], config) -> list[dict]:
    from ..intervene import effect_row

    rows = []
    for method, lang, recs, ok in _by_method_lang(records):
        failed = len(recs) - len(ok)
        names = list(dict.fromkeys(n for r in ok for n in r["related"]))
        modes = list(dict.fromkeys(m for r in ok for n in r["related"] for m in r["related"][n]))
        for name in names:
            for mode in modes:
                related = [r["related"].get(name, {}).get(mode) for r in ok]
                unrelated = [r["unrelated"].get(name, {}).get(mode) for r in ok]
                row = effect_row(related, unrelated, [r["sizes"][name] for r in ok], seed=getattr(config, "seed", 0))
                rows.append(dict(method=method, lang=lang, neurons=name, mode=mode, facts=len(ok), failed=failed, **row))
    return rows


# ----------------------------------------------------------------------------------------
# LIKN overlap (language-independent neurons = intersection of a fact's sets over languages)


def likn_overlap_compute(ctx: StudyContext, fact, unit: dict) -> dict:
    """The fact's LIKN (intersection of its neuron sets over the languages), with what the
    run-level controls need: the per-language sets, the relation and the model's shape."""
    from ..models import get_family

    method = unit["method"]
    sets = {lang: {tuple(n) for n in ctx.record("localization", fact.id, lang, method)["neurons"]}
            for lang in ctx.config.languages}
    langs = list(sets)
    inter = set.intersection(*sets.values()) if sets else set()
    union = set.union(*sets.values()) if sets else set()
    family = get_family(ctx.model)
    return {"languages": langs, "sizes": {l: len(s) for l, s in sets.items()},
            "intersection": sorted([list(n) for n in inter]), "size": len(inter),
            "union_size": len(union), "jaccard": len(inter) / len(union) if union else float("nan"),
            "layers": sorted(l for l, _ in inter), "relation": fact.relation,
            "per_lang": {l: sorted([list(n) for n in s]) for l, s in sets.items()},
            "num_layers": family.num_layers, "ffn_width": family.ffn_width}


#: A neuron in the LIKN of at least this many facts is a hub (as in ``amig likn``).
HUB_MIN_FACTS = 3


def likn_overlap_controls(records: list[dict], hub_min_facts: int = HUB_MIN_FACTS) -> dict:
    """The controls of ``amig likn`` (:func:`amig_plugin.likn.likn_controls`: shuffled facts of
    the same / another relation, layer-matched and uniform chance, hub neurons and every
    pair without them) over one method's ok records. ``{"unavailable": reason}`` when the
    records lack the per-language sets (made by an older version: rerun the study)."""
    from ..likn import FactLIKN, LIKNReport, likn_controls

    ok_records = [r for r in records if r["status"] == "ok"]
    ok = [r["result"] for r in ok_records]
    if not ok:
        return {"unavailable": "no ok record"}
    old = sum("per_lang" not in r or "num_layers" not in r for r in ok)
    if old:
        return {"unavailable": f"{old} of {len(ok)} records lack the per-language sets (made by an older version); "
                               "delete results and records of likn_overlap and rerun `amig run` to compute the controls"}
    langs = tuple(ok[0]["languages"])
    facts = [FactLIKN(str(rec.get("fact_id", i)), rec["result"]["relation"], langs, rec["result"]["per_lang"],
                      rec["result"]["intersection"]) for i, rec in enumerate(ok_records)]
    report = LIKNReport(langs, "", facts, num_layers=ok[0]["num_layers"], ffn_width=ok[0]["ffn_width"])
    return likn_controls(report, hub_min_facts=hub_min_facts)


def likn_overlap_summary(records: list[dict], config) -> list[dict]:
    """One row per method: LIKN sizes, and under ``controls`` the overlap controls of
    :func:`likn_overlap_controls` (also as flat columns for the first language pair: same-fact
    overlap, shuffled same / other relation, layer-matched and uniform chance, hubs)."""
    rows = []
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["method"], []).append(r)
    for method, recs in sorted(groups.items()):
        ok = [r["result"] for r in recs if r["status"] == "ok"]
        sizes = [r["size"] for r in ok]
        row = dict(method=method, facts=len(recs), failed=len(recs) - len(ok),
                   nonempty=sum(s > 0 for s in sizes), empty=sum(s == 0 for s in sizes),
                   mean_size=_mean(sizes), mean_jaccard=_mean([r["jaccard"] for r in ok if _finite(r["jaccard"])]),
                   **{f"mean_size_{l}": _mean([r["sizes"][l] for r in ok]) for l in (ok[0]["languages"] if ok else [])})
        controls = likn_overlap_controls(recs)
        if controls.get("pairs"):
            first = controls["pairs"][0]
            row.update(pair="-".join(first["languages"]), same_fact_overlap=first["matched"],
                       shuffled_same_relation=first["shuffled_same_relation"],
                       shuffled_other_relation=first["shuffled_other_relation"],
                       layer_matched_chance=first["layer_matched_chance"], uniform_chance=first["uniform_chance"],
                       excess_same_relation=first.get("excess_same_relation"),
                       excess_same_relation_ci=first.get("excess_same_relation_ci"),
                       hubs=controls["hub_count"], nonempty_without_hubs=controls.get("nonempty_without_hubs", row["nonempty"]))
        row["controls"] = controls
        rows.append(row)
    return rows


def likn_overlap_markdown(rows: list[dict]) -> str:
    """The controls of each method's row as markdown (:func:`amig_plugin.likn.controls_markdown`)."""
    from ..likn import controls_markdown

    out = []
    for row in rows:
        c = row.get("controls")
        if c is None:
            continue
        out += [f"### LIKN overlap controls ({str(row.get('method', '')).upper()})", ""]
        out.append(f"_{c['unavailable']}_" if "unavailable" in c else controls_markdown(c))
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------
# helpers


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean(values) -> float:
    values = [v for v in values if _finite(v)]
    return sum(values) / len(values) if values else float("nan")


def _median(values) -> float:
    values = sorted(v for v in values if _finite(v))
    if not values:
        return float("nan")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


register_study(Study(
    "localization", localization_compute, localization_summary, per="lang_method",
    description="knowledge neurons of each fact in each language and method (AMIG / KN)"))
register_study(Study(
    "effect", effect_compute, effect_summary, per="lang_method", requires=("localization",),
    defaults={"n_unrelated": 5, "modes": ["suppress", "enhance"], "random": True}, check=_check_effect,
    description="relative change of P(gold) when the neurons are suppressed / enhanced, vs random sets"))
register_study(Study(
    "likn_overlap", likn_overlap_compute, likn_overlap_summary, per="method", requires=("localization",),
    min_languages=2, description="language-independent neurons: intersection of each fact's neuron sets over languages"))
