"""Fact-checking one language end to end (:func:`run_factcheck`, Chen et al. 2024, Table 3).

Protocol, per language:

1. **Facts and wrong facts.** Each checked fact gives one true query (its prompt with the
   gold object) and ``n_wrong`` wrong queries: other objects of the same relation
   (BMLAMA's candidate lists, else the relation's objects), never an object that is true
   for the same subject and relation (:func:`~amig_plugin.factcheck.wrong_candidates`), chosen with a seed.
2. **Split, per relation**: the relation's facts (in sample order) are cut into a DKN part,
   a dev part and a test part (``fractions``, default 1/3 each; at least one fact each,
   so a relation needs ``min_facts = 3``; relations with fewer are skipped and listed).
3. **Relation-level DKN**: the neurons that recur in the degenerate pairs of the DKN part's
   facts: count (number of facts whose pairs contain the neuron) > ``lam`` × max count
   (λ = 0.7). If the DKN part has no degenerate pair at all, the documented fallback
   ``no_dkn="topk"`` uses the recurring top-k neurons by the same rule (flagged
   ``source = "topk"`` in the report); ``no_dkn="skip"`` leaves the relation out.
4. **Score** of (query, candidate) = mean AMIG attribution of those neurons, with the
   query's prompt and the candidate as target, IG restricted to the layers of those neurons
   (per-layer IG is exact per layer, so this equals the full attribution on those neurons).
5. **Threshold**: per relation, the one that maximises F1 on the dev part's queries
   (:func:`~amig_plugin.factcheck.choose_threshold`); the test part is never looked at (the paper's code tuned on
   the test set). "True" iff score > threshold.
6. **Baselines without DKN** on the same test queries: ``wo_DKN_exact_match`` (the paper's:
   the model's greedy continuation of the prompt reproduces the candidate's tokens; it
   almost never does for a small model, nor in Chinese), ``wo_DKN_likelihood_rank`` (per
   fact, the candidate with the highest log P(candidate | prompt) among the true and wrong
   ones is judged true, the others false: the fairer baseline) and
   ``likelihood_threshold`` (log P thresholded on dev exactly like the DKN score: the
   like-for-like control; does DKN add anything beyond the likelihood?).
7. **Causal mode** (causal LMs; ``causal_mode``, as in ``amig likn`` and ``amig dkn``):
   ``"cut"`` (default) scores each candidate as P(candidate | prefix); ``"sentence"`` scores
   (prefix, candidate + rest of the sentence) in the DKN attribution and the log-likelihood
   (:func:`~amig_plugin.factcheck.candidate_query`), for languages whose mask stands mid-sentence. The exact-match
   baseline asks whether greedy generation from the prefix reproduces the candidate: the
   same question in both modes. Masked LMs: no effect.
8. **Metrics**: the positive class is "the fact is true"; precision = TP / (TP + FP),
   recall = TP / (TP + FN) (the paper's code swapped them), F1; 0 when undefined
   (no predicted / no actual positives). Per relation, overall (micro: confusion counts
   summed over relations) and macro F1 (mean over relations).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from tqdm.auto import tqdm

from ..data import Fact, prompt_drop_summary
from ..defaults import DEFAULT_QUADRATURE, DEFAULT_STEPS
from ..dkn import FACT_ERRORS, DKNResult, effective_causal_mode, model_key
from ..likelihood import likelihood
from ..neurons import Neuron
from ..store import content_key
from .checker import DEFAULT_LAMBDA, FactChecker, check_lambda, dkn_score, relation_dkn
from .queries import DEFAULT_FRACTIONS, TooFewFactsError, _object_part, build_queries, candidate_query, check_fractions, split_facts
from .report import FactCheckReport, evaluate_queries


def _key(*parts) -> str:
    return content_key(list(parts))


def _stored(store, key: str, compute, *args, **kwargs) -> dict:
    """The record under ``key`` in ``store``, else ``compute(*args, **kwargs)`` (added to the
    store when there is one)."""
    rec = store.get(key) if store is not None else None
    if rec is None:
        rec = compute(*args, **kwargs)
        if store is not None:
            store.add(key, rec)
    return rec


def _lm_record(model, tokenizer, query: tuple[str, str], prompt: str, mode: str) -> dict:
    """log P of the scored query; in sentence mode with the exact-match baseline of the
    candidate alone (greedy generation from the prefix reproduces the candidate: as in cut mode)."""
    rec = likelihood(model, tokenizer, *query)
    if mode != "cut":
        alone = likelihood(model, tokenizer, *_object_part(query, prompt))
        rec = {**rec, "exact_match": alone["exact_match"], "greedy": alone["greedy"], "logprob_candidate": alone["logprob"]}
    return rec



def run_factcheck(model, tokenizer, facts: Sequence[Fact], lang: str, dkn_results: Mapping[str, DKNResult], *,
                  pool: Sequence[Fact] | None = None, store=None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  lam: float = DEFAULT_LAMBDA, n_wrong: int = 1, seed: int = 0, steps: int = DEFAULT_STEPS,
                  quadrature: str = DEFAULT_QUADRATURE, method: str = "amig",
                  objective: str = "prob", no_dkn: str = "topk", min_facts: int = 3,
                  progress: bool = True, causal_mode: str = "cut") -> tuple[FactCheckReport, FactChecker]:
    """The whole evaluator for one language (see the module docstring).

    ``facts``: the studied facts in order (facts without a detection in ``dkn_results`` are
    left out: they could not be used in ``lang``). ``store``: a
    :class:`~amig_plugin.store.RecordStore` that makes the scoring resumable. ``causal_mode``:
    see the module docstring; it is part of every scoring record key (cut-mode keys are those
    of earlier versions)."""
    lam = check_lambda(lam)
    mode = effective_causal_mode(model, causal_mode)
    mode_key = [["causal_mode", mode]] if mode != "cut" else []
    fractions = check_fractions(fractions)
    usable = [f for f in facts if f.id in dkn_results]
    if not usable:
        raise TooFewFactsError(f"none of the {len(facts)} facts has a DKN detection in {lang!r} (all unusable in "
                               "this language?); nothing to fact-check")
    splits, skipped = split_facts(usable, fractions, min_facts)
    neurons: dict[str, list[Neuron]] = {}
    source: dict[str, str] = {}
    for rel in list(splits):
        ns, src = relation_dkn([dkn_results[f.id] for f in splits[rel]["dkn"]], lam, no_dkn)
        if not ns:
            skipped[rel] = "the DKN part has no degenerate pair" + (" nor recurring top-k neuron" if no_dkn == "topk" else "")
            del splits[rel]
            continue
        neurons[rel], source[rel] = ns, src
    if not splits:
        raise TooFewFactsError("no relation left to fact-check: " + "; ".join(f"{r}: {w}" for r, w in skipped.items()))
    queries, facts_skipped = build_queries(splits, lang, pool if pool is not None else facts, n_wrong=n_wrong, seed=seed)
    mkey = model_key(model)
    scored = []
    with prompt_drop_summary(lang):  # one warning for the language, not one per prompt
        for q in tqdm(queries, desc=f"fact-check [{lang}]", disable=not progress):
            rel_neurons = neurons[q["relation"]]
            q = dict(q)
            try:
                query = candidate_query(q["prompt"], q["candidate"], mode)
                k_dkn = _key("fc-dkn-v1", mkey, q["prompt"], q["candidate"], rel_neurons, method, steps, objective, quadrature,
                             *mode_key)
                rec = _stored(store, k_dkn, dkn_score, model, tokenizer, *query, rel_neurons, method=method, steps=steps,
                              objective=objective, quadrature=quadrature)
                q["dkn"] = rec["mean"]
                k_lm = _key("fc-lm-v1", mkey, q["prompt"], q["candidate"], *mode_key)
                rec = _stored(store, k_lm, _lm_record, model, tokenizer, query, q["prompt"], mode)
                q["logprob"], q["exact_match"] = rec["logprob"], rec["exact_match"]
            except FACT_ERRORS as exc:
                facts_skipped[q["fact_id"]] = f"{type(exc).__name__}: {exc}"
                continue
            scored.append(q)
    scored = [q for q in scored if q["fact_id"] not in facts_skipped]  # keep facts whole (true + wrong)
    report = evaluate_queries(scored, lang)
    report.neurons = {r: neurons[r] for r in report.per_relation}
    report.neuron_source = {r: source[r] for r in report.per_relation}
    report.skipped = skipped
    report.facts_skipped = facts_skipped
    report.settings = dict(lang=lang, fractions=list(fractions), lam=lam, n_wrong=n_wrong, seed=seed, steps=steps,
                           quadrature=quadrature, method=method, objective=objective, no_dkn=no_dkn, min_facts=min_facts,
                           causal_mode=mode,
                           split_sizes={r: {p: len(v) for p, v in parts.items()} for r, parts in splits.items()})
    templates = {f.relation: f.relation_name for f in usable}
    checker = FactChecker(
        relations={r: {"neurons": [list(n) for n in neurons[r]], "threshold": report.thresholds[r]["with_DKN"],
                       "source": source[r], "template": templates.get(r, "")}
                   for r in report.per_relation if "with_DKN" in report.thresholds.get(r, {})},
        lang=lang, model=mkey, settings=dict(method=method, steps=steps, quadrature=quadrature, objective=objective, lam=lam,
                                             causal_mode=mode),
    )
    return report, checker
