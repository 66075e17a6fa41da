"""Accuracy per cost of the IG quadrature rules, against a high-precision reference.

For each model, query and method (AMIG, KN) the attributions [L, W] of every rule are compared
with a reference: 256-point Gauss-Legendre, except on layers where that reference is itself
unconverged (a path with a jump next to the baseline, e.g. Dai et al.'s zero baseline on
Gemma-3), which take the ``steep`` rule at 72 points instead. Error: max |A − A_ref| / max |A_ref|
over the attribution matrix. Cost: path points per layer relative to midpoint m = 20 (rows of
the batched forward/backward, which is what the engine's time is made of); seconds are printed
too. Models: GPT-2-, BERT- and Llama-style models with random weights and tokenizers trained in
code (``benchmarks/attribution.py``), tiny and small, and the embedded Gemma-3-270M.

The default is the cheapest rule whose error is at most midpoint m = 20's (or below 1e-5, float32
rounding) on every case where midpoint m = 20 itself converges, case by case, and whose larger
point counts of the same rule pass too (Gauss-Legendre errors are not monotone in m here)
(:func:`select_default`; cases where midpoint 20 does not converge are reported apart: there the
``steep`` rule is needed, see ``on_unconverged``). ``--gemma-facts N`` judges N shipped facts of
different relations on Gemma-3-270M; ``--from-json FILE`` judges a saved run again. Ends with one line:

    ig_accuracy: default=<rule>/<m> rel_err=<e> midpoint20_rel_err=<e> cost_vs_midpoint20=<x> gemma_kn_residual=<r>

rel_err / midpoint20_rel_err: worst error over those cases; gemma_kn_residual: the worst layer's
relative completeness residual of KN on Gemma-3-270M under the cheapest steep rule of the table
that converges (the rule the guard refines unconverged layers with).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from amig_plugin.attribution import attribute_query  # noqa: E402
from amig_plugin.models import get_family  # noqa: E402

CANDIDATES = [("midpoint", 20), ("gauss", 4), ("gauss", 8), ("gauss", 9), ("gauss", 10), ("gauss", 12), ("gauss", 16),
              ("steep", 24), ("steep", 42), ("gauss-adaptive", 6), ("gauss-adaptive", 8)]
REFERENCE = ("gauss", 256)
FLOAT_NOISE = 1e-5  # errors below this are float32 rounding of the sums, not quadrature: they count as equal
STEEP_REFERENCE = ("steep", 72)


def small_models(quick: bool):
    """(name, model, tokenizer, kind) of random-weight GPT-2 / BERT / Llama models of the real classes."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from attribution import build_tokenizer

    toks = {"causal": build_tokenizer("causal"), "masked": build_tokenizer("masked")}
    sizes = [("tiny", 2, 64, 256)] + ([] if quick else [("small", 6, 256, 1024)])
    out = []
    for size, layers, width, ffn in sizes:
        torch.manual_seed(0)
        vc, vm = len(toks["causal"]), len(toks["masked"])
        gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=vc, n_layer=layers, n_embd=width, n_head=4, n_inner=ffn,
                                          n_positions=128))
        bert = BertForMaskedLM(BertConfig(vocab_size=vm, num_hidden_layers=layers, hidden_size=width,
                                          num_attention_heads=4, intermediate_size=ffn, max_position_embeddings=128))
        llama = LlamaForCausalLM(LlamaConfig(vocab_size=vc, num_hidden_layers=layers, hidden_size=width,
                                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=ffn,
                                             max_position_embeddings=128))
        out += [(f"gpt2-{size}", gpt2.eval(), toks["causal"], "causal"), (f"bert-{size}", bert.eval(), toks["masked"], "masked"),
                (f"llama-{size}", llama.eval(), toks["causal"], "causal")]
    return out


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def reference(family, query, tok, method: str, layers):
    ref = attribute_query(family, query, tok, method=method, steps=REFERENCE[1], quadrature=REFERENCE[0], layers=layers)
    attributions = ref.attributions.clone()
    bad = ref.unconverged_layers
    if bad:
        steep = attribute_query(family, query, tok, method=method, steps=STEEP_REFERENCE[1],
                                quadrature=STEEP_REFERENCE[0], layers=bad)
        attributions[[ref.layers.index(l) for l in bad]] = steep.attributions
    return attributions, bad


def run_case(name, model, tok, query_text, method, layers=None) -> dict:
    family = get_family(model)
    query = family.encode(tok, *query_text)
    ref, ref_bad = reference(family, query, tok, method, layers)
    rows = {}
    for rule, m in CANDIDATES:
        t0 = time.perf_counter()
        r = attribute_query(family, query, tok, method=method, steps=m, quadrature=rule, layers=layers)
        rows[f"{rule}/{m}"] = dict(err=rel_err(r.attributions, ref), residual=r.relative_residual, seconds=time.perf_counter() - t0,
                                   converged=r.converged, cost=r.points_per_layer / 20)
    print(f"[{name}] {method} {query_text[0]!r} -> {query_text[1]!r}" + (f" (reference: steep/72 on layers {ref_bad})" if ref_bad else ""))
    for key, row in rows.items():
        print(f"   {key:12s} rel_err {row['err']:.2e}  worst-layer residual {row['residual']:.2e}  "
              f"{row['seconds']:6.2f} s  cost {row['cost']:.2f}x{'' if row['converged'] else '  UNCONVERGED'}")
    return dict(model=name, method=method, rows=rows)


