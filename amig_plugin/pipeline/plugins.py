"""Studies built on the DKN (``amig_plugin.dkn``, ``amig_plugin.factcheck``) and LIKN
(``amig_plugin.likn``) modules, registered when those modules can be imported.

* ``dkn`` (per fact, language and method): degenerate pairs among the fact's top-``k``
  neurons of its localization record (:func:`amig_plugin.dkn.detect_degenerate`).
* ``factcheck`` (per language and method, after every fact's ``dkn`` record exists): the
  fact-checking evaluator :func:`amig_plugin.factcheck.run_factcheck` over the run's facts,
  resumable through its own store ``RUN/stores/factcheck-<lang>-<method>.jsonl``.
* ``likn`` (per method, after all facts): the cross-lingual editing experiment of
  :func:`amig_plugin.likn.run_likn_experiment` on the run's facts (localizations come from
  the shared cache the run filled).
"""

from __future__ import annotations

import importlib
import inspect

from .config import ConfigError
from .studies import STUDIES, Study, _mean, register_study

AVAILABLE: dict[str, str] = {}


def _optional(name: str):
    try:
        return importlib.import_module(f"amig_plugin.{name}")
    except ImportError as exc:  # the module is not there (yet) or broken: the study is absent
        AVAILABLE[name] = f"unavailable: {exc}"
        return None


# ----------------------------------------------------------------------------------------
# DKN


def _check_dkn(options: dict, where: str) -> None:
    from ..dkn import check_thresholds

    if not isinstance(options["k"], int) or isinstance(options["k"], bool) or options["k"] < 2:
        raise ConfigError(f"{where}.k must be an integer >= 2 (pairs among the top-k neurons), got {options['k']!r}")
    try:
        check_thresholds(options["low"], options["high"])
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(options["grow"], bool):
        raise ConfigError(f"{where}.grow must be true or false, got {options['grow']!r}")


_SHARED_DKN_STORES: dict = {}


def _shared_dkn(ctx, fact, lang: str, method: str):
    """(store, key, record) of the DKN store that ``amig dkn`` / ``amig factcheck`` share
    (``<cache>/dkn/<model>/dkn.jsonl``), used when the run uses the localization cache: the
    same localization settings give the same top-k neurons, so their detections are reused
    (and this run's are added). (None, None, None) without the cache."""
    if ctx.cache is None or ctx.config.localization["objective"] != "prob":  # amig dkn scores P(gold)
        return None, None, None
    from ..dkn import default_store_dir, lookup_detection, model_key
    from ..store import RecordStore

    path = default_store_dir(ctx.model) / "dkn.jsonl"
    if path not in _SHARED_DKN_STORES:
        path.parent.mkdir(parents=True, exist_ok=True)
        _SHARED_DKN_STORES[path] = RecordStore(path)
    store = _SHARED_DKN_STORES[path]
    mkey = model_key(ctx.model)  # per call: another model (or changed weights) under the same name gets its own key
    loc = ctx.config.localize_settings(lang)
    settings = {k: v for k, v in loc.items() if k != "on_unconverged"}  # detections localize with the base policy
    opts = ctx.options
    key, record = lookup_detection(store, mkey, fact, lang, model=ctx.model, k=opts["k"], low=opts["low"], high=opts["high"],
                                   method=method, settings=settings, grow=opts["grow"],
                                   max_set_size=opts["max_set_size"])
    return store, key, (record if record is not None and "result" in record else None)


