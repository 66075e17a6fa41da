"""``amig likn``: language-independent knowledge neurons and the cross-lingual editing experiment.

    amig likn [--model M] [--data D] [--langs en,zh] [--n N] [--method amig|kn] [--out DIR]
              [--causal-mode cut|sentence] [--protocols activation,value] [--n-unrelated 5]

D: a BMLAMA directory (``<lang>.tsv`` per language), an mLAMA directory
(``<lang>/templates.jsonl``), or a JSONL fact file (our format); default: the shipped facts.
Localizations go through the shared cache (a second run reuses them), measurements through
``DIR/measurements.jsonl``; the report is ``DIR/likn_report.md`` + ``DIR/likn_results.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import options as opt
from .common import add_data_option, add_ig_options, add_langs_option, add_n_option, load_model_from_args


def _protocols(text: str) -> list[str]:
    from ..likn import PROTOCOLS

    protocols = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if not protocols or unknown:
        raise argparse.ArgumentTypeError(f"unknown protocol(s) {unknown or [text]}; use a comma list of {', '.join(PROTOCOLS)}")
    return list(dict.fromkeys(protocols))


def load_fact_data(data: str | None, langs: list[str], template_lang: str | None = "en"):
    """(facts with every language in ``langs``, a description, notes) from ``--data``
    (:func:`amig_plugin.sources.load_fact_source`)."""
    from ..sources import load_fact_source

    source = load_fact_source(data, langs, template_lang=template_lang)
    return source.facts, source.description, source.notes


def usable_for(model, facts, langs, causal_mode):
    """Facts whose prompts can be queried by this model in every language; the others are
    reported, not silently used (e.g. a causal model and a prompt that starts with <mask>)."""
    from ..data import FactFormatError, causal_prompt_and_target, prompt_drop_summary, prompt_languages
    from ..models import get_family

    kind = get_family(model).kind
    ok, bad = [], []
    with prompt_drop_summary(prompt_languages(facts, langs), said=langs):  # a check only: the per-language note on lost text comes after it
        for f in facts:
            try:
                if kind == "causal":
                    for l in langs:
                        for prompt in f.prompts[l]:
                            causal_prompt_and_target(prompt, f.target(l), mode=causal_mode)
                ok.append(f)
            except FactFormatError as exc:
                bad.append((f.id, str(exc)))
    return ok, bad


def cmd_likn(args) -> int:
    import torch

    from ..localization import LocalizationCache
    from ..data import sample_facts
    from ..likn import run_likn_experiment
    from ..models import get_family

    if args.report_only:
        from ..likn import LIKNExperiment

        if not args.out:
            raise ValueError("--report-only needs --out DIR (a folder written by an earlier `amig likn`)")
        exp = LIKNExperiment.load(args.out)
        exp.save(args.out)
        print(exp.to_markdown(max_facts=args.show_facts))
        return 0
    langs = list(args.langs)
    protocols = list(args.protocols)
    if not args.threads:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    facts, source, notes = load_fact_data(args.data, langs, getattr(args, "template_lang", "en"))
    model, tok = load_model_from_args(args)
    facts, bad = usable_for(model, facts, langs, args.causal_mode)
    if bad:
        notes.append(f"{len(bad)} facts cannot be queried by this model and are not used, e.g. {bad[0][0]}: {bad[0][1]}")
    n = args.n
    if n is None or n > len(facts):
        if n is not None:
            notes.append(f"--n {n} but only {len(facts)} usable facts: using all of them")
        n = len(facts)
    facts = sample_facts(facts, n, seed=args.sample_seed)
    from ..data import cut_loss_warnings, cut_losses, prompt_drop_summary, warned_languages
    losses = cut_losses(facts, langs)
    said = []
    if args.causal_mode == "cut" and get_family(model).kind == "causal":
        said = cut_loss_warnings(losses)
        notes += said
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.out) if args.out else Path("runs") / (
        f"likn-{Path(args.data).name if args.data else 'shipped'}-{'-'.join(langs)}-{args.method}-n{n}-{args.causal_mode}"
        + (f"-adaptive{args.adaptive[0]}-{args.adaptive[1]}" if args.adaptive else ""))
    cache = LocalizationCache.for_model(model, root=args.cache_dir) if not args.no_cache else None
    settings = dict(steps=args.steps, objective=args.objective, quadrature=args.quadrature,
                    ig_batch_size=args.ig_batch_size, share_p=args.share_p, tau=args.tau)
    if args.adaptive:
        settings["adaptive"] = args.adaptive
    print(f"LIKN: {len(facts)} facts from {source}, languages {langs}, method {args.method}, causal mode "
          f"{args.causal_mode}, protocols {protocols}; output {out}", file=sys.stderr)
    t0 = time.time()
    with prompt_drop_summary(said=warned_languages(said)):  # the notes above said it: no second warning
        exp = run_likn_experiment(
            model, tok, facts, langs, method=args.method, cache=cache, causal_mode=args.causal_mode, protocols=protocols,
            n_unrelated=args.n_unrelated, seed=args.seed, rank_by=args.rank_by,
            unrelated_accuracy={"none": (), "activation": ("activation",), "both": ("activation", "value")}[
                args.unrelated_accuracy], random_control=not args.no_random, out_dir=out,
            config=dict(model=args.model or "gemma-3-270m (embedded default)", data=source, notes=notes,
                        cut_losses=losses, sample_seed=args.sample_seed),
            localize_settings=settings, lambda_old=args.lambda_old, lambda_new=args.lambda_new, signed=not args.unsigned)
    elapsed = time.time() - t0
    if cache is not None:
        print(f"localization cache {cache.path}: {cache.hits} reused, {cache.misses} computed", file=sys.stderr)
    print(exp.to_markdown(max_facts=args.show_facts))
    print(f"({elapsed:.0f} s) report: {out / 'likn_report.md'}, JSON: {out / 'likn_results.json'}", file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("likn", help="language-independent knowledge neurons (LIKN) and the cross-lingual "
                                           "editing experiment (LIKN vs Mono-KN vs Seq-KN)")
    add_data_option(p)
    p.add_argument("--template-lang", type=opt.language, default="en", help="BMLAMA: the language whose aligned templates "
                   "name the relations (default en; any loaded language works)")
    add_langs_option(p, 2, ["en", "zh"], "comma-separated languages, at least 2 (default en,zh)", old="--lang")
    add_n_option(p, 100, "number of facts (prefix-consistent stratified sample; default 100)",
                 type=opt.int_at_least(2, " (unrelated prompts come from other facts)"))
    p.add_argument("--method", choices=["amig", "kn"], default="amig", help="localization method (default amig)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/likn-<data>-<langs>-<method>-n<N>-<mode>)")
    p.add_argument("--causal-mode", choices=["cut", "sentence"], default="cut",
                   help="causal LMs: cut the prompt at <mask> (default) or score object + rest of the sentence")
    p.add_argument("--protocols", type=_protocols, default=["activation", "value"],
                   help="activation (×0/×2 at the target position, the paper's) and/or value (value-vector edit)")
    p.add_argument("--n-unrelated", type=opt.non_negative_int, default=5, help="unrelated facts per fact (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of unrelated facts, new objects, random neurons")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the fact sample (default 0, shared with other studies)")
    p.add_argument("--rank-by", choices=["mean", "sum"], default="mean",
                   help="candidate ranking for accuracy: log-prob per token (default) or summed")
    p.add_argument("--unrelated-accuracy", choices=["none", "activation", "both"], default="none",
                   help="protocols that also measure accuracy flips on unrelated prompts (default none: they "
                        "make the activation protocol about 4x and the value protocol about 8x slower)")
    p.add_argument("--lambda-old", type=float, default=1.0, help="value edit: v += λ_new·e(new) − λ_old·e(old) (Dai: 1)")
    p.add_argument("--lambda-new", type=float, default=8.0, help="value edit: λ_new (Dai: 8)")
    p.add_argument("--unsigned", action="store_true",
                   help="value edit without orienting each neuron's update by the sign of its activation "
                        "(Dai's original; wrong for gated MLPs whose neurons can be negative)")
    p.add_argument("--no-random", action="store_true", help="skip the random-neuron control")
    p.add_argument("--tau", type=opt.tau, default=None, help="threshold τ × max (default: AMIG en 0.3, zh 0.2, else 0.2; "
                                                          "KN 0.2)")
    p.add_argument("--adaptive", type=opt.size_range, default=None, metavar="LO,HI", help="Dai et al.'s adaptive selection: move τ until "
                                                                     "each set has LO..HI neurons (e.g. 2,5)")
    p.add_argument("--share-p", type=opt.share_p, default=0.7, help="keep neurons shared by > p of a fact's prompts")
    p.add_argument("--cache-dir", default=None, help="localization cache root (default $AMIG_CACHE or ~/.cache/amig-plugin)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the localization cache")
    p.add_argument("--show-facts", type=opt.non_negative_int, default=30, help="facts listed in the printed LIKN table")
    p.add_argument("--report-only", action="store_true",
                   help="re-render --out's report from its likn_results.json (no model, no computation)")
    add_ig_options(p)
    p.set_defaults(func=cmd_likn)


def demo_section(model, tokenizer, langs, seed) -> None:
    """``amig demo``'s LIKN section: a few shipped facts (first prompt per language, 8 IG
    steps, cached), their LIKN and the suppression/enhancement effects of LIKN, Mono-KN and
    Seq-KN (activation protocol only; under a minute on Gemma-3-270M, CPU)."""
    from ..data import Fact, sample_facts, shipped_facts
    from ..likn import activation_table, aggregate, run_likn_experiment

    langs = list(langs)
    if len(langs) < 2:
        print("\n== LIKN: needs at least 2 languages (run `amig demo --langs en,zh`) ==")
        return
    facts = [Fact(id=f.id, relation=f.relation, subject=f.subject, object=f.object,
                  prompts={l: f.prompts[l][:1] for l in langs}, candidates=f.candidates, relation_name=f.relation_name)
             for f in sample_facts(shipped_facts(langs), 4, seed=seed)]
    print(f"\n== LIKN: language-independent knowledge neurons of {len(facts)} shipped facts ({', '.join(langs)}; "
          "AMIG, first prompt per language, 8 IG steps) ==")
    exp = run_likn_experiment(model, tokenizer, facts, langs, protocols=("activation",), n_unrelated=len(facts) - 1,
                              seed=seed, unrelated_accuracy=False, localize_settings=dict(steps=8))
    print(exp.likn.to_markdown())
    rows = aggregate(exp.activation, subset="all")
    print("\nSuppression ×0 / enhancement ×2 of each setting's neurons, measured in each language "
          "(all facts; an empty neuron set is a no-op):")
    print(activation_table(rows))
    print("With so few facts the CIs are wide; `amig likn --data <BMLAMA dir> --n 100` runs the full experiment.")
