"""``amig demo``: the main job on the embedded default model, end to end.

Localizes a handful of the shipped facts in English and Chinese with AMIG and KN, then
prints the suppression / enhancement effects of those neurons on related and unrelated
prompts against random neuron sets of the same size.
"""

from __future__ import annotations

import time
from collections import Counter

from tqdm.auto import tqdm

from .data import Fact, shipped_facts
from .defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS
from .localization import LocalizationCache
from .intervene import EffectCase, localization_effect


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


def run_demo(model, tokenizer, *, n_facts: int = 4, steps: int = DEFAULT_STEPS, ig_batch_size: int = DEFAULT_IG_BATCH_SIZE,
             objective: str = "prob", langs: list[str] = ("en", "zh"), seed: int = 0,
             prompts_per_fact: int = 1, quadrature: str = DEFAULT_QUADRATURE) -> int:
    facts = pick_facts(shipped_facts(), n_facts, list(langs))
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
                kn = cache.localize(model, tokenizer, prompts, target, lang=lang, method=method, steps=steps,
                                    objective=objective, ig_batch_size=ig_batch_size, fact_id=fact.id,
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
        print(f"\n[{lang}] knowledge neurons ({elapsed / max(len(facts), 1):.1f} s per fact for both methods, "
              f"{prompts_per_fact} prompt(s) each; cache {cache.path}: {cache.hits} reused)")
        print("| fact | target | P(gold) | #AMIG | #KN | AMIG rel. residual | KN rel. residual | AMIG layers |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        report = localization_effect(model, tokenizer, cases, n_unrelated=min(5, len(cases) - 1), seed=seed,
                                     objective="prob", progress=True)
        print(f"\n[{lang}] relative change of P(gold) when the neurons are suppressed (×0) / enhanced (×2)")
        print(report.to_markdown())
        for method in ("amig", "kn"):
            warning = unconverged_warning(infos[method], method)
            if warning:
                print(warning)
    print("\nRelated Δp should be large and unrelated Δp small for a good localization; 'random' is the control.")
    from .commands import MODULES

    for module in MODULES:
        section = getattr(module, "demo_section", None)
        if section is not None:
            section(model, tokenizer, langs=list(langs), seed=seed)
    return 0
