"""The rules for localization options, written once and without torch: the Python API
(:func:`amig_plugin.neurons.localize`) and the command line (argparse types in
:mod:`amig_plugin.commands.options`, which run before anything is loaded) both call them.
Each raises :class:`~amig_plugin.errors.UsageError` (a ``ValueError``) with one line naming
the allowed range."""

from __future__ import annotations

from typing import Any, Sequence

from .errors import UsageError


def check_tau(tau: Any) -> float:
    """τ in (0, 1]: neurons whose attribution exceeds τ · max are selected."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < float(tau) <= 1.0:
        raise UsageError(f"tau must lie in (0, 1] (a fraction of the maximum attribution), got {tau!r}")
    return float(tau)


def check_share_p(share_p: Any) -> float:
    """``share_p`` in [0, 1): neurons selected for more than this fraction of the prompts are kept."""
    if isinstance(share_p, bool) or not isinstance(share_p, (int, float)) or not 0.0 <= float(share_p) < 1.0:
        raise UsageError(f"share_p must lie in [0, 1) (keep neurons selected for more than this fraction of the "
                         f"prompts; Dai et al. 0.7), got {share_p!r}")
    return float(share_p)


def check_steps(steps: Any) -> int:
    """IG path points m: a whole number >= 2."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise UsageError(f"steps must be an integer >= 2 (IG path points; 1 point is not an integral; the paper "
                         f"uses 20), got {steps!r}")
    return steps


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(value)
    return int(value)


def check_size_range(size_range: Sequence[Any]) -> tuple[int, int]:
    """(lo, hi) of Dai et al.'s adaptive selection: whole numbers with 1 <= lo <= hi
    (ints, or their decimal text)."""
    try:
        lo, hi = (_whole(x) for x in size_range)
    except (TypeError, ValueError):
        raise UsageError(f"adaptive size range must be two whole numbers LO,HI such as 2,5, got {size_range!r}") from None
    if not 1 <= lo <= hi:
        raise UsageError(f"adaptive size range needs 1 <= LO <= HI (neurons per set), got {lo},{hi}")
    return lo, hi


def did_you_mean(name: Any, valid: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when one of ``valid`` is close to ``name`` (difflib ratio >= 0.6), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