def dkn_compute(ctx, fact, unit: dict) -> dict:
    from ..dkn import DKNResult, detect_degenerate

    lang, method = unit["lang"], unit["method"]
    opts = ctx.options
    loc = ctx.record("localization", fact.id, lang, method)
    top = loc["top"]
    if opts["k"] > ctx.config.localization["top_k"]:
        raise ValueError(f"dkn.k = {opts['k']} > localization.top_k = {ctx.config.localization['top_k']}: "
                         "raise localization.top_k")
    neurons = [(int(l), int(i)) for l, i, _ in top[:opts["k"]]]
    store, key, shared = _shared_dkn(ctx, fact, lang, method)
    if shared is not None and [tuple(n) for n in shared["result"]["neurons"]] == neurons:
        result = DKNResult.from_dict(shared["result"])
    else:
        result = detect_degenerate(ctx.model, ctx.tokenizer, list(fact.prompts[lang]), fact.target(lang), neurons,
                                   low=opts["low"], high=opts["high"], objective=ctx.config.localization["objective"],
                                   batch_size=opts["batch_size"], grow=opts["grow"],
                                   max_set_size=opts["max_set_size"], lang=lang, fact_id=fact.id,
                                   relation=fact.relation)
    result.k_requested = opts["k"]
    if shared is None and store is not None:
        from ..dkn import put_detection

        put_detection(store, key, {"fact_id": fact.id, "lang": lang, "relation": fact.relation, "result": result.to_dict(),
                        "warnings": []})
    out = result.to_dict()
    out["degenerate_neurons"] = [list(n) for n in result.degenerate_neurons]
    return out


def dkn_summary(records: list[dict], config) -> list[dict]:
    from ..dkn import DKNResult, layer_summary

    rows = []
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["lang"]), []).append(r)
    for (method, lang), recs in sorted(groups.items()):
        ok = [DKNResult.from_dict(r["result"]) for r in recs if r["status"] == "ok"]
        s = layer_summary(ok) if ok else {}
        rows.append(dict(method=method, lang=lang, facts=len(recs), failed=len(recs) - len(ok),
                         facts_with_pairs=s.get("facts_with_pairs", 0), pairs=s.get("pairs", 0),
                         pairs_per_fact=s.get("pairs_per_fact_mean", float("nan")),
                         same_layer_pairs=s.get("same_layer_pairs", 0),
                         pairs_beyond_independent=s.get("pairs_beyond_independent", 0),
                         median_p0=s.get("p0_median", float("nan")),
                         seconds_per_fact=_mean([r["meta"]["seconds"] for r in recs if r["status"] == "ok"])))
    return rows


# ----------------------------------------------------------------------------------------
# fact-checking


def _check_factcheck(options: dict, where: str) -> None:
    from ..factcheck import check_fractions, check_lambda

    try:
        check_lambda(options["lam"])
        check_fractions(options["fractions"])
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(options["n_wrong"], int) or options["n_wrong"] < 1:
        raise ConfigError(f"{where}.n_wrong must be a positive integer, got {options['n_wrong']!r}")
    if options["no_dkn"] not in ("topk", "skip"):
        raise ConfigError(f"{where}.no_dkn must be 'topk' or 'skip', got {options['no_dkn']!r}")


def factcheck_compute(ctx, fact, unit: dict) -> dict:
    from ..dkn import DKNResult
    from ..factcheck import run_factcheck
    from ..store import RecordStore

    lang, method = unit["lang"], unit["method"]
    opts = ctx.options
    results = {}
    for f in ctx.facts:
        rec = ctx.lookup(_key("dkn", f.id, lang, method))
        if rec is not None and rec.get("status") == "ok":
            results[f.id] = DKNResult.from_dict(rec["result"])
    store = None
    if ctx.run_dir is not None:
        store = RecordStore(ctx.run_dir.path / "stores" / f"factcheck-{lang}-{method}.jsonl", allow_duplicates=True)
    report, checker = run_factcheck(
        ctx.model, ctx.tokenizer, ctx.facts, lang, results, pool=ctx.facts, store=store,
        fractions=opts["fractions"], lam=opts["lam"], n_wrong=opts["n_wrong"], seed=ctx.config.seed,
        steps=ctx.config.localization["steps"], method=method, objective=ctx.config.localization["objective"],
        no_dkn=opts["no_dkn"], min_facts=opts["min_facts"], progress=ctx.config.progress)
    out = report.to_dict()
    out.pop("queries", None)
    out["checker"] = checker.to_dict()
    out["facts_with_dkn_record"] = len(results)
    return out


def factcheck_summary(records: list[dict], config) -> list[dict]:
    rows = []
    for r in records:
        if r["status"] != "ok":
            rows.append(dict(lang=r["lang"], method=r["method"], checker="-", error=r.get("error")))
            continue
        for name, c in r["result"]["overall"].items():
            rows.append(dict(lang=r["lang"], method=r["method"], checker=name, relations=len(r["result"]["per_relation"]),
                             queries=c["tp"] + c["fp"] + c["fn"] + c["tn"], precision=c["precision"],
                             recall=c["recall"], f1=c["f1"], macro_f1=c["macro_f1"]))
    return rows


