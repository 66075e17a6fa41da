"""BMLAMA-format files written from the shipped facts, so the BMLAMA reader and everything that
loads a BMLAMA folder can be tested without the real data set."""

from __future__ import annotations

from pathlib import Path

from amig_plugin.data import shipped_facts


def write_bmlama_from_shipped(folder: Path, langs=("en", "zh"), n: int | None = 12) -> Path:
    """Write ``<lang>.tsv`` for each of ``langs`` into ``folder`` (columns Prompt / Ans /
    Candidate Ans / Subject; row i of every file is the same fact): the first ``n`` shipped facts
    that have every language (all of them when ``n`` is None), each with its first prompt that
    contains the subject (the reader recovers the relation template from it). Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    facts = list(shipped_facts(list(langs)))[:n]
    for lang in langs:
        rows = ["Prompt\tAns\tCandidate Ans\tSubject"]
        for f in facts:
            prompt = next((p for p in f.prompts[lang] if f.subject[lang] in p), f.prompts[lang][0])
            cands = ", ".join(dict.fromkeys([f.target(lang), *f.candidates.get(lang, ())]))
            rows.append(f"{prompt}\t{f.target(lang)}\t{cands}\t{f.subject[lang]}")
        (folder / f"{lang}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
