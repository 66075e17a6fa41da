"""Localize a fact in one language, through the shared cache: the one entry point every
study uses (LIKN, DKN, fact-checking, runs, compare, demo)."""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from .cache import LocalizationCache
from ..data import Fact
from ..models import get_family
from .. import neurons
from ..neurons import KnowledgeNeurons, Neuron, shared_neurons
from .queries import check_causal_mode, fact_query
from .settings import LocalizationSettings


def combine_prompt_localizations(parts: list[KnowledgeNeurons], share_p: float) -> KnowledgeNeurons:
    """One record from single-prompt localizations (sentence mode: each prompt has its own
    continuation): neurons shared by > share_p of the prompts, scores averaged."""
    if len(parts) == 1:
        return parts[0]
    per_prompt = [list(p.neurons) for p in parts]
    kept = shared_neurons(per_prompt, share_p)
    score: dict[Neuron, list[float]] = {}
    for p in parts:
        for n, s in zip(p.neurons, p.scores):
            score.setdefault(n, []).append(s)
    top: dict[Neuron, list[float]] = {}
    for p in parts:
        for layer, index, s in p.top:
            top.setdefault((int(layer), int(index)), []).append(s)
    ranked = sorted(kept, key=lambda n: -statistics.fmean(score[n]))
    base = parts[0]
    reason = "" if kept else (f"no neuron is shared by > p={share_p:g} of {len(parts)} prompts (per-prompt sets of "
                              f"{', '.join(str(len(p)) for p in per_prompt)} neurons); lower share_p or tau, or use "
                              "adaptive selection")
    return KnowledgeNeurons(
        neurons=ranked, scores=[statistics.fmean(score[n]) for n in ranked], target=base.target,
        prompts=[q for p in parts for q in p.prompts], lang=base.lang, fact_id=base.fact_id, method=base.method,
        model_id=base.model_id, settings={**base.settings, "combined_prompts": len(parts)}, per_prompt=per_prompt,
        completeness_residuals=[r for p in parts for r in p.completeness_residuals],
        clean_scores=[s for p in parts for s in p.clean_scores],
        top=[[l, i, statistics.fmean(v)] for (l, i), v in sorted(top.items(), key=lambda kv: -statistics.fmean(kv[1]))],
        empty_reason=reason,
    )


def _runner(model, cache):
    """``cache.localize`` (``cache=True``: the model's default cache) or the uncached engine
    (looked up at call time)."""
    if cache is None or cache is False:
        return neurons.localize
    if cache is True:
        cache = LocalizationCache.for_model(model)
    return cache.localize


def localize_query(model, tokenizer, prompts: str | Sequence[str], target: str, *, lang: str | None = None,
                   method: str = "amig", settings: LocalizationSettings | Mapping[str, Any] | None = None, cache=None,
                   fact_id: str | None = None, **overrides: Any) -> KnowledgeNeurons:
    """The knowledge neurons of ``target`` after ``prompts`` (one record over all prompts),
    through ``cache`` as in :func:`localize_fact`: the entry point for a query that is not a
    :class:`~amig_plugin.data.Fact` (an EasyEdit request)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    kwargs = LocalizationSettings.of(settings, **overrides).localize_kwargs()
    return _runner(model, cache)(model, tokenizer, prompts, target, lang=lang, method=method, fact_id=fact_id, **kwargs)


def localize_fact(model, tokenizer, fact: Fact, lang: str, *, method: str = "amig",
                  settings: LocalizationSettings | Mapping[str, Any] | None = None, cache=None,
                  causal_mode: str = "cut", return_attributions: bool = False, **overrides: Any):
    """``fact``'s knowledge neurons in ``lang`` from all its prompts.

    ``settings`` (or keyword ``overrides`` of its fields): :class:`LocalizationSettings`.
    ``cache``: a :class:`~amig_plugin.localization.cache.LocalizationCache`, ``True`` (the model's default
    cache) or ``None`` (compute). ``return_attributions=True`` (cut mode; never cached):
    ``(KnowledgeNeurons, [AttributionResult, ...])``.
    """
    kwargs = LocalizationSettings.of(settings, **overrides).localize_kwargs()
    kind = get_family(model).kind
    if return_attributions:
        if kind == "causal" and causal_mode == "sentence":
            raise ValueError("return_attributions needs causal_mode='cut' (sentence mode combines one "
                             "localization per prompt)")
        return neurons.localize(model, tokenizer, list(fact.prompts[lang]), fact.target(lang), lang=lang,
                                method=method, fact_id=fact.id, return_attributions=True, **kwargs)
    run = _runner(model, cache)
    if kind == "causal" and causal_mode == "sentence":
        parts = []
        for k in range(len(fact.prompts[lang])):
            prompt, target = fact_query(fact, lang, prompt_index=k, causal_mode=causal_mode, kind=kind)
            parts.append(run(model, tokenizer, [prompt], target, lang=lang, method=method, fact_id=fact.id, **kwargs))
        return combine_prompt_localizations(parts, kwargs["share_p"])
    check_causal_mode(causal_mode)
    return run(model, tokenizer, list(fact.prompts[lang]), fact.target(lang), lang=lang, method=method,
               fact_id=fact.id, **kwargs)


def localize_facts(model, tokenizer, facts: Sequence[Fact], langs: Sequence[str], *, method: str = "amig",
                   settings: LocalizationSettings | Mapping[str, Any] | None = None, cache=None,
                   causal_mode: str = "cut", progress: bool = True,
                   **overrides: Any) -> dict[str, dict[str, KnowledgeNeurons]]:
    """``{fact_id: {lang: KnowledgeNeurons}}`` for every fact and language (fact by fact)."""
    resolved = LocalizationSettings.of(settings, **overrides)
    out: dict[str, dict[str, KnowledgeNeurons]] = {}
    bar = tqdm(total=len(facts) * len(langs), desc=f"localize [{method}]", disable=not progress)
    for fact in facts:
        out[fact.id] = {}
        for lang in langs:
            bar.set_postfix_str(f"{fact.id} {lang}", refresh=False)
            out[fact.id][lang] = localize_fact(model, tokenizer, fact, lang, method=method, settings=resolved,
                                               cache=cache, causal_mode=causal_mode)
            bar.update()
    bar.close()
    return out
