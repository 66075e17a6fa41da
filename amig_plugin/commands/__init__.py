"""Subcommands of ``amig`` beyond localize/demo, one module each.

Each module defines ``add_commands(subparsers)`` (argparse sub-parsers whose ``func``
takes the parsed args and returns an exit code) and may define
``demo_section(model, tokenizer, langs, seed) -> None`` that ``amig demo`` runs.
"""

from . import compare, dkn, likn, run

MODULES = (likn, dkn, run, compare)
