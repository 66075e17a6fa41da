"""mLAMA: ``<root>/<lang>/templates.jsonl`` and ``<root>/<lang>/<relation>.jsonl`` joined
across languages by uuid (:func:`load_mlama`, :func:`load_mlama_with_report` and its
:class:`MLamaReport` of what was kept and dropped)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .files import PathLike, _jsonl_values, _read_lines
from .records import MASK_PLACEHOLDER, Fact, FactFormatError, require_fields, validate_language_code

logger = logging.getLogger(__name__)


@dataclass
class MLamaReport:
    """What :func:`load_mlama_with_report` kept and dropped.

    Attributes:
        languages: the requested languages.
        relations: relations loaded (template and fact file present in every language).
        skipped_relations: relation -> reason it was skipped (missing template or file
            in some language).
        kept: number of facts returned.
        dropped: uuids seen in some but not all languages (summed over relations).
        dropped_by_language: language -> uuids of that language dropped because another
            language lacks them.
        duplicates: repeated uuids within one file (first occurrence kept).
    """

    languages: tuple[str, ...]
    relations: list[str] = field(default_factory=list)
    skipped_relations: dict[str, str] = field(default_factory=dict)
    kept: int = 0
    dropped: int = 0
    dropped_by_language: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


def _read_jsonl_objects(path: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line of ``path``; each must be a JSON object
    whose ``required`` keys hold non-empty strings."""
    out = []
    for lineno, d in _jsonl_values(_read_lines(path), str(path)):
        if not isinstance(d, dict):
            raise FactFormatError(
                f"{path}:{lineno}: expected a JSON object, got {type(d).__name__}"
            )
        require_fields(d, required, where=f"{path}:{lineno}: ", noun="key", holder="each line")
        for k in required:
            if not isinstance(d[k], str) or not d[k].strip():
                raise FactFormatError(
                    f"{path}:{lineno}: key {k!r} must be a non-empty string, got {d[k]!r}"
                )
        out.append((lineno, d))
    return out


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")


def _fill_template(template: str, subject: str, tidy: bool) -> str:
    left, right = template.split("[Y]")
    prompt = (left + MASK_PLACEHOLDER + right).replace("[X]", subject)
    if tidy:
        prompt = _SPACE_BEFORE_PUNCT.sub(r"\1", prompt).strip()
    return prompt


def load_mlama_with_report(
    root: PathLike,
    languages: Sequence[str],
    relations: Sequence[str] | None = None,
    tidy: bool = True,
) -> tuple[list[Fact], MLamaReport]:
    """Load mLAMA facts joined across ``languages`` by uuid, with a report.

    Layout: ``<root>/<lang>/templates.jsonl`` (lines ``{"relation": "P19", "template":
    "[X] was born in [Y] ."}``) and ``<root>/<lang>/<relation>.jsonl`` (lines
    ``{"uuid": ..., "sub_label": ..., "obj_label": ...}``). The prompt is the template
    with ``[X]`` -> subject and ``[Y]`` -> ``<mask>``; with ``tidy`` (default) the spaces
    mLAMA puts before punctuation are removed (``"born in <mask>."``).

    Only uuids present in every requested language are kept; the others are counted in
    the report (``dropped``, ``dropped_by_language``) and logged, never dropped
    silently. Relations missing a template or a fact file in some language are listed
    in ``skipped_relations`` (an explicitly requested relation that is missing is an
    error). Candidates of a fact in a language are all objects of its relation among
    the kept facts in that language (sorted, gold included). Fact ids are
    ``"mlama-<uuid>"``.
    """
    root = Path(root)
    langs = _languages(root, languages)
    report = MLamaReport(languages=tuple(langs), dropped_by_language={lang: 0 for lang in langs})
    templates = {lang: _read_templates(root / lang / "templates.jsonl") for lang in langs}
    report.relations, report.skipped_relations = _relations(root, templates, relations)
    facts: list[Fact] = []
    for rel in report.relations:
        facts += _relation_facts(root, rel, templates, tidy, report)
    report.kept = len(facts)
    _log_report(report, root)
    return facts, report


def _languages(root: Path, languages: Sequence[str]) -> list[str]:
    """The requested languages, deduplicated; each a valid code with a ``<root>/<lang>`` folder."""
    if isinstance(languages, str):
        languages = [languages]
    langs = list(dict.fromkeys(languages))
    if not langs:
        raise FactFormatError("load_mlama: no languages given")
    for lang in langs:
        try:
            validate_language_code(lang)
        except FactFormatError as e:
            raise FactFormatError(f"{root / lang}: {e}") from None
        if not (root / lang).is_dir():
            raise FactFormatError(
                f"{root / lang}: no such directory; mLAMA needs <root>/<lang>/templates.jsonl"
            )
    return langs


