"""The ``amig`` command.

    amig localize --model M --prompt P --target T [--lang L] [--method amig|kn]
    amig demo [--model M] [--facts N]

Every option is checked before any model or data file is read
(:mod:`amig_plugin.commands.options`). An expected error (a bad value, a missing file, a
prompt that cannot be queried: :class:`amig_plugin.errors.AmigError` and the builtin
errors raised for user input) is printed as one line naming the problem and the fix, with
exit code 2; ``--debug`` (anywhere on the line) or ``AMIG_DEBUG=1`` shows its traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from .commands import options as opt
from .defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS, QUADRATURE_NAMES


def _add_ig_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="Hugging Face name or local folder (default: the embedded Gemma-3-270M)")
    p.add_argument("--steps", type=opt.ig_steps, default=DEFAULT_STEPS, help=f"IG path points m, >= 2 (default {DEFAULT_STEPS})")
    p.add_argument("--objective", choices=["prob", "logprob"], default="prob", help="F = P(target) (paper) or log P(target)")
    p.add_argument("--quadrature", choices=QUADRATURE_NAMES, default=DEFAULT_QUADRATURE,
                   help="IG rule: Riemann sums, gauss (Gauss-Legendre), steep (graded towards the baseline)")
    p.add_argument("--ig-batch-size", type=opt.positive_int, default=DEFAULT_IG_BATCH_SIZE,
                   help="path points per forward/backward batch")
    p.add_argument("--threads", type=opt.threads, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", type=opt.device, default="cpu")


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


def _check_localize(args) -> None:
    """What can be checked about the prompts and the target without the model."""
    from .data import MASK_PLACEHOLDER

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
    from .neurons import localize

    _check_localize(args)
    model, tok = _load(args)
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


def cmd_demo(args) -> int:
    from .data import shipped_facts
    from .demo import pick_facts, run_demo

    if not pick_facts(shipped_facts(), 1, args.langs):
        raise opt.usage_error(f"no shipped fact has prompts in every language of --langs {','.join(args.langs)}; "
                              "use languages of the shipped facts, e.g. --langs en,zh")
    model, tok = _load(args)
    return run_demo(model, tok, n_facts=args.facts, steps=args.steps, ig_batch_size=args.ig_batch_size,
                    objective=args.objective, langs=args.langs, seed=args.seed,
                    prompts_per_fact=args.prompts_per_fact, quadrature=args.quadrature)


def build_parser() -> argparse.ArgumentParser:
    parser = opt.OneLineParser(prog="amig", description="AMIG / KN knowledge-neuron localization (Chen et al. 2024) for EasyEdit")
    parser.add_argument("--version", action="version", version=f"amig-plugin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: AMIG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("localize", help="localize the knowledge neurons of one fact")
    p.add_argument("--prompt", action="append", required=True,
                   help="cloze prompt with '<mask>' where the target goes (repeat for several prompts of one fact)")
    p.add_argument("--target", required=True, help="the gold object, e.g. Paris")
    p.add_argument("--lang", type=opt.language, default=None,
                   help="language code (sets the default τ: en 0.3, zh 0.2, else 0.2)")
    p.add_argument("--method", choices=["amig", "kn"], default="amig")
    p.add_argument("--tau", type=opt.tau, default=None, help="threshold τ × max attribution, in (0, 1]")
    p.add_argument("--share-p", type=opt.share_p, default=0.7, help="keep neurons shared by > p of the prompts, p in [0, 1)")
    p.add_argument("--adaptive", type=opt.size_range, default=None, metavar="LO,HI",
                   help="Dai et al.'s adaptive selection: move τ until the set has LO..HI neurons (e.g. 2,5)")
    p.add_argument("--top", type=opt.non_negative_int, default=20, help="how many neurons to print")
    p.add_argument("--json", default=None, help="save the KnowledgeNeurons record here")
    _add_ig_options(p)
    p.set_defaults(func=cmd_localize)

    p = sub.add_parser("demo", help="localize shipped facts in English and Chinese with AMIG and KN; suppression/enhancement effects vs random")
    p.add_argument("--facts", type=opt.positive_int, default=4, help="facts per language")
    p.add_argument("--prompts-per-fact", type=opt.positive_int, default=1,
                   help="paraphrases localized per fact (sharing filter when > 1)")
    p.add_argument("--langs", type=opt.language_list(1), default=["en", "zh"], help="comma-separated languages (default en,zh)")
    p.add_argument("--seed", type=int, default=0)
    _add_ig_options(p)
    p.set_defaults(func=cmd_demo)

    from .commands import MODULES

    for module in MODULES:
        module.add_commands(sub)
    for p in sub.choices.values():  # --debug after the command name too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


#: Builtin errors that mean bad user input (a missing file, a bad value), not a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                PermissionError, ImportError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``amig`` with ``argv`` (default: the command line); returns the exit code."""
    from .errors import AmigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad option (already printed as one line), --help or --version
        return exc.code if isinstance(exc.code, int) else 2
    debug = args.debug or opt.debug_from_env()
    try:
        return args.func(args)
    except (AmigError, *USER_ERRORS) as exc:
        # expected errors carry the fix in their message: one line, no traceback
        if debug:
            raise
        print(f"amig {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
