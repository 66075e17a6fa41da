"""A few capital-city facts written for the tiny word tokenizer (every word is in its vocabulary)."""

from __future__ import annotations

from amig_plugin.data import Fact

CAPITALS = [("france", "paris", "法国", "巴黎"), ("germany", "berlin", "germany", "berlin"),
            ("japan", "tokyo", "japan", "tokyo"), ("italy", "rome", "italy", "rome"),
            ("spain", "madrid", "spain", "madrid")]


def tiny_facts(langs=("en", "zh"), n=5) -> list[Fact]:
    """Capital facts (en, zh, de) the word tokenizer of :func:`~amig_plugin.testing.tokenizers.word_tokenizer`
    can read, parallel across languages, with parallel candidates (the first ``n`` of CAPITALS)."""
    en_objs = [c[1] for c in CAPITALS]
    zh_objs = [c[3] for c in CAPITALS]
    facts = []
    for country, city, zh_country, zh_city in CAPITALS[:n]:
        prompts = {"en": [f"the capital of {country} is <mask> ."], "zh": [f"{zh_country} 的 首都 是 <mask> 。"],
                   "de": [f"capital of {country} is <mask> ."]}
        subject = {"en": country, "zh": zh_country, "de": country}
        obj = {"en": city, "zh": zh_city, "de": city}
        cands = {"en": en_objs, "zh": zh_objs, "de": en_objs}
        facts.append(Fact(id=f"cap-{country}", relation="P36", subject={l: subject[l] for l in langs},
                          object={l: obj[l] for l in langs}, prompts={l: prompts[l] for l in langs},
                          candidates={l: cands[l] for l in langs}))
    return facts
