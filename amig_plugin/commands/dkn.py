"""``amig dkn`` (degenerate knowledge neurons) and ``amig factcheck`` (fact-checking with them).

    amig dkn       --model M --data D --langs L [--n 200] [--k 20] [--low 0.2] [--high 0.25] [--grow]
                   [--causal-mode cut|sentence]
    amig factcheck --model M --data D --langs L [--n 200] [--lam 0.7] [--split 1,1,1] [--n-wrong 1]
                   [--causal-mode cut|sentence]

``--data``: a BMLAMA-style folder of ``<lang>.tsv`` files (e.g. BMLAMA-17), a
fact file (``.jsonl``, our format) or ``shipped`` (the packaged facts, default). ``--langs``
takes one language or a comma list (``en,zh``). Facts: the first ``--n`` of
:func:`amig_plugin.data.sample_facts` (prefix-consistent, shared with the other studies).
Localizations go through the shared cache; detections and fact-check scores are appended to
resumable JSONL stores under ``--out`` (default ``$AMIG_CACHE/dkn/<model>``): kill the command
and run it again, it continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import options as opt
from .common import add_data_option, add_json_option, add_langs_option, add_n_option, add_runtime_options, load_model_from_args
from ..defaults import DEFAULT_QUADRATURE, DEFAULT_STEPS

PAPER_TABLE3 = ("THE PAPER'S numbers (Chen et al. 2024, Table 3; their models and data, not measured here), F1 "
                "with_DKN vs wo_DKN exact match: en m-BERT 0.541 vs 0.362, m-GPT 0.433 vs 0.021; "
                "zh m-BERT 0.654 vs 0.020, m-GPT 0.669 vs 0.0004; BERT 0.535 vs 0.460; GPT-2 0.415 vs 0.021")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="Hugging Face name or local folder (default: the embedded Gemma-3-270M)")
    add_data_option(p, default="shipped")
    p.add_argument("--template-lang", type=opt.language, default="en", help="BMLAMA: the language whose aligned templates "
                   "name the relations (default en; any language of the folder works)")
    add_langs_option(p, 1, ["en"], "language code, or a comma list (en,zh); default en", old="--lang")
    add_n_option(p, 200, "facts per language: the first N of the stratified sample (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fact sample and of the wrong objects")
    p.add_argument("--k", type=opt.int_at_least(2, " (a degenerate pair needs two neurons)"), default=20, help="top-k neurons examined per fact (default 20; more than recorded: all recorded)")
    p.add_argument("--low", type=opt.unit_interval_open, default=0.2, help="one suppressed neuron keeps P >= (1-low)·P0 (default 0.2)")
    p.add_argument("--high", type=opt.unit_interval_open, default=0.25, help="the suppressed pair drops P below (1-high)·P0 (default 0.25)")
    p.add_argument("--grow", action="store_true", help="also search degenerate sets of 3..--max-set-size neurons (greedy growth)")
    p.add_argument("--max-set-size", type=opt.int_at_least(2), default=4, help="largest degenerate set --grow builds (default 4)")
    p.add_argument("--causal-mode", choices=["cut", "sentence"], default="cut",
                   help="causal LMs: score the object after the text before <mask> (cut, default) or the object + "
                        "the rest of the sentence (sentence: for languages whose mask stands mid-sentence, e.g. ja, "
                        "ko); used in the localization, the suppressions and the candidate scores. Masked LMs: "
                        "ignored (no effect)")
    p.add_argument("--batch-size", type=opt.positive_int, default=256, help="suppressed rows per forward")
    p.add_argument("--out", default=None, metavar="DIR", help="folder of the resumable record stores (default $AMIG_CACHE/dkn/<model>)")
    add_json_option(p)
    add_runtime_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("dkn", help="degenerate knowledge neurons: pairs among each fact's top-k neurons, "
                                          "with a per-layer summary (cached, resumable)")
    _common(p)
    p.add_argument("--show", type=opt.non_negative_int, default=10, help="facts to list with their pairs")
    p.set_defaults(func=cmd_dkn)

    p = subparsers.add_parser("factcheck", help="fact-checking with relation-level degenerate neurons vs the model's "
                                                "own judgement (paper Table 3), thresholds tuned on dev only")
    _common(p)
    p.add_argument("--lam", type=opt.unit_interval_open, default=0.7, help="relation-level DKN: count > lam × max count (default 0.7)")
    p.add_argument("--split", type=_floats, default=(1.0, 1.0, 1.0),
                   help="DKN,dev,test proportions per relation (default 1,1,1)")
    p.add_argument("--n-wrong", type=opt.positive_int, default=1, help="wrong objects per checked fact (default 1)")
    p.add_argument("--min-facts", type=opt.int_at_least(3), default=3, help="relations with fewer facts are skipped (>= 3)")
    p.add_argument("--no-dkn", choices=["topk", "skip"], default="topk",
                   help="a relation whose DKN part has no degenerate pair: use its recurring top-k neurons "
                        "(flagged, default) or skip it")
    p.add_argument("--steps", type=opt.ig_steps, default=DEFAULT_STEPS,
                   help=f"IG path points of the candidate scores (default {DEFAULT_STEPS}, rule {DEFAULT_QUADRATURE})")
    p.add_argument("--save-checker", default=None, help="save the fitted checker (neurons, thresholds) per language: "
                                                        "PATH with {lang} in it, e.g. checker-{lang}.json")
    p.add_argument("--no-per-relation", action="store_true", help="print only the overall rows")
    p.set_defaults(func=cmd_factcheck)


# ----------------------------------------------------------------------------------------


def load_pool(data: str, langs: list[str], template_lang: str | None = "en"):
    """All facts of ``data`` that have every language of ``langs`` (each keeps all its languages)."""
    from ..sources import load_fact_source

    pool = load_fact_source(data, langs, template_lang=template_lang, restrict=False).facts
    if not pool:
        raise ValueError(f"no fact in {data!r} has prompts in {', '.join(langs)}")
    return pool


def _setup(args):
    from ..localization import LocalizationCache
    from ..data import sample_facts
    from ..dkn import check_thresholds, default_store_dir
    from ..store import RecordStore

    check_thresholds(args.low, args.high)
    if args.k < 2:
        raise ValueError(f"--k must be >= 2, got {args.k}")
    langs = list(args.langs)
    pool = load_pool(args.data, langs, getattr(args, "template_lang", "en"))
    if args.n > len(pool):
        raise ValueError(f"--n {args.n}: only {len(pool)} facts with {', '.join(langs)} in {args.data!r}")
    facts = sample_facts(pool, args.n, seed=args.seed)
    model, tok = load_model_from_args(args)
    from ..data import cut_loss_warnings, cut_losses, warned_languages
    from ..dkn import effective_causal_mode
    from ..models import get_family
    args.effective_causal_mode = effective_causal_mode(model, args.causal_mode)
    if get_family(model).kind != "causal" and args.causal_mode != "cut":
        print(f"note: --causal-mode {args.causal_mode} is ignored for a masked LM (it reads the whole prompt)",
              file=sys.stderr)
    args.warned_languages = []
    if args.effective_causal_mode == "cut" and get_family(model).kind == "causal":
        lines = cut_loss_warnings(cut_losses(facts, langs))
        for w in lines:
            print(f"WARNING: {w}", file=sys.stderr)
        args.warned_languages = warned_languages(lines)
    out = Path(args.out) if args.out else default_store_dir(model)
    out.mkdir(parents=True, exist_ok=True)
    stores = {"dkn": RecordStore(out / "dkn.jsonl"), "factcheck": RecordStore(out / "factcheck.jsonl")}
    cache = LocalizationCache.for_model(model)
    print(f"{len(facts)} facts ({len({f.relation for f in facts})} relations) from {args.data}; records in {out}",
          file=sys.stderr)
    return model, tok, langs, pool, facts, stores, cache


def _detect(args, model, tok, facts, lang, stores, cache):
    from ..dkn import detect_facts

    t0 = time.time()
    results, errors = detect_facts(model, tok, facts, lang, store=stores["dkn"], cache=cache, k=args.k, low=args.low,
                                   high=args.high, grow=args.grow, max_set_size=args.max_set_size,
                                   batch_size=args.batch_size, progress=not args.no_progress,
                                   causal_mode=args.effective_causal_mode)
    return results, errors, time.time() - t0


def _mode_label(args) -> str:
    """The causal mode for a report header ("sentence", or "cut (--causal-mode sentence ignored: masked LM)")."""
    used = args.effective_causal_mode
    return used if used == args.causal_mode else f"{used} (--causal-mode {args.causal_mode} ignored: masked LM)"


def _settings(args) -> dict:
    """The settings a JSON result records."""
    return dict(causal_mode=args.effective_causal_mode, causal_mode_requested=args.causal_mode, k=args.k,
                low=args.low, high=args.high, n=args.n, seed=args.seed, data=args.data)


def cmd_dkn(args) -> int:
    from ..data import prompt_drop_summary

    model, tok, langs, pool, facts, stores, cache = _setup(args)
    with prompt_drop_summary(said=args.warned_languages):  # one warning per language, not one per prompt
        return _cmd_dkn(args, model, tok, langs, facts, stores, cache)


def _cmd_dkn(args, model, tok, langs, facts, stores, cache) -> int:
    """``amig dkn`` after the setup."""
    from ..dkn import format_layer_summary, layer_summary
    from ..loading import model_label
    from ..models import get_family

    num_layers = get_family(model).num_layers
    out = {}
    for lang in langs:
        results, errors, elapsed = _detect(args, model, tok, facts, lang, stores, cache)
        summary = layer_summary(results.values(), num_layers)
        print()
        print(format_layer_summary(summary, f"degenerate pairs [{lang}] (k={args.k}, low={args.low}, high={args.high}, "
                                            f"causal mode {_mode_label(args)}; {model_label(args.model)})"))
        secs = [r.seconds for r in results.values()]
        if secs:
            print(f"\ndetection: {sum(secs) / len(secs):.2f} s per fact (batched suppressions, localization excluded); "
                  f"this call {elapsed:.0f} s with cache/store hits")
        if errors:
            print(f"{len(errors)} fact(s) skipped: " + "; ".join(f"{f}: {e}" for f, e in list(errors.items())[:5]))
        shown = sorted(results.values(), key=lambda r: -len(r.pairs))[: args.show]
        if shown:
            print(f"\nfacts with the most pairs:")
            for r in shown:
                pairs = ", ".join(f"L{a[0]}.{a[1]}+L{b[0]}.{b[1]}" for a, b in r.degenerate_pairs[:4])
                more = f" (+{len(r.pairs) - 4})" if len(r.pairs) > 4 else ""
                print(f"  {r.fact_id} {r.target!r}: P0={r.p0:.3g}, {len(r.pairs)} pairs: {pairs}{more}")
        out[lang] = {"summary": summary, "errors": errors, "settings": _settings(args),
                     "facts": {f: r.to_dict() for f, r in results.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"saved to {args.json}")
    return 0


def cmd_factcheck(args) -> int:
    from ..data import prompt_drop_summary
    from ..factcheck import check_fractions, check_lambda

    check_lambda(args.lam)
    check_fractions(args.split)
    model, tok, langs, pool, facts, stores, cache = _setup(args)
    with prompt_drop_summary(said=args.warned_languages):  # one warning per language, not one per prompt
        return _cmd_factcheck(args, model, tok, langs, pool, facts, stores, cache)


def _cmd_factcheck(args, model, tok, langs, pool, facts, stores, cache) -> int:
    """``amig factcheck`` after the setup."""
    from ..dkn import format_layer_summary, layer_summary
    from ..factcheck import TooFewFactsError, format_summary, run_factcheck
    from ..models import get_family

    num_layers = get_family(model).num_layers
    reports, out, failed = [], {}, []
    for lang in langs:
        results, errors, _ = _detect(args, model, tok, facts, lang, stores, cache)
        summary = layer_summary(results.values(), num_layers)
        print(f"\n[{lang}] DKN: {summary['pairs']} degenerate pairs in {summary['facts_with_pairs']}/{summary['facts']} facts"
              + (f"; {len(errors)} fact(s) unusable" if errors else ""))
        if errors:
            print(f"[{lang}] unusable: " + "; ".join(f"{f}: {e}" for f, e in list(errors.items())[:3])
                  + (" ..." if len(errors) > 3 else ""))
        try:
            report, checker = run_factcheck(model, tok, facts, lang, results, pool=pool, store=stores["factcheck"],
                                            fractions=args.split, lam=args.lam, n_wrong=args.n_wrong, seed=args.seed,
                                            steps=args.steps, no_dkn=args.no_dkn, min_facts=args.min_facts,
                                            progress=not args.no_progress, causal_mode=args.effective_causal_mode)
        except TooFewFactsError as exc:
            print(f"[{lang}] fact-checking not possible: {exc}", file=sys.stderr)
            failed.append(lang)
            continue
        print()
        print(report.to_markdown(per_relation=not args.no_per_relation))
        reports.append(report)
        out[lang] = {"factcheck": report.to_dict(), "dkn_summary": summary, "dkn_errors": errors, "settings": _settings(args),
                     "layer_summary_markdown": format_layer_summary(summary)}
        if args.save_checker:
            path = args.save_checker.replace("{lang}", lang) if "{lang}" in args.save_checker else (
                args.save_checker if len(langs) == 1 else f"{args.save_checker}.{lang}.json")
            checker.save(path)
            print(f"checker saved to {path}")
    from ..loading import model_label

    print(f"\n### fact-checking, overall: {model_label(args.model)}, causal mode {_mode_label(args)}, measured here "
          "(test split; thresholds tuned on dev)\n")
    print(format_summary(reports))
    print(f"\n{PAPER_TABLE3}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"saved to {args.json}")
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------
# amig demo


def demo_section(model, tokenizer, langs, seed: int = 0) -> None:
    """A short DKN / fact-check section of ``amig demo`` (shipped facts, < 1 min on Gemma-3-270M).

    Per language (first prompt of each fact only, to stay short): degenerate pairs among the
    top-20 neurons of one fact, then that fact's degenerate neurons score another fact of the
    same relation with its true object and a wrong one (mean DKN attribution and
    log-likelihood; no threshold: a demo has no dev split)."""
    from ..data import group_by_relation, shipped_facts
    from ..dkn import detect_for_fact
    from ..factcheck import dkn_score, likelihood, relation_dkn, wrong_candidates

    langs = list(langs)
    pool = [f for f in shipped_facts() if all(l in f.prompts for l in langs)]
    groups = group_by_relation(pool)
    relation = sorted(r for r, fs in groups.items() if len(fs) >= 3)[0] if groups else None
    if relation is None:
        print("\n(no relation with 3 shipped facts: DKN demo skipped)")
        return
    import dataclasses
    import random

    members = list(groups[relation])
    random.Random(f"{seed}:{relation}").shuffle(members)
    dkn_facts, checked = members[:1], members[1]
    print(f"\n== Degenerate knowledge neurons and fact-checking (relation {relation}, {', '.join(langs)}) ==")
    for lang in langs:
        t0 = time.time()
        results = []
        for fact in dkn_facts:
            try:
                one = dataclasses.replace(fact.restrict([lang]), prompts={lang: fact.prompts[lang][:1]})
                results.append(detect_for_fact(model, tokenizer, one, lang))
            except ValueError as exc:
                print(f"[{lang}] {fact.id}: skipped ({exc})")
        for r in results:
            pairs = ", ".join(f"L{a[0]}.{a[1]}+L{b[0]}.{b[1]}" for a, b in r.degenerate_pairs[:3])
            print(f"[{lang}] {r.fact_id} {r.target!r}: P0={r.p0:.3g}; {len(r.pairs)} degenerate pairs among the top-{r.k} "
                  f"({r.forwards} suppressed forwards, batched, {r.seconds:.1f} s){': ' + pairs if pairs else ''}")
        neurons, source = relation_dkn(results)
        wrong = wrong_candidates(checked, lang, groups[relation], n=1, seed=seed)
        if not neurons or not wrong:
            print(f"[{lang}] no relation-level DKN or no wrong object: fact-check demo skipped")
            continue
        prompt = checked.prompt(lang)
        rows = []
        for cand, truth in [(checked.target(lang), "true"), (wrong[0], "wrong")]:
            s = dkn_score(model, tokenizer, prompt, cand, neurons)
            lm = likelihood(model, tokenizer, prompt, cand)
            rows.append((cand, truth, s["mean"], lm["logprob"], lm["exact_match"]))
        print(f"[{lang}] checking {prompt!r} with {len(neurons)} relation-level {'DKN' if source == 'dkn' else 'top-k'} neurons:")
        for cand, truth, s, lp, em in rows:
            print(f"    {cand!r:>20} ({truth}): mean DKN attribution {s:+.3g}, log P {lp:.2f}, greedy match {em}")
        verdict = ("ranks the true object first" if rows[0][2] > rows[1][2] else
                   "ties" if rows[0][2] == rows[1][2] else "ranks the wrong object first")
        print(f"[{lang}] the DKN score {verdict} ({time.time() - t0:.0f} s). Full protocol with dev-tuned thresholds: "
              f"amig factcheck --data <BMLAMA folder> --langs {lang}")
