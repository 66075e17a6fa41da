"""Our JSONL fact format (one :class:`~amig_plugin.data.records.Fact` per line, see
``amig_plugin/resources/FACTS_FORMAT.md``): :func:`load_facts`, :func:`save_facts` and the
packaged English/Chinese set, :func:`shipped_facts`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from .files import PathLike, _jsonl_values, _read_text
from .records import Fact, FactFormatError, validate_language_code

#: Name of the packaged English/Chinese fact file (in ``amig_plugin/resources``).
SHIPPED_FACTS_FILE = "facts_en_zh.jsonl"


def _facts_from_lines(lines: Iterable[str], source: str) -> list[Fact]:
    facts: list[Fact] = []
    seen: dict[str, int] = {}
    for lineno, d in _jsonl_values(lines, source, hint=" (see FACTS_FORMAT.md)"):
        try:
            fact = Fact.from_dict(d)
        except FactFormatError as e:
            raise FactFormatError(f"{source}:{lineno}: {e}") from None
        if fact.id in seen:
            raise FactFormatError(
                f"{source}:{lineno}: duplicate fact id {fact.id!r} (first on line "
                f"{seen[fact.id]}); give every fact a unique id"
            )
        seen[fact.id] = lineno
        facts.append(fact)
    return facts


def load_facts(path: PathLike) -> list[Fact]:
    """Load facts from our JSONL format (one JSON object per line, blank lines allowed)."""
    path = Path(path)
    return _facts_from_lines(_read_text(path).split("\n"), str(path))


def save_facts(facts: Iterable[Fact], path: PathLike) -> None:
    """Write facts as JSONL (UTF-8, non-ASCII kept), loadable by :func:`load_facts`."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for fact in facts:
            f.write(json.dumps(fact.to_dict(), ensure_ascii=False) + "\n")


def shipped_facts(languages: Sequence[str] | None = None) -> list[Fact]:
    """The packaged English/Chinese fact set (``resources/facts_en_zh.jsonl``).

    With ``languages`` (e.g. ``["zh"]``) every fact is restricted to those languages;
    asking for a language the set lacks raises :class:`FactFormatError`.
    """
    res = resources.files("amig_plugin") / "resources" / SHIPPED_FACTS_FILE
    text = res.read_text(encoding="utf-8")
    facts = _facts_from_lines(text.split("\n"), f"amig_plugin/resources/{SHIPPED_FACTS_FILE}")
    if languages is None:
        return facts
    if isinstance(languages, str):
        languages = [languages]
    langs = [validate_language_code(l) for l in languages]
    have = set().union(*(f.object for f in facts)) if facts else set()
    missing = [l for l in langs if l not in have]
    if missing:
        raise FactFormatError(
            f"the shipped fact set has no {missing}; it has {sorted(have)}. Load your "
            "own facts with load_facts(), load_bmlama() or load_mlama()"
        )
    return [f.restrict(langs) for f in facts]
