"""Sampling and grouping facts: wrong objects for a fact (:func:`wrong_objects`), facts by
relation (:func:`group_by_relation`) and a relation-balanced, prefix-consistent sample
(:func:`sample_facts`)."""

from __future__ import annotations

import random
from typing import Iterable, Sequence

from .records import Fact


def object_key(text: str) -> str:
    """``text`` as objects are compared: runs of whitespace made one space, casefolded."""
    return " ".join(text.split()).casefold()


def true_objects(fact: Fact, lang: str, facts_of_relation: Iterable[Fact] | None = None) -> set[str]:
    """:func:`object_key` of every object true for ``fact``'s subject and relation in ``lang``:
    the gold object and the objects of the facts in ``facts_of_relation`` with the same
    relation and subject (e.g. other borders of a country)."""
    keys = {object_key(fact.target(lang))}
    subj = object_key(fact.subject[lang])
    keys.update(object_key(f.object[lang]) for f in facts_of_relation or ()
                if f.relation == fact.relation and lang in f.object and object_key(f.subject.get(lang, "")) == subj)
    return keys


def wrong_objects(
    fact: Fact,
    lang: str,
    facts_of_relation: Iterable[Fact] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Objects of the same relation that make ``fact`` false in ``lang``.

    The pool is ``fact.candidates[lang]``; if that is empty, the objects of
    ``facts_of_relation`` (same relation) in ``lang``. Removed: the gold object and
    every object that is true for the same subject and relation among
    ``facts_of_relation`` (e.g. other borders of a country), compared case- and
    whitespace-insensitively; duplicates are removed. The result is shuffled with a
    generator seeded by ``(seed, fact.id, lang)`` (stable across runs and processes)
    and cut to at most ``n`` items.
    """
    others = [f for f in (facts_of_relation or ()) if f.relation == fact.relation and lang in f.object]
    true_objs = true_objects(fact, lang, others)
    pool = list(fact.candidates.get(lang, ())) or [f.object[lang] for f in others]
    out: list[str] = []
    seen: set[str] = set()
    for c in pool:
        k = object_key(c)
        if k in true_objs or k in seen:
            continue
        seen.add(k)
        out.append(c)
    random.Random(f"{seed}:{fact.id}:{lang}").shuffle(out)
    if n is not None:
        if n < 0:
            raise ValueError(f"n must be >= 0 or None, got {n}")
        out = out[:n]
    return out


def group_by_relation(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    """``{relation: [facts]}``, relations in order of first appearance, facts in order."""
    groups: dict[str, list[Fact]] = {}
    for f in facts:
        groups.setdefault(f.relation, []).append(f)
    return groups


def sample_facts(facts: Sequence[Fact], n: int, seed: int = 0) -> list[Fact]:
    """``n`` facts spread over relations, deterministic and prefix-consistent.

    Facts are shuffled within each relation (seeded), then taken round-robin over the
    relations (sorted by id), so ``sample_facts(fs, n)`` is a prefix of
    ``sample_facts(fs, n + k)``: studies of 100, 200 and 300 facts share their first facts
    (and cached localizations).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(facts):
        raise ValueError(f"asked for {n} facts but only {len(facts)} are available")
    by_relation = group_by_relation(facts)
    queues = []
    for relation in sorted(by_relation):
        members = list(by_relation[relation])
        random.Random(f"{seed}:{relation}").shuffle(members)
        queues.append(members)
    out: list[Fact] = []
    depth = 0
    while len(out) < n:
        for queue in queues:
            if depth < len(queue) and len(out) < n:
                out.append(queue[depth])
        depth += 1
    return out
