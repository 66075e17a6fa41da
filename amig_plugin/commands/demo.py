"""``amig demo``: the main job on the embedded default model, end to end.

    amig demo [--model M] [--n 4] [--langs en,zh] [--full]

Quick by default (about 1.5 minutes on 2 idle CPU cores once the model is converted):
localizes 4 shipped facts in English and Chinese with AMIG and KN, then prints the
suppression / enhancement effects of those neurons on related and unrelated prompts against
random neuron sets of the same size. ``--full`` adds the LIKN and DKN sections (about 3
minutes). The plan (sections, facts,
languages) and an estimated time are printed first, and a few lines on how to read each
table come before it.
"""

from __future__ import annotations

import time
from collections import Counter

import sys

from tqdm.auto import tqdm

from . import options as opt
from .common import add_data_option, add_ig_options, add_langs_option, add_n_option, load_model_from_args
from ..localization import LocalizationCache, localize_query
from ..data import Fact, shipped_facts
from ..defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS
from ..intervene import EffectCase, localization_effect


def pick_facts(facts: list[Fact], n: int, langs: list[str]) -> list[Fact]:
    """n facts with every language, round-robin over relations (deterministic)."""
    by_relation: dict[str, list[Fact]] = {}
    for f in facts:
        if all(lang in f.prompts for lang in langs):
            by_relation.setdefault(f.relation, []).append(f)
    picked: list[Fact] = []
    relations = sorted(by_relation)
    depth = 0
    while len(picked) < n and any(depth < len(v) for v in by_relation.values()):
        for rel in relations:
            if depth < len(by_relation[rel]) and len(picked) < n:
                picked.append(by_relation[rel][depth])
        depth += 1
    return picked


def _residual(kn) -> str:
    """The worst layer's relative completeness residual, flagged when above the tolerance."""
    worst = kn.relative_residual
    if worst is None:
        return f"{max(kn.completeness_residuals):.2g} (abs)"
    return f"{worst:.2g}" + ("" if kn.converged else " UNCONVERGED")


def unconverged_warning(infos: list, method: str) -> str | None:
    """A warning line when some of ``method``'s localizations are unconverged, else None."""
    bad = [kn for kn in infos if kn.converged is False]
    if not bad:
        return None
    worst = max(kn.relative_residual for kn in bad)
    return (f"WARNING: {method.upper()} IG is unconverged for {len(bad)} of {len(infos)} facts (relative completeness "
            f"residual up to {worst:.2g} > {bad[0].residual_tolerance}): its neuron sets are unreliable, so no "
            f"comparison with {method.upper()} (specificity included) can be concluded from this table; "
            f"use --quadrature steep (or more --steps)")


READ_NEURONS = """
How to read the neuron table: one row per fact; P(gold) is the model's probability of the
correct object; #AMIG / #KN are the neuron counts of each method; the relative residual
checks the integrated gradients (small is good, UNCONVERGED means the IG sum is off);
'AMIG layers' shows where AMIG's neurons sit (L<layer>×<count>)."""

READ_EFFECTS = """
How to read the effect table: each cell is the mean relative change of P(gold), (P' - P)/P,
when a neuron set is suppressed (×0) or enhanced (×2), on the fact's own prompts (related)
and on other facts' prompts (unrelated); 'random' is a set of random neurons of the same size.
A specific localization moves related P(gold) much more than unrelated and than random."""


def run_demo(model, tokenizer, *, n_facts: int = 4, steps: int = DEFAULT_STEPS, ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
             objective: str = "prob", langs: list[str] = ("en", "zh"), seed: int = 0,
             prompts_per_fact: int = 1, quadrature: str = DEFAULT_QUADRATURE, facts: list[Fact] | None = None) -> int:
    """The AMIG vs KN localization and effect tables on ``n_facts`` of ``facts`` (default: the shipped ones)."""
    facts = pick_facts(shipped_facts() if facts is None else facts, n_facts, list(langs))
    cache = LocalizationCache.for_model(model)  # a second demo run reuses the localizations
    print(f"\n== AMIG vs KN localization on {len(facts)} shipped facts, languages {', '.join(langs)} "
          f"(m={steps} steps, {quadrature} rule, objective={objective}) ==")
    for lang in langs:
        cases = []
        t0 = time.time()
        rows = []
        infos = {"amig": [], "kn": []}
        for fact in tqdm(facts, desc=f"localize [{lang}]"):
            prompts = list(fact.prompts[lang])[:prompts_per_fact]
            target = fact.target(lang)
            sets = {}
            info = {}
            for method in ("amig", "kn"):
                kn = localize_query(model, tokenizer, prompts, target, lang=lang, method=method, cache=cache,
                                    fact_id=fact.id, steps=steps, objective=objective, ig_batch_size=ig_batch_size,
                                    quadrature=quadrature,
                                    # KN's zero baseline jumps at α ≈ 0 on models with a post-FFN norm
                                    # (Gemma-2/3): its unconverged layers are redone with the steep rule
                                    on_unconverged="refine" if method == "kn" else "warn")
                sets[method] = kn.neurons
                info[method] = kn
                infos[method].append(kn)
            cases.append(EffectCase(fact.id, prompts, target, sets))
            a, k = info["amig"], info["kn"]
            layers = Counter(layer for layer, _ in a.neurons)
            rows.append(f"| {fact.id} | {target} | {a.clean_scores[0]:.3g} | {len(a)} | {len(k)} | "
                        f"{_residual(a)} | {_residual(k)} | "
                        f"{', '.join(f'L{l}×{c}' for l, c in sorted(layers.items()))} |")
        elapsed = time.time() - t0
        if lang == langs[0]:
            print(READ_NEURONS)
        print(f"\n[{lang}] knowledge neurons ({elapsed / max(len(facts), 1):.1f} s per fact for both methods, "
              f"{prompts_per_fact} prompt(s) each; cache {cache.path}: {cache.hits} reused)")
        print("| fact | target | P(gold) | #AMIG | #KN | AMIG rel. residual | KN rel. residual | AMIG layers |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        report = localization_effect(model, tokenizer, cases, n_unrelated=min(5, len(cases) - 1), seed=seed,
                                     objective="prob", progress=True)
        if lang == langs[0]:
            print(READ_EFFECTS)
        print(f"\n[{lang}] relative change of P(gold) when the neurons are suppressed (×0) / enhanced (×2)")
        print(report.to_markdown())
        for method in ("amig", "kn"):
            warning = unconverged_warning(infos[method], method)
            if warning:
                print(warning)
    print("\nRelated Δp should be large and unrelated Δp small for a good localization; 'random' is the control.")
    return 0


