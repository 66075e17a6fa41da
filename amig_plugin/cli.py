"""The ``amig`` command.

    amig localize --model M --prompt P --target T [--lang L] [--method amig|kn]
    amig demo [--model M] [--facts N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __version__
from .defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS, QUADRATURE_NAMES


def _add_ig_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="Hugging Face name or local folder (default: the embedded Gemma-3-270M)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"IG path points m (default {DEFAULT_STEPS})")
    p.add_argument("--objective", choices=["prob", "logprob"], default="prob", help="F = P(target) (paper) or log P(target)")
    p.add_argument("--quadrature", choices=QUADRATURE_NAMES, default=DEFAULT_QUADRATURE,
                   help="IG rule: Riemann sums, gauss (Gauss-Legendre), steep (graded towards the baseline)")
    p.add_argument("--ig-batch-size", type=int, default=DEFAULT_IG_BATCH_SIZE, help="path points per forward/backward batch")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")


def _load(args):
    import torch

    from .loading import DEFAULT_MODEL, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.model or DEFAULT_MODEL
    t0 = time.time()
    model, tok = load_model(name, device=args.device)
    print(f"model: {name} ({type(model).__name__}), loaded in {time.time() - t0:.1f}s", file=sys.stderr)
    return model, tok


def cmd_localize(args) -> int:
    from .neurons import localize

    model, tok = _load(args)
    prompts = args.prompt
    kn, results = localize(
        model, tok, prompts, args.target, lang=args.lang, method=args.method, tau=args.tau, share_p=args.share_p,
        steps=args.steps, objective=args.objective, quadrature=args.quadrature, ig_batch_size=args.ig_batch_size,
        progress=True, return_attributions=True,
    )
    print(f"method={kn.method} tau={kn.settings['tau']} steps={args.steps} objective={args.objective} target={args.target!r}")
    for prompt, r in zip(prompts, results):
        print(f"prompt {prompt!r}: F(a)={r.score:.4g}  completeness residual max|Σ IG − ΔF|={r.max_abs_residual:.3g} "
              f"(relative {r.relative_residual:.3g})  neurons above τ: {sum(1 for _ in kn.per_prompt[results.index(r)])}")
    if kn.converged is False:
        print(f"WARNING: unconverged IG (relative completeness residual {kn.relative_residual:.3g} > "
              f"{kn.residual_tolerance} at layers {kn.unconverged_layers}): try --quadrature steep or more --steps")
    print(f"{len(kn)} knowledge neurons (layer, index, attribution):")
    for (layer, index), score in list(zip(kn.neurons, kn.scores))[: args.top]:
        print(f"  L{layer:<3d} {index:<6d} {score:.4g}")
    if len(kn) > args.top:
        print(f"  ... {len(kn) - args.top} more (use --top or --json)")
    if args.json:
        kn.save(args.json)
        print(f"saved to {args.json}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    model, tok = _load(args)
    return run_demo(model, tok, n_facts=args.facts, steps=args.steps, ig_batch_size=args.ig_batch_size,
                    objective=args.objective, langs=args.langs.split(","), seed=args.seed,
                    prompts_per_fact=args.prompts_per_fact, quadrature=args.quadrature)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amig", description="AMIG / KN knowledge-neuron localization (Chen et al. 2024) for EasyEdit")
    parser.add_argument("--version", action="version", version=f"amig-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("localize", help="localize the knowledge neurons of one fact")
    p.add_argument("--prompt", action="append", required=True,
                   help="cloze prompt with '<mask>' where the target goes (repeat for several prompts of one fact)")
    p.add_argument("--target", required=True, help="the gold object, e.g. Paris")
    p.add_argument("--lang", default=None, help="language code (sets the default τ: en 0.3, zh 0.2, else 0.2)")
    p.add_argument("--method", choices=["amig", "kn"], default="amig")
    p.add_argument("--tau", type=float, default=None, help="threshold τ × max attribution, in (0, 1]")
    p.add_argument("--share-p", type=float, default=0.7, help="keep neurons shared by > p of the prompts")
    p.add_argument("--top", type=int, default=20, help="how many neurons to print")
    p.add_argument("--json", default=None, help="save the KnowledgeNeurons record here")
    _add_ig_options(p)
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser("demo", help="localize shipped facts in English and Chinese with AMIG and KN; suppression/enhancement effects vs random")
    p.add_argument("--facts", type=int, default=4, help="facts per language")
    p.add_argument("--prompts-per-fact", type=int, default=1, help="paraphrases localized per fact (sharing filter when > 1)")
    p.add_argument("--langs", default="en,zh")
    p.add_argument("--seed", type=int, default=0)
    _add_ig_options(p)
    p.set_defaults(func=cmd_demo)

    from .commands import MODULES

    for module in MODULES:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import AmigError

    try:
        return args.func(args)
    except (AmigError, ValueError, FileNotFoundError, ImportError) as exc:
        # our errors carry the fix in their message: show it without a traceback
        if os.environ.get("AMIG_DEBUG"):
            raise
        print(f"amig {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