def passes(case: dict, key: str) -> bool:
    """The rule's error is at most midpoint m = 20's on this case (or below float32 rounding)."""
    return case["rows"][key]["err"] <= max(case["rows"]["midpoint/20"]["err"], FLOAT_NOISE)


def select_default(judged: list[dict]) -> tuple[str, int]:
    """The cheapest (rule, m) that is at least as accurate as midpoint m = 20 on EVERY judged case,
    and whose larger m of the same rule are too: Gauss-Legendre errors are not monotone in m on
    these paths (on Gemma-3 zh, 9 points can pass where 10 fail), so a rule that passes only
    between failing neighbours is luck, not a default. Cost: path points per layer over the
    judged cases (mean; ``gauss-adaptive`` spends more on the layers it refines)."""
    by_rule: dict[str, list[int]] = {}
    for rule, m in CANDIDATES:
        if all(f"{rule}/{m}" in c["rows"] for c in judged):  # a saved run may predate a candidate
            by_rule.setdefault(rule, []).append(m)
    stable = []
    for rule, ms in by_rule.items():
        ms = sorted(ms)
        for i, m in enumerate(ms):  # every stable m: an adaptive rule's cost need not grow with m
            if all(passes(c, f"{rule}/{k}") for k in ms[i:] for c in judged):
                stable.append((mean_cost(judged, f"{rule}/{m}"), m, rule))
    _, m, rule = min(stable)
    return rule, m


def mean_cost(cases: list[dict], key: str) -> float:
    """Path points per layer relative to midpoint m = 20, averaged over ``cases``."""
    return sum(c["rows"][key]["cost"] for c in cases) / len(cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models, one query, 4 Gemma layers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--gemma-only", action="store_true", help="only Gemma-3-270M (all layers)")
    ap.add_argument("--langs", default=None, help="Gemma fact languages (default en,zh; quick en)")
    ap.add_argument("--gemma-facts", type=int, default=1,
                    help="shipped facts of different relations to judge on Gemma-3-270M (default 1: the capital of France)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--from-json", default=None, help="judge the cases saved by an earlier --json run instead of computing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from attribution import benchmark_queries

    if args.from_json:
        cases = json.loads(Path(args.from_json).read_text())["cases"]
    else:
        cases = []
        for name, model, tok, kind in ([] if args.gemma_only else small_models(args.quick)):
            for q in benchmark_queries(kind, tok, 1 if args.quick else 2):
                for method in ("amig", "kn"):
                    cases.append(run_case(name, model, tok, q, method))
        if not args.no_gemma:
            from amig_plugin.data import shipped_facts
            from amig_plugin.loading import load_model

            model, tok = load_model()
            facts, relations = [], set()
            for fact in shipped_facts():  # the first fact of each relation, in file order
                if fact.relation not in relations:
                    relations.add(fact.relation)
                    facts.append(fact)
            facts = facts[:max(1, args.gemma_facts)]
            layers = [0, 6, 12, 17] if args.quick else None
            langs = args.langs.split(",") if args.langs else (["en"] if args.quick else ["en", "zh"])
            for k, fact in enumerate(facts):
                for lang in langs:
                    for method in ("amig", "kn"):
                        name = f"gemma-3-270m/{lang}" + (f"/{fact.id}" if k else "")
                        case = run_case(name, model, tok, (fact.prompts[lang][0], fact.object[lang]), method, layers)
                        cases.append(case)
    gemma_kn = None
    for case in cases:  # KN on Gemma: the cheapest steep rule that converges (else the largest)
        if case["model"].startswith("gemma") and case["method"] == "kn":
            steep = [row for key, row in case["rows"].items() if key.startswith("steep/")]
            best = next((row for row in steep if row["converged"]), steep[-1])
            gemma_kn = max(gemma_kn or 0.0, best["residual"])
    judged = [c for c in cases if c["rows"]["midpoint/20"]["converged"]]
    apart = [f"{c['model']}/{c['method']}" for c in cases if not c["rows"]["midpoint/20"]["converged"]]
    mid = max(c["rows"]["midpoint/20"]["err"] for c in judged)
    rule, m = select_default(judged)
    err = max(c["rows"][f"{rule}/{m}"]["err"] for c in judged)
    print(f"cases judged: {len(judged)}; unconverged at midpoint/20 (reported apart): {', '.join(apart) or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(cases=cases, default=f"{rule}/{m}"), indent=1))
    print(f"ig_accuracy: default={rule}/{m} rel_err={err:.1e} midpoint20_rel_err={mid:.1e} "
          f"cost_vs_midpoint20={mean_cost(judged, f'{rule}/{m}'):.2f} "
          f"gemma_kn_residual={'n/a' if gemma_kn is None else f'{gemma_kn:.3g}'}")


if __name__ == "__main__":
    main()