# ----------------------------------------------------------------------------------------
# the command

#: rough seconds on 2 idle CPU cores with Gemma-3-270M (converted and cached), for the ETA printed first,
#: measured with an empty localization cache: model load 7 s, AMIG + KN of one prompt and its effects
#: about 10 s per fact and language, the whole --full tour 175 s
SECONDS_LOAD = 10
SECONDS_PER_FACT_LANG = 10
SECONDS_SECTIONS = {"likn": 50, "dkn": 30}
#: facts per language: quick (about 1.5 minutes) and --full (about 3 minutes)
QUICK_FACTS, FULL_FACTS = 4, 4


def demo_sections(full: bool) -> list[tuple[str, str]]:
    """(name, what it shows) of the sections a demo runs: localization always, LIKN and DKN with ``--full``."""
    sections = [("localization", "AMIG vs KN neurons and their suppression/enhancement effects vs random neurons")]
    if full:
        sections += [("likn", "language-independent knowledge neurons (LIKN) and their effects per language"),
                     ("dkn", "degenerate knowledge neurons and a fact check with them")]
    return sections


def plan_text(facts: list[Fact], langs: list[str], full: bool, steps: int, model: str | None,
              source: str = "shipped facts") -> str:
    """The lines ``amig demo`` prints before loading the model: sections, facts, languages, ETA."""
    seconds = SECONDS_LOAD + SECONDS_PER_FACT_LANG * len(facts) * len(langs) * max(steps, 1) / DEFAULT_STEPS
    if full:
        seconds += sum(SECONDS_SECTIONS.values())
    lines = [f"amig demo ({'full' if full else 'quick'}) on {model or 'the embedded Gemma-3-270M'}: "
             f"{len(facts)} {source} x {len(langs)} languages ({', '.join(langs)})"]
    lines += [f"  {i}. {name}: {what}" for i, (name, what) in enumerate(demo_sections(full), 1)]
    lines.append("  facts: " + "; ".join(f"{f.id} ({f.target(langs[0])})" for f in facts))
    lines.append(f"  ETA: about {max(1, round(seconds / 60))} min on 2 CPU cores with Gemma-3-270M "
                 f"(less when the localizations are cached; a GPU is faster)"
                 + ("" if full else "; --full adds the LIKN and DKN sections"))
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from ..sources import load_fact_source
    from .dkn import demo_section as dkn_section
    from .likn import demo_section as likn_section

    langs = list(args.langs)
    source = load_fact_source(args.data, langs, restrict=False)
    pool = source.facts
    facts = pick_facts(pool, args.n if args.n is not None else (FULL_FACTS if args.full else QUICK_FACTS), langs)
    if not facts:
        what = "shipped fact" if args.data in (None, "", "shipped") else f"fact in {args.data}"
        raise opt.usage_error(f"no {what} has prompts in every language of --langs {','.join(langs)}; "
                              "use languages of the shipped facts, e.g. --langs en,zh")
    print(plan_text(facts, langs, args.full, args.steps, args.model, source.description), flush=True)
    model, tok = load_model_from_args(args)
    code = run_demo(model, tok, n_facts=len(facts), steps=args.steps, ig_batch_size=args.ig_batch_size,
                    objective=args.objective, langs=langs, seed=args.seed, prompts_per_fact=args.prompts_per_fact,
                    quadrature=args.quadrature, facts=facts)
    if args.full:
        likn_section(model, tok, langs=langs, seed=args.seed)
        dkn_section(model, tok, langs=langs, seed=args.seed)
    else:
        print("\n(quick demo: `amig demo --full` adds the LIKN and DKN sections)", file=sys.stderr)
    return code


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a quick tour: localize a few shipped facts in English and Chinese with AMIG "
                                           "and KN; suppression/enhancement effects vs random (--full: LIKN and DKN too)")
    add_n_option(p, None, f"facts per language (default {QUICK_FACTS}; {FULL_FACTS} with --full)", old="--facts")
    add_langs_option(p, 1, ["en", "zh"])
    add_data_option(p, help="fact source (default: the shipped facts): a BMLAMA folder, an mLAMA folder or a .jsonl fact file")
    p.add_argument("--full", action="store_true", help="also run the LIKN and DKN sections (about twice as long)")
    p.add_argument("--prompts-per-fact", type=opt.positive_int, default=1,
                   help="paraphrases localized per fact (sharing filter when > 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the unrelated facts and the random neuron sets")
    add_ig_options(p)
    p.set_defaults(func=cmd_demo)
