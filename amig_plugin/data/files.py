"""Reading the text files every input format comes in: UTF-8 (BOM dropped; invalid bytes
named by file, line and column), LF or CRLF lines, and JSON Lines objects."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from .records import FactFormatError

PathLike = Union[str, "os.PathLike[str]"]


def _read_text(path: PathLike) -> str:
    """A UTF-8 text file (BOM dropped, line ends kept); invalid UTF-8 is a
    :class:`FactFormatError` naming the file, line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FactFormatError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}: "
                              f"{exc.reason}); save the file as UTF-8") from None


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, LF or CRLF, without the line ends (BOM dropped).

    Splits on ``\\n`` only (not on the other separators ``str.splitlines`` knows), so
    line numbers match what an editor shows.
    """
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def _jsonl_values(lines: Iterable[str], source: str, hint: str = "") -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for every non-blank line (numbered from 1); a line that
    is not JSON raises :class:`FactFormatError` ``"<source>:<line>: invalid JSON ..."``
    (``hint`` appended to its advice)."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise FactFormatError(
                f"{source}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); each "
                f"line must be one complete JSON object{hint}"
            ) from None
        yield lineno, value