def _read_templates(tpath: Path) -> dict[str, str]:
    """relation -> template (``[X]`` and ``[Y]`` once each) of one ``templates.jsonl``."""
    if not tpath.is_file():
        raise FactFormatError(f"{tpath}: file not found; mLAMA needs one per language")
    tl: dict[str, str] = {}
    for lineno, d in _read_jsonl_objects(tpath, ("relation", "template")):
        t = d["template"]
        if t.count("[X]") != 1 or t.count("[Y]") != 1:
            raise FactFormatError(
                f"{tpath}:{lineno}: template {t!r} must contain [X] (subject) and "
                "[Y] (object) exactly once each"
            )
        tl[d["relation"]] = t
    return tl


def _relations(root: Path, templates: dict[str, dict[str, str]],
               relations: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """``(relations with a template and a fact file in every language, skipped relation ->
    reason)``; a requested relation that is missing somewhere is an error."""
    langs = list(templates)
    if relations is None:
        all_rels = sorted(set().union(*(set(t) for t in templates.values())))
    else:
        all_rels = list(dict.fromkeys(relations))
    kept: list[str] = []
    skipped: dict[str, str] = {}
    for rel in all_rels:
        reasons = [f"no template in {lang}" for lang in langs if rel not in templates[lang]]
        reasons += [
            f"no file {root / lang / (rel + '.jsonl')}"
            for lang in langs
            if rel in templates[lang] and not (root / lang / f"{rel}.jsonl").is_file()
        ]
        if reasons:
            if relations is not None:
                raise FactFormatError(f"relation {rel!r} requested but: {'; '.join(reasons)}")
            skipped[rel] = "; ".join(reasons)
        else:
            kept.append(rel)
    return kept, skipped


def _relation_facts(root: Path, rel: str, templates: dict[str, dict[str, str]], tidy: bool,
                    report: MLamaReport) -> list[Fact]:
    """The facts of relation ``rel`` whose uuid every language has (the rest counted in
    ``report``: ``dropped``, ``dropped_by_language``, ``duplicates``)."""
    langs = list(templates)
    per_lang: dict[str, dict[str, tuple[int, dict]]] = {}
    for lang in langs:
        fpath = root / lang / f"{rel}.jsonl"
        rows: dict[str, tuple[int, dict]] = {}
        for lineno, d in _read_jsonl_objects(fpath, ("uuid", "sub_label", "obj_label")):
            if d["uuid"] in rows:
                report.duplicates += 1
                continue
            rows[d["uuid"]] = (lineno, d)
        per_lang[lang] = rows
    first = per_lang[langs[0]]
    common = [u for u in first if all(u in per_lang[l] for l in langs[1:])]
    common_set = set(common)
    union = set().union(*(set(r) for r in per_lang.values()))
    report.dropped += len(union) - len(common)
    for lang in langs:
        report.dropped_by_language[lang] += len(set(per_lang[lang]) - common_set)
    cands = {
        lang: tuple(sorted({per_lang[lang][u][1]["obj_label"].strip() for u in common}))
        for lang in langs
    }
    facts: list[Fact] = []
    for u in common:
        try:
            facts.append(
                Fact(
                    id=f"mlama-{u}",
                    relation=rel,
                    relation_name=templates[langs[0]][rel],
                    subject={l: per_lang[l][u][1]["sub_label"].strip() for l in langs},
                    object={l: per_lang[l][u][1]["obj_label"].strip() for l in langs},
                    prompts={
                        l: (_fill_template(templates[l][rel],
                                           per_lang[l][u][1]["sub_label"].strip(), tidy),)
                        for l in langs
                    },
                    candidates=cands,
                )
            )
        except FactFormatError as e:
            where = ", ".join(
                f"{root / l / (rel + '.jsonl')}:{per_lang[l][u][0]}" for l in langs
            )
            raise FactFormatError(f"{where}: {e}") from None
    return facts


def _log_report(report: MLamaReport, root: Path) -> None:
    """One log line with the counts: a warning when anything was dropped or skipped."""
    msg = (
        f"mLAMA {root} {list(report.languages)}: kept {report.kept} facts over {len(report.relations)} "
        f"relations; dropped {report.dropped} uuids not present in all languages "
        f"(per language: {report.dropped_by_language})"
    )
    if report.skipped_relations:
        msg += f"; skipped relations {sorted(report.skipped_relations)}"
    if report.duplicates:
        msg += f"; ignored {report.duplicates} repeated uuids"
    if report.dropped or report.skipped_relations or report.duplicates:
        logger.warning(msg)
    else:
        logger.info(msg)


def load_mlama(
    root: PathLike,
    languages: Sequence[str],
    relations: Sequence[str] | None = None,
    tidy: bool = True,
) -> list[Fact]:
    """Like :func:`load_mlama_with_report` without the report (the counts are logged)."""
    return load_mlama_with_report(root, languages, relations=relations, tidy=tidy)[0]
