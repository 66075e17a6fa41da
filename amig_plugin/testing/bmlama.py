"""BMLAMA-format files: hand-given rows (``write_tsv``) or the shipped facts
(``write_bmlama_from_shipped``), so the BMLAMA reader and everything that loads a BMLAMA folder
can be tested without the real data set."""

from __future__ import annotations

from pathlib import Path

from amig_plugin.data import shipped_facts


BMLAMA_HEADER = "Prompt\tAns\tCandidate Ans\tSubject"


def write_tsv(path: Path, rows, header: str = BMLAMA_HEADER, eol: str = "\n") -> Path:
    """Write ``header`` and the tab-joined ``rows`` to ``path`` (UTF-8, lines ended by ``eol``:
    BMLAMA-17's zh.tsv has CRLF and a header split as "Candidate<TAB>Ans"). Returns ``path``."""
    path = Path(path)
    path.write_bytes((eol.join([header] + ["\t".join(r) for r in rows]) + eol).encode("utf-8"))
    return path


def write_bmlama_from_shipped(folder: Path, langs=("en", "zh"), n: int | None = 12) -> Path:
    """Write ``<lang>.tsv`` for each of ``langs`` into ``folder`` (columns Prompt / Ans /
    Candidate Ans / Subject; row i of every file is the same fact): the first ``n`` shipped facts
    that have every language (all of them when ``n`` is None), each with its first prompt that
    contains the subject (the reader recovers the relation template from it). Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    facts = list(shipped_facts(list(langs)))[:n]
    for lang in langs:
        rows = []
        for f in facts:
            prompt = next((p for p in f.prompts[lang] if f.subject[lang] in p), f.prompts[lang][0])
            cands = ", ".join(dict.fromkeys([f.target(lang), *f.candidates.get(lang, ())]))
            rows.append([prompt, f.target(lang), cands, f.subject[lang]])
        write_tsv(folder / f"{lang}.tsv", rows)
    return folder
