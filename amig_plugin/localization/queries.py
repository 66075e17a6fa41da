"""The (prompt, target) a localization or a score is computed on, per causal mode.

``cut`` mode (and masked LMs): the cloze prompt with the gold object; ``sentence`` mode
(causal LMs): (prefix, object + rest of the sentence).
"""

from __future__ import annotations

from ..data import CAUSAL_MODES, MASK_PLACEHOLDER, Fact, causal_cloze, causal_prompt_and_target


def fact_query(fact: Fact, lang: str, *, target: str | None = None, prompt_index: int = 0,
               causal_mode: str = "cut", kind: str = "causal") -> tuple[str, str]:
    """(prompt, target) to give the engine for ``fact`` in ``lang`` (:func:`cloze_query` of its
    prompt). ``target`` overrides the gold object (a candidate, the new object of an edit)."""
    check_causal_mode(causal_mode)
    prompt = fact.prompt(lang, prompt_index)
    target = fact.target(lang) if target is None else target
    return cloze_query(prompt, target, causal_mode=causal_mode, kind=kind)


def cloze_query(prompt: str, target: str, *, causal_mode: str = "cut", kind: str = "causal") -> tuple[str, str]:
    """(prompt, target) to give the engine for a cloze prompt and its object.

    ``cut`` (or a masked LM): the cloze prompt itself, ``<mask>`` included (the model family
    cuts it; the same strings other studies pass, so localizations are shared). ``sentence``
    with a causal LM: ``(prefix, object + rest of the sentence)`` from
    :func:`amig_plugin.data.causal_prompt_and_target` (the prefix keeps a trailing ``<mask>``
    where the engine would otherwise put a space before the target, e.g. after ``"l'"``).
    """
    check_causal_mode(causal_mode)
    if kind == "causal" and causal_mode == "sentence":
        prefix, text = causal_prompt_and_target(prompt, target, mode="sentence")
        if not text.startswith(" ") and causal_cloze(prefix) != prefix + MASK_PLACEHOLDER:
            # the engine would read a bare prefix as "prefix <mask>" and put a space before the
            # target ("l'" + "Europe ..."): keep the mask so the boundary stays as written
            return prefix + MASK_PLACEHOLDER, text
        return prefix, text
    return prompt, target


def check_causal_mode(causal_mode: str) -> None:
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
