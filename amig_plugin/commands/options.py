"""Checks of ``amig`` command-line values, shared by every command.

Each function is an argparse ``type=``: it turns the text into the value or raises
:class:`argparse.ArgumentTypeError` with a message that names the allowed range, so a bad
value stops the command before any model or data file is read (one line, exit code 2).
Checks that involve several options at once live in :func:`check_before_loading` helpers of
the command modules; they too run before anything is loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, NoReturn

from .. import checks
from ..errors import UsageError

__all__ = [
    "OneLineParser", "int_at_least", "positive_int", "non_negative_int", "ig_steps", "threads",
    "fraction", "tau", "share_p", "size_range", "language", "device", "language_list", "existing_path", "run_folder",
]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``amig localize: error: ... (see --help)``),
    exit code 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int, what: str = "") -> Callable[[str], int]:
    """A type for whole numbers >= ``low``."""

    def check(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}{what}, got {value}")
        return value

    check.__name__ = f"int>={low}"
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
threads = int_at_least(1, " (torch threads; leave the option out for torch's choice)")


def fraction(low: float, high: float, *, low_open: bool, high_open: bool, what: str = "") -> Callable[[str], float]:
    """A type for numbers in an interval, e.g. ``(0, 1]``."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"

    def check(text: str) -> float:
        value = _float(text)
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must lie in {lo}{low:g}, {high:g}{hi}{what}, got {text}")
        return value

    check.__name__ = f"number in {lo}{low:g}, {high:g}{hi}"
    return check


unit_interval_open = fraction(0.0, 1.0, low_open=False, high_open=True)


def _ruled(parse: Callable[[str], Any], check: Callable[[Any], Any], name: str) -> Callable[[str], Any]:
    """A type that parses the text and applies one of the shared rules of :mod:`amig_plugin.checks`."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


ig_steps = _ruled(_int, checks.check_steps, "IG steps")
tau = _ruled(_float, checks.check_tau, "tau")
share_p = _ruled(_float, checks.check_share_p, "share_p")
#: ``LO,HI`` for Dai et al.'s adaptive selection
size_range = _ruled(lambda text: [part.strip() for part in text.split(",")], checks.check_size_range, "size range")


def language(text: str) -> str:
    """One language code (``en``, ``zh``, ``zh-TW``)."""
    from ..data import FactFormatError, validate_language_code

    try:
        return validate_language_code(text.strip())
    except FactFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def language_list(minimum: int = 1) -> Callable[[str], list[str]]:
    """A type for comma lists of distinct language codes (``en,zh``), at least ``minimum``."""

    def check(text: str) -> list[str]:
        langs = [language(part) for part in text.split(",") if part.strip()]
        if len(langs) < minimum:
            raise argparse.ArgumentTypeError(
                f"needs at least {minimum} comma-separated language code(s), e.g. en,zh; got {text!r}")
        twice = sorted({l for l in langs if langs.count(l) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"language {', '.join(twice)} given twice in {text!r}; list each once")
        return langs

    check.__name__ = "language list"
    return check


_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


def device(text: str) -> str:
    """A torch device name: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``xpu``."""
    if not _DEVICE.match(text.strip()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps")
    return text.strip()


def existing_path(text: str) -> str:
    """A file or folder that exists."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder; check the path")
    return text


def run_folder(text: str) -> str:
    """A run folder written by ``amig run`` (it holds ``config.yaml``)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such run folder; give a folder written by `amig run`")
    if not (path / "config.yaml").is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a run folder (no config.yaml); give a folder written by `amig run`")
    return text


def usage_error(message: str) -> UsageError:
    """A :class:`UsageError` for a combination of options (printed as one line, exit code 2)."""
    return UsageError(message)


def debug_from_env() -> bool:
    """``AMIG_DEBUG`` set to anything but empty or 0: show tracebacks (like ``--debug``)."""
    return os.environ.get("AMIG_DEBUG", "") not in ("", "0")
