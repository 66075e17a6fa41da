"""BMLAMA: parallel ``<lang>.tsv`` files (row i of every file is the same fact) read into
facts, the relation recovered from the template-language prompt (:func:`load_bmlama`,
:func:`bmlama_paths`)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Mapping, Sequence

from .files import PathLike, _read_lines
from .records import MASK_PLACEHOLDER, Fact, FactFormatError, _mask_count_error, validate_language_code

_BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")


def _slug(text: str) -> str:
    """Unicode-safe relation slug: NFKC, lower case, runs of non-alphanumeric characters
    (any script's letters and digits are kept) -> ``-``. ASCII templates give the same
    slugs as before (``"[X] was born in [Y]."`` -> ``"x-was-born-in-y"``); Chinese or
    Japanese ones keep their characters (``"[X]出生于[Y]。"`` -> ``"x-出生于-y"``)."""
    s = re.sub(r"\[X\]", " x ", unicodedata.normalize("NFKC", text))
    s = re.sub(r"\[Y\]", " y ", s)
    s = "".join(ch if ch.isalnum() else "-" for ch in s.lower())
    s = re.sub(r"-+", "-", s).strip("-")
    return s or "unknown"


def _bmlama_template(row: tuple) -> str | None:
    """``[X] ... [Y]`` template of a parsed BMLAMA row, or None if the subject is not in the prompt."""
    _lineno, prompt, _ans, _cands, subject = row
    if subject not in prompt:
        return None
    return prompt.replace(subject, "[X]", 1).replace(MASK_PLACEHOLDER, "[Y]")


def _pick_template_lang(parsed: Mapping[str, tuple], wanted: str | None) -> str:
    """``wanted`` when loaded; else the loaded language whose templates split the rows into
    the most relations (the finest partition; ties: sorted order)."""
    if wanted in parsed:
        return wanted
    return max(sorted(parsed), key=lambda l: (len({_bmlama_template(r) for r in parsed[l][1]}), -sorted(parsed).index(l)))


def bmlama_paths(directory: PathLike, languages: Sequence[str] | None = None) -> dict[str, Path]:
    """``{lang: directory/<lang>.tsv}`` for ``languages`` (default: every ``*.tsv`` there)."""
    directory = Path(directory)
    if languages is None:
        languages = sorted(p.stem for p in directory.glob("*.tsv"))
        if not languages:
            raise FactFormatError(f"{directory}: no <lang>.tsv files found")
    return {lang: directory / f"{lang}.tsv" for lang in languages}


def _parse_bmlama_file(lang: str, path: Path) -> list[tuple[int, str, str, tuple[str, ...], str]]:
    lines = _read_lines(path)
    if not lines:
        raise FactFormatError(f"{path}:1: empty file; expected a header line "
                              f"{'<TAB>'.join(_BMLAMA_COLUMNS)}")
    header = [h.strip() for h in lines[0].split("\t")]
    # Quirk (BMLAMA zh.tsv): the header splits "Candidate Ans" into two fields
    # "Candidate<TAB>Ans" while the data rows have four fields. Merge them back.
    fixed: list[str] = []
    i = 0
    while i < len(header):
        if header[i] == "Candidate" and i + 1 < len(header) and header[i + 1] == "Ans":
            fixed.append("Candidate Ans")
            i += 2
        else:
            fixed.append(header[i])
            i += 1
    missing = [c for c in _BMLAMA_COLUMNS if c not in fixed]
    if missing:
        raise FactFormatError(
            f"{path}:1: missing column(s) {missing} in header {fixed}; a BMLAMA file "
            f"needs the tab-separated columns {list(_BMLAMA_COLUMNS)}"
        )
    idx = {c: fixed.index(c) for c in _BMLAMA_COLUMNS}
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # blank lines (e.g. a trailing empty line) carry no row
        fields = line.split("\t")
        if len(fields) != len(fixed):
            raise FactFormatError(
                f"{path}:{lineno}: expected {len(fixed)} tab-separated fields "
                f"{fixed}, found {len(fields)}; fix the row (a field may contain a tab "
                "or the row may be cut)"
            )
        prompt = fields[idx["Prompt"]].strip()
        ans = fields[idx["Ans"]].strip()
        subject = fields[idx["Subject"]].strip()
        n = prompt.count(MASK_PLACEHOLDER)
        if n != 1:
            raise FactFormatError(f"{path}:{lineno}: {_mask_count_error(prompt, n)}")
        if not ans:
            raise FactFormatError(f"{path}:{lineno}: empty 'Ans' (gold object); fill it in")
        if not subject:
            raise FactFormatError(f"{path}:{lineno}: empty 'Subject'; fill it in")
        cands = [c.strip() for c in fields[idx["Candidate Ans"]].split(",")]
        cands = list(dict.fromkeys(c for c in cands if c))
        if ans not in cands:
            # The gold object itself may contain a comma ("Washington, D.C."); keep it.
            cands.append(ans)
        rows.append((lineno, prompt, ans, tuple(cands), subject))
    return rows


def load_bmlama(paths: Mapping[str, PathLike], template_lang: str | None = "en") -> list[Fact]:
    """Load BMLAMA-style parallel TSV files, ``{lang: path}``; row i of every file is
    the same fact.

    Each file has the tab-separated columns ``Prompt`` (cloze sentence with the subject
    filled in and ``<mask>``), ``Ans`` (gold object), ``Candidate Ans`` (comma-separated
    objects of the same relation, gold included) and ``Subject``. LF or CRLF line ends,
    a UTF-8 BOM, and the zh.tsv header quirk (``Candidate<TAB>Ans`` as two header fields
    over four-field rows) are handled. Blank lines are skipped. If the gold object is
    missing from a row's split candidate list (e.g. it contains a comma) it is appended.

    Relation: BMLAMA has no relation column, so it is recovered from the prompt in
    ``template_lang`` (default ``"en"``; when that one is not loaded, the loaded language
    whose templates give the most relations, ties in sorted order): the first occurrence of
    the subject becomes ``[X]`` and the mask ``[Y]``, e.g. ``"[X] was born in [Y]."``.
    Rows are parallel, so any language's aligned template names the relation. The relation
    id is ``"bmlama-"`` plus a Unicode-safe slug of that template
    (``"bmlama-x-was-born-in-y"``, ``"bmlama-x-出生于-y"``), stable whatever the row order
    or file subset; the template itself is the ``relation_name``. Fact ids are
    ``"bmlama-<row>"`` with the 0-based data-row index, the cross-lingual fact id.

    Raises :class:`FactFormatError` naming the file and line for: unknown language
    code, missing column, a row with the wrong number of fields, a prompt without
    exactly one ``<mask>``, empty gold/subject, a template-language subject that does
    not occur in its prompt, and row-count mismatch across languages.
    """
    if not paths:
        raise FactFormatError("load_bmlama: no files given; pass {lang: path}")
    parsed: dict[str, tuple[Path, list]] = {}
    for lang, p in paths.items():
        p = Path(p)
        try:
            validate_language_code(lang)
        except FactFormatError as e:
            raise FactFormatError(f"{p}: {e} (the key of this file in paths)") from None
        parsed[lang] = (p, _parse_bmlama_file(lang, p))
    langs = sorted(parsed)
    counts = {lang: len(parsed[lang][1]) for lang in langs}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{parsed[l][0]}: {counts[l]} rows" for l in langs)
        shortest = min(counts.values())
        longest = max(langs, key=lambda l: counts[l])
        first_extra = f"{parsed[longest][0]}:{parsed[longest][1][shortest][0]}"
        raise FactFormatError(
            f"row count mismatch across languages ({detail}); first row without a "
            f"counterpart: {first_extra}. BMLAMA files are parallel (row i of every file "
            "is the same fact): use files from the same release"
        )
    if template_lang is not None and template_lang not in parsed and template_lang != "en":
        raise FactFormatError(f"template language {template_lang!r} is not among the loaded files {langs}; "
                              "pick one of them (or leave it out)")
    tlang = _pick_template_lang(parsed, template_lang)
    tpath, trows = parsed[tlang]
    facts: list[Fact] = []
    for i in range(counts[tlang]):
        lineno, prompt, _ans, _c, subject = trows[i]
        template = _bmlama_template(trows[i])
        if template is None:
            raise FactFormatError(
                f"{tpath}:{lineno}: subject {subject!r} does not occur in prompt "
                f"{prompt!r}; the relation template cannot be recovered (fix the "
                "Subject or Prompt field)"
            )
        try:
            fact = Fact(
                id=f"bmlama-{i}",
                relation="bmlama-" + _slug(template),
                relation_name=template,
                subject={l: parsed[l][1][i][4] for l in langs},
                object={l: parsed[l][1][i][2] for l in langs},
                prompts={l: (parsed[l][1][i][1],) for l in langs},
                candidates={l: parsed[l][1][i][3] for l in langs},
            )
        except FactFormatError as e:
            where = ", ".join(f"{parsed[l][0]}:{parsed[l][1][i][0]}" for l in langs)
            raise FactFormatError(f"{where}: {e}") from None
        facts.append(fact)
    return facts
