"""``amig localize``: the knowledge neurons of one fact.

    amig localize --prompt P [--prompt P2 ...] --target T [--lang L] [--method amig|kn] [--json FILE]
"""

from __future__ import annotations

from . import options as opt
from .common import add_ig_options, add_json_option, load_model_from_args


def _check_localize(args) -> None:
    """What can be checked about the prompts and the target without the model."""
    from ..data import MASK_PLACEHOLDER

    if not args.target.strip():
        raise opt.usage_error("--target is empty; give the gold object, e.g. --target Paris")
    for prompt in args.prompt:
        if not prompt.strip():
            raise opt.usage_error(f"--prompt {prompt!r} is empty; give a cloze prompt such as 'The capital of France is {MASK_PLACEHOLDER}.'")
        if prompt.count(MASK_PLACEHOLDER) > 1:
            raise opt.usage_error(f"--prompt {prompt!r} has {prompt.count(MASK_PLACEHOLDER)} {MASK_PLACEHOLDER}; "
                                  f"put exactly one {MASK_PLACEHOLDER} where the target goes")
    if len(set(args.prompt)) < len(args.prompt):
        raise opt.usage_error("the same --prompt is given twice; give each paraphrase once")


def cmd_localize(args) -> int:
    from ..neurons import localize

    _check_localize(args)
    model, tok = load_model_from_args(args)
    prompts = args.prompt
    kn, results = localize(
        model, tok, prompts, args.target, lang=args.lang, method=args.method, tau=args.tau, share_p=args.share_p,
        steps=args.steps, objective=args.objective, quadrature=args.quadrature, ig_batch_size=args.ig_batch_size,
        adaptive=args.adaptive, progress=True, return_attributions=True,
    )
    print(f"method={kn.method} tau={kn.settings['tau']} steps={args.steps} objective={args.objective} target={args.target!r}")
    for prompt, r, selected in zip(prompts, results, kn.per_prompt):
        print(f"prompt {prompt!r}: F(a)={r.score:.4g}  completeness residual max|Σ IG − ΔF|={r.max_abs_residual:.3g} "
              f"(relative {r.relative_residual:.3g})  neurons above τ: {len(selected)}")
    if len(prompts) > 1:
        print(f"kept: neurons above τ for more than {args.share_p:g} of the {len(prompts)} prompts")
    if kn.converged is False:
        print(f"WARNING: unconverged IG (relative completeness residual {kn.relative_residual:.3g} > "
              f"{kn.residual_tolerance} at layers {kn.unconverged_layers}): try --quadrature steep or more --steps")
    print(f"{len(kn)} knowledge neurons (layer, index, attribution):"
          + (f" EMPTY: {kn.empty_reason}" if not len(kn) else ""))
    for (layer, index), score in list(zip(kn.neurons, kn.scores))[: args.top]:
        print(f"  L{layer:<3d} {index:<6d} {score:.4g}")
    if len(kn) > args.top:
        print(f"  ... {len(kn) - args.top} more (use --top or --json)")
    if args.json:
        kn.save(args.json)
        print(f"saved to {args.json}")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("localize", help="localize the knowledge neurons of one fact")
    p.add_argument("--prompt", action="append", required=True,
                   help="cloze prompt with '<mask>' where the target goes (repeat for several prompts of one fact)")
    p.add_argument("--target", required=True, help="the gold object, e.g. Paris")
    p.add_argument("--lang", type=opt.language, default=None,
                   help="language code of the prompts (sets the default τ: en 0.3, zh 0.2, else 0.2)")
    p.add_argument("--method", choices=["amig", "kn"], default="amig",
                   help="amig (default) or kn (Dai et al.'s integrated gradients from a zero baseline)")
    p.add_argument("--tau", type=opt.tau, default=None, help="threshold τ × max attribution, in (0, 1]")
    p.add_argument("--share-p", type=opt.share_p, default=0.7, help="keep neurons shared by > p of the prompts, p in [0, 1)")
    p.add_argument("--adaptive", type=opt.size_range, default=None, metavar="LO,HI",
                   help="Dai et al.'s adaptive selection: move τ until the set has LO..HI neurons (e.g. 2,5)")
    p.add_argument("--top", type=opt.non_negative_int, default=20, help="how many neurons to print")
    add_json_option(p, "save the KnowledgeNeurons record to this file")
    add_ig_options(p)
    p.set_defaults(func=cmd_localize)