# ----------------------------------------------------------------------------------------
# LIKN editing experiment


def likn_compute(ctx, fact, unit: dict) -> dict:
    """The LIKN editing experiment over the run's facts (run stage): localizations come from
    the shared cache the localization study filled (same settings); measurements are kept
    in ``RUN/stores/likn-<method>/`` so that a killed experiment resumes."""
    from .. import likn

    method = unit["method"]
    opts = ctx.options
    tau = ctx.config.localization["tau"]
    if isinstance(tau, dict):
        raise ValueError("the likn study localizes with one tau for every language: set localization.tau to a "
                         "number or null (the paper's per-language default)")
    settings = {k: v for k, v in ctx.config.localize_settings(ctx.config.languages[0]).items()}
    settings["tau"] = tau
    out_dir = ctx.run_dir.path / "stores" / f"likn-{method}" if ctx.run_dir is not None else None
    kwargs = dict(method=method, cache=ctx.cache if ctx.cache is not None else False, protocols=tuple(opts["protocols"]),
                  n_unrelated=opts["n_unrelated"], seed=ctx.config.seed, out_dir=out_dir, progress=ctx.config.progress,
                  localize_settings=settings, config={"model": ctx.config.model, "data": ctx.config.data.get("path") or "shipped"})
    params = inspect.signature(likn.run_likn_experiment).parameters
    experiment = likn.run_likn_experiment(ctx.model, ctx.tokenizer, ctx.facts, ctx.config.languages,
                                          **{k: v for k, v in kwargs.items() if k in params})
    out = likn._jsonable(experiment.to_json())
    out.pop("records", None)  # per-edit measurements stay in the store (large)
    return out


def likn_summary(records: list[dict], config) -> list[dict]:
    rows = []
    for r in records:
        if r["status"] != "ok":
            rows.append(dict(method=r["method"], error=r.get("error")))
            continue
        for protocol, subsets in r["result"].get("tables", {}).items():
            for subset, table in subsets.items():
                for row in table:
                    rows.append({"method": r["method"], "protocol": protocol, "facts_subset": subset,
                                 **{k: v for k, v in row.items() if not isinstance(v, (dict, list))}})
    return rows


def _key(study, fact_id, lang, method):
    from .studies import unit_key

    return unit_key(study, fact_id, lang, method)


def register_available() -> None:
    if _optional("dkn") is not None and "dkn" not in STUDIES:
        AVAILABLE["dkn"] = "registered"
        register_study(Study(
            "dkn", dkn_compute, dkn_summary, per="lang_method", requires=("localization",),
            defaults={"k": 20, "low": 0.2, "high": 0.25, "grow": False, "max_set_size": 4, "batch_size": 256},
            check=_check_dkn,
            description="degenerate pairs among each fact's top-k neurons (amig_plugin.dkn)"))
    if _optional("factcheck") is not None and "dkn" in STUDIES and "factcheck" not in STUDIES:
        AVAILABLE["factcheck"] = "registered"
        register_study(Study(
            "factcheck", factcheck_compute, factcheck_summary, per="lang_method", stage="run", requires=("dkn",),
            defaults={"lam": 0.7, "fractions": [1, 1, 1], "n_wrong": 1, "no_dkn": "topk", "min_facts": 3},
            check=_check_factcheck,
            description="fact-checking with relation-level DKN vs likelihood baselines (amig_plugin.factcheck)"))
    likn = _optional("likn")
    if likn is not None and hasattr(likn, "run_likn_experiment") and "likn" not in STUDIES:
        AVAILABLE["likn"] = "registered"
        register_study(Study(
            "likn", likn_compute, likn_summary, per="method", stage="run", requires=("localization",), min_languages=2,
            defaults={"n_unrelated": 5, "protocols": ["activation"]},
            description="cross-lingual editing: LIKN vs Mono-KN vs Seq-KN (amig_plugin.likn)"))


register_available()
