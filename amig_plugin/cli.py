"""The ``amig`` command: builds the parser from the command modules and dispatches.

    amig localize --prompt P --target T [--lang L] [--method amig|kn]
    amig demo [--n N] [--langs en,zh] [--full]
    amig likn | dkn | factcheck | run | merge | report | diff | compare ...   (amig COMMAND --help)

Each command lives in a module of :mod:`amig_plugin.commands`. Every option is checked
before any model or data file is read (:mod:`amig_plugin.commands.options`). An expected
error (a bad value, a missing file, a prompt that cannot be queried:
:class:`amig_plugin.errors.AmigError` and the builtin errors raised for user input) is
printed as one line naming the problem and the fix, with exit code 2; ``--debug`` (anywhere
on the line) or ``AMIG_DEBUG=1`` shows its traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import MODULES
from .commands import options as opt


def build_parser() -> argparse.ArgumentParser:
    parser = opt.OneLineParser(prog="amig", description="AMIG / KN knowledge-neuron localization (Chen et al. 2024) for EasyEdit")
    parser.add_argument("--version", action="version", version=f"amig-plugin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: AMIG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
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
