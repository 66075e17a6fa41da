"""The one base class of every expected error.

An :class:`AmigError` is a problem with the user's input, files or machine, not a bug: its
message is one line that names the problem and the fix. The ``amig`` command prints it
without a traceback and exits with code 2 (``--debug`` shows the traceback). Each concrete
error also derives from the builtin class that fits it (``ValueError``, ``OSError``, ...),
so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class AmigError(Exception):
    """An expected error whose message names the problem and the fix (CLI exit code 2)."""


class UsageError(AmigError, ValueError):
    """A bad argument or option value."""
