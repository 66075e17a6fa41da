"""One loader for every fact source a command or a run config names.

    load_fact_source(path, langs, n=None, seed=0, template_lang="en") -> FactSource

``path`` is detected by what it is:

=====================================  ===========  ====================================
``path``                               kind         loaded with
=====================================  ===========  ====================================
``None``, ``""`` or ``"shipped"``      shipped      :func:`amig_plugin.data.shipped_facts`
a folder with ``<lang>.tsv`` per lang  bmlama       :func:`amig_plugin.data.load_bmlama`
a folder with ``<lang>/templates.jsonl``  mlama     :func:`amig_plugin.data.load_mlama`
a ``.tsv`` file                        bmlama       one language: the file's stem
any other file                         jsonl        :func:`amig_plugin.data.load_facts`
=====================================  ===========  ====================================

Facts lacking one of ``langs`` are left out (with a note for a JSONL file). With
``restrict`` (default) every fact keeps only ``langs``; without it, the facts keep every
language they have (the DKN record stores key facts that way). With ``n``, the first ``n``
of :func:`amig_plugin.data.sample_facts` (prefix-consistent, seeded) are returned.
A bad path or format is one :class:`amig_plugin.errors.AmigError` line naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .data import (Fact, FactFormatError, bmlama_paths, load_bmlama, load_facts, load_mlama, sample_facts,
                   shipped_facts)
from .errors import AmigError

__all__ = ["FactSource", "FactSourceError", "NotEnoughFacts", "SHIPPED", "load_fact_source", "source_kind"]

#: the name of the packaged facts on a command line (``--data shipped``)
SHIPPED = "shipped"
KINDS = ("shipped", "bmlama", "mlama", "jsonl")


class FactSourceError(AmigError, FileNotFoundError):
    """``--data`` names nothing that can be read as facts."""


class NotEnoughFacts(AmigError, ValueError):
    """``--n`` asks for more facts than the source has in the requested languages."""


@dataclass
class FactSource:
    """Facts of one source, a description for reports (``"BMLAMA path"``) and notes on what was left out."""

    facts: list[Fact]
    description: str
    notes: list[str] = field(default_factory=list)
    kind: str = "shipped"


def source_kind(path: str | None, langs: Sequence[str], option: str = "--data") -> str:
    """``shipped``, ``bmlama``, ``mlama`` or ``jsonl`` for ``path`` (see the module docstring)."""
    if path in (None, "", SHIPPED):
        return "shipped"
    p = Path(path).expanduser()
    if p.is_dir():
        missing = [l for l in langs if not (p / f"{l}.tsv").is_file()]
        if not missing:
            return "bmlama"
        if all((p / l / "templates.jsonl").is_file() for l in langs):
            return "mlama"
        raise FactFormatError(
            f"{p}: not a BMLAMA directory (no {', '.join(l + '.tsv' for l in missing)} in this folder) nor an mLAMA "
            f"directory (needs {', '.join(l + '/templates.jsonl' for l in langs)}); give a folder with a <lang>.tsv "
            f"file per language of {option.replace('data', 'langs')}")
    if p.is_file():
        return "bmlama" if p.suffix == ".tsv" else "jsonl"
    raise FactSourceError(f"{option} {path}: no such file or folder; give a BMLAMA folder (<lang>.tsv files), an "
                          f"mLAMA folder, a .jsonl fact file or 'shipped'")


def _bmlama(p: Path, langs: list[str], template_lang: str | None) -> list[Fact]:
    if p.is_file():
        return load_bmlama({p.stem: p})
    # only the requested languages' files (+ the template language's, when there): another may be broken or absent
    extra = [template_lang] if template_lang and template_lang not in langs and (p / f"{template_lang}.tsv").is_file() else []
    return load_bmlama(bmlama_paths(p, langs + extra), template_lang=template_lang)


def load_fact_source(path: str | None, langs: Sequence[str], *, n: int | None = None, seed: int = 0,
                     template_lang: str | None = "en", restrict: bool = True, option: str = "--data") -> FactSource:
    """The facts of ``path`` with every language of ``langs`` (see the module docstring);
    ``option`` names the setting in error messages (``--data``, ``'data.path'``)."""
    langs = list(langs)
    kind = source_kind(path, langs, option)
    notes: list[str] = []
    p = Path(path).expanduser() if kind != "shipped" else None
    if kind == "shipped":
        facts, description = (shipped_facts(langs) if restrict else shipped_facts()), "shipped facts"
    elif kind == "bmlama":
        facts, description = _bmlama(p, langs, template_lang), f"BMLAMA {path}"
    elif kind == "mlama":
        facts, description = load_mlama(p, langs), f"mLAMA {path}"
    else:
        facts, description = load_facts(p), f"JSONL {path}"
    have = [f for f in facts if all(l in f.object and l in f.prompts for l in langs)]
    if kind == "jsonl" and len(have) < len(facts):
        notes.append(f"{len(facts) - len(have)} of {len(facts)} facts in {path} lack one of {langs}: not used")
    if restrict:
        have = [f.restrict(langs) for f in have]
    if n is not None:
        if n > len(have):
            raise NotEnoughFacts(f"--n {n}: only {len(have)} facts with {', '.join(langs)} in "
                                 f"{path or SHIPPED!r}; give a smaller --n")
        have = sample_facts(have, n, seed=seed)
    return FactSource(have, description, notes, kind)
