"""What every command shares: the IG options, model loading from the parsed options, and
the options with one name everywhere (``--data``, ``--langs``, ``--n``, ``--out DIR``,
``--json FILE``) with their old spellings kept as hidden, deprecated aliases.

An alias is a second option string that argparse does not show: using it stores the same
value and prints one ``note:`` line naming the new spelling.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from . import options as opt
from ..defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS, QUADRATURE_NAMES

__all__ = ["add_ig_options", "load_model_from_args", "add_alias", "add_data_option", "add_langs_option",
           "add_n_option", "add_json_option", "add_runtime_options", "DATA_HELP"]

DATA_HELP = ("fact source: a BMLAMA folder (<lang>.tsv per language), an mLAMA folder (<lang>/templates.jsonl), "
             "a .jsonl fact file (see docs) or 'shipped' (the packaged facts, default)")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--device``."""
    p.add_argument("--threads", type=opt.threads, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", type=opt.device, default="cpu", help="torch device: cpu (default), cuda, cuda:N or mps")


def add_ig_options(p: argparse.ArgumentParser) -> None:
    """The model and integrated-gradients options of the localizing commands."""
    p.add_argument("--model", default=None, help="Hugging Face name or local folder (default: the embedded Gemma-3-270M)")
    p.add_argument("--steps", type=opt.ig_steps, default=DEFAULT_STEPS, help=f"IG path points m, >= 2 (default {DEFAULT_STEPS})")
    p.add_argument("--objective", choices=["prob", "logprob"], default="prob", help="F = P(target) (paper) or log P(target)")
    p.add_argument("--quadrature", choices=QUADRATURE_NAMES, default=DEFAULT_QUADRATURE,
                   help=f"IG rule (default {DEFAULT_QUADRATURE}): Riemann sums, gauss (Gauss-Legendre), steep (graded "
                        "towards the baseline), gauss-adaptive (gauss, with more points on the layers that need them)")
    p.add_argument("--ig-batch-size", type=opt.positive_int, default=DEFAULT_IG_BATCH_SIZE,
                   help="path points per forward/backward batch")
    add_runtime_options(p)


def load_model_from_args(args):
    """(model, tokenizer) of ``--model`` (default: the embedded Gemma-3-270M) on ``--device``,
    after ``--threads``; prints the load time to stderr."""
    import torch

    from ..loading import DEFAULT_MODEL, load_model

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    name = args.model or DEFAULT_MODEL
    t0 = time.time()
    model, tok = load_model(name, device=args.device)
    print(f"model: {name} ({type(model).__name__}), loaded in {time.time() - t0:.1f}s", file=sys.stderr)
    return model, tok


class _Deprecated(argparse.Action):
    """Store the value under the new option's ``dest`` and say once which spelling replaces it."""

    def __init__(self, option_strings, dest, new: str = "", convert: Callable[[Any], Any] | None = None, **kwargs):
        self.new = new
        self.convert = convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.convert is not None:
            values = self.convert(values)
        print(f"note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_alias(p: argparse.ArgumentParser, old: str, new: str, dest: str, *,
              convert: Callable[[Any], Any] | None = None, **kwargs) -> None:
    """A hidden option ``old`` that sets ``dest`` (the option ``new``'s) and prints a deprecation note;
    ``convert`` maps the old value to the new one (e.g. one language -> a list)."""
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, convert=convert, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS, **kwargs)


def add_data_option(p: argparse.ArgumentParser, default: str | None = None, help: str = DATA_HELP,
                    type: Callable[[str], str] | None = None) -> None:
    """``--data``: where the facts come from (see :mod:`amig_plugin.sources`)."""
    p.add_argument("--data", default=default, metavar="PATH", help=help, type=type)


def add_langs_option(p: argparse.ArgumentParser, minimum: int, default: list[str], help: str = "",
                     old: str | None = None) -> None:
    """``--langs en,zh`` (at least ``minimum``); ``old`` (e.g. ``--lang``) becomes a hidden alias."""
    p.add_argument("--langs", type=opt.language_list(minimum), default=default, metavar="L1,L2",
                   help=help or f"comma-separated languages (default {','.join(default)})")
    if old:
        add_alias(p, old, "--langs", "langs", type=opt.language_list(minimum))


def add_n_option(p: argparse.ArgumentParser, default: int | None, help: str, type=opt.positive_int,
                 old: str | None = None) -> None:
    """``--n N``: how many facts; ``old`` (e.g. ``--facts``) becomes a hidden alias."""
    p.add_argument("--n", type=type, default=default, metavar="N", help=help)
    if old:
        add_alias(p, old, "--n", "n", type=type)


def add_json_option(p: argparse.ArgumentParser, help: str = "write the results as JSON to this file") -> None:
    """``--json FILE``."""
    p.add_argument("--json", default=None, metavar="FILE", help=help)
