"""The data of fact-checking: DKN / dev / test splits per relation, wrong candidates, and the
true and wrong (prompt, candidate) queries.

- **Facts and wrong facts.** Each checked fact gives one true query (its prompt with the
  gold object) and ``n_wrong`` wrong queries: other objects of the same relation
  (BMLAMA's candidate lists, else the relation's objects), never an object that is true
  for the same subject and relation (:func:`wrong_candidates`), chosen with a seed.
- **Split, per relation**: the relation's facts (in sample order) are cut into a DKN part,
  a dev part and a test part (``fractions``, default 1/3 each; at least one fact each,
  so a relation needs ``min_facts = 3``; relations with fewer are skipped and listed).
- **Causal mode**: :func:`candidate_query` gives the (prompt, target) scored for a
  candidate: unchanged in ``"cut"`` mode, (prefix, candidate + rest of the sentence) in
  ``"sentence"`` mode.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from ..data import Fact, causal_cloze, group_by_relation, object_key, split_prompt_at_mask, true_objects, wrong_objects
from ..errors import AmigError
from ..localization import cloze_query

PARTS = ("dkn", "dev", "test")
DEFAULT_FRACTIONS = (1 / 3, 1 / 3, 1 / 3)


class TooFewFactsError(AmigError, ValueError):
    """A relation (or the whole set) has too few facts to split into DKN / dev / test."""


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(x) for x in fractions)
    if len(fr) != 3 or any(math.isnan(x) or x <= 0 for x in fr):
        raise ValueError(f"fractions must be three positive numbers (DKN, dev, test parts), got {fractions!r}")
    total = sum(fr)
    return tuple(x / total for x in fr)  # type: ignore[return-value]


def split_relation(facts: Sequence[Fact], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, list[Fact]]:
    """Cut one relation's facts (in their order) into DKN / dev / test parts, each >= 1 fact.

    Raises :class:`TooFewFactsError` for fewer than 3 facts."""
    fr = check_fractions(fractions)
    n = len(facts)
    if n < 3:
        raise TooFewFactsError(f"{n} fact(s) cannot be split into DKN, dev and test parts (one each at least); "
                               "give the relation 3 or more facts")
    n_dkn = max(1, round(n * fr[0]))
    n_dev = max(1, round(n * fr[1]))
    while n_dkn + n_dev > n - 1:
        if n_dkn >= n_dev:
            n_dkn -= 1
        else:
            n_dev -= 1
    return {"dkn": list(facts[:n_dkn]), "dev": list(facts[n_dkn:n_dkn + n_dev]), "test": list(facts[n_dkn + n_dev:])}


def split_facts(facts: Sequence[Fact], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                min_facts: int = 3) -> tuple[dict[str, dict[str, list[Fact]]], dict[str, str]]:
    """``({relation: {part: facts}}, {skipped relation: reason})``; documented fallback:
    relations with fewer than ``max(3, min_facts)`` facts are skipped (and listed), an error
    only if no relation is left."""
    check_fractions(fractions)
    splits, skipped = {}, {}
    need = max(3, int(min_facts))
    for relation, members in group_by_relation(facts).items():
        if len(members) < need:
            skipped[relation] = f"{len(members)} fact(s) < {need} needed for DKN/dev/test parts"
            continue
        splits[relation] = split_relation(members, fractions)
    if not splits:
        detail = "; ".join(f"{r}: {why}" for r, why in list(skipped.items())[:5])
        raise TooFewFactsError(f"no relation has enough facts to split into DKN/dev/test parts ({detail}); "
                               f"sample more facts per relation (at least {need} each)")
    return splits, skipped


def wrong_candidates(fact: Fact, lang: str, facts_of_relation: Iterable[Fact] | None = None, n: int | None = 1,
                     seed: int = 0) -> list[str]:
    """Up to ``n`` wrong objects for ``fact`` in ``lang``, reproducible with ``seed``.

    :func:`amig_plugin.data.wrong_objects` (candidate list, else the relation's objects;
    the gold object and every object true for the same subject and relation removed), and
    more conservatively also every candidate that contains, or is contained in, a true
    object (``"北京市"`` vs ``"北京"``, ``"New York City"`` vs ``"New York"``)."""
    facts_of_relation = list(facts_of_relation or ())
    trues = true_objects(fact, lang, facts_of_relation)
    out = []
    for c in wrong_objects(fact, lang, facts_of_relation, None, seed):
        k = object_key(c)
        if any(k == t or (len(t) >= 2 and t in k) or (len(k) >= 2 and k in t) for t in trues):
            continue
        out.append(c)
    return out if n is None else out[:n]


def candidate_query(prompt: str, candidate: str, causal_mode: str = "cut") -> tuple[str, str]:
    """(prompt, target) the engine scores for ``candidate``: unchanged in cut mode (the
    engine cuts the prompt at ``<mask>``); in sentence mode (prefix, candidate + rest of the
    sentence) (:func:`amig_plugin.localization.cloze_query`). Pass the effective mode
    (:func:`amig_plugin.dkn.effective_causal_mode`: cut for masked LMs)."""
    if causal_mode == "cut":
        return prompt, candidate
    return cloze_query(causal_cloze(prompt), candidate, causal_mode=causal_mode, kind="causal")


def _object_part(query: tuple[str, str], prompt: str) -> tuple[str, str]:
    """The sentence-mode query cut back to the candidate alone (the rest of the sentence removed)."""
    rest = split_prompt_at_mask(causal_cloze(prompt))[1].rstrip()
    qp, qt = query
    return (qp, qt[:len(qt) - len(rest)]) if rest else query



def build_queries(splits: Mapping[str, Mapping[str, Sequence[Fact]]], lang: str, pool: Sequence[Fact], *,
                  n_wrong: int = 1, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """True and wrong queries of the dev and test parts: ``(queries, {fact_id: why skipped})``.

    ``pool``: all facts known (the whole data set), so that wrong objects exclude objects
    true for the same subject anywhere in it."""
    if not isinstance(n_wrong, int) or n_wrong < 1:
        raise ValueError(f"n_wrong must be a positive integer, got {n_wrong!r}")
    groups = group_by_relation(f for f in pool if lang in f.object)
    queries, skipped = [], {}
    for relation, parts in splits.items():
        for part in ("dev", "test"):
            for fact in parts[part]:
                wrong = wrong_candidates(fact, lang, groups.get(relation, ()), n=n_wrong, seed=seed)
                if not wrong:
                    skipped[fact.id] = "no wrong object left after excluding true ones"
                    continue
                prompt = fact.prompt(lang)
                queries.append(dict(fact_id=fact.id, relation=relation, part=part, prompt=prompt,
                                    candidate=fact.target(lang), label=True))
                queries += [dict(fact_id=fact.id, relation=relation, part=part, prompt=prompt, candidate=w, label=False)
                            for w in wrong]
    return queries, skipped
