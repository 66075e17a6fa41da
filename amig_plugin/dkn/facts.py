"""One fact: its cached localization, the queries a detection scores, and its detection.

Causal LMs and the text after ``<mask>`` (``causal_mode``, as in ``amig likn``): ``"cut"``
(default) scores P(object | prefix); ``"sentence"`` scores P(object + rest of the sentence |
prefix) for each prompt (:func:`amig_plugin.localization.fact_query`), in the localization (one per
prompt, combined as LIKN does, so the two commands share cached localizations), the clean
and suppressed scores and the greedy growth. Use it for languages whose mask stands
mid-sentence (Japanese, Korean: ``"Xは<mask>に生まれました。"`` cuts to ``"Xは"``). Masked LMs
read the whole prompt anyway: the mode has no effect on them.
"""

from __future__ import annotations

import warnings

from ..data import CAUSAL_MODES, Fact
from ..localization import fact_query, localize_fact
from ..models import get_family
from ..neurons import Neuron
from .detection import detect_degenerate
from .result import DEFAULT_HIGH, DEFAULT_K, DEFAULT_LOW, DEFAULT_MAX_SET_SIZE, DKNResult, check_thresholds

def top_neurons_for(kn, k: int) -> tuple[list[Neuron], int]:
    """(the top-``k`` neurons of a localization, k used). Documented fallback: when fewer
    than ``k`` neurons were recorded (a model with few neurons, or ``k`` > ``top_k`` of the
    localization), all recorded neurons are used and a warning is issued."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (pairs among the top-k neurons), got {k!r}; the paper uses 20")
    available = len(kn.top)
    if available < 2:
        raise ValueError(f"the localization recorded {available} top neurons; DKN detection needs at least 2")
    if k > available:
        warnings.warn(f"k={k} but only {available} top neurons are recorded for {kn.fact_id or kn.target!r}: "
                      f"using k={available}", stacklevel=3)
        k = available
    return kn.top_neurons(k), k


def effective_causal_mode(model, causal_mode: str = "cut") -> str:
    """``causal_mode`` for a causal LM; ``"cut"`` for a masked LM (it reads the whole prompt:
    the mode changes nothing, so records and keys are those of the default)."""
    if causal_mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal_mode {causal_mode!r}; use one of {list(CAUSAL_MODES)}")
    return causal_mode if get_family(model).kind == "causal" else "cut"


def fact_queries(model, fact: Fact, lang: str, causal_mode: str = "cut") -> tuple[list[str], str | list[str]]:
    """(prompts, target) a detection scores: the cloze prompts and the object (cut mode, masked
    LMs), or per prompt (prefix, object + rest of the sentence) (sentence mode, causal LMs;
    :func:`amig_plugin.localization.fact_query`)."""
    if effective_causal_mode(model, causal_mode) == "cut":
        return list(fact.prompts[lang]), fact.target(lang)
    queries = [fact_query(fact, lang, prompt_index=i, causal_mode="sentence") for i in range(len(fact.prompts[lang]))]
    return [p for p, _ in queries], [t for _, t in queries]


def detect_for_fact(model, tokenizer, fact: Fact, lang: str, *, k: int = DEFAULT_K, low: float = DEFAULT_LOW,
                    high: float = DEFAULT_HIGH, cache=None, method: str = "amig", settings: dict | None = None,
                    grow: bool = False, max_set_size: int = DEFAULT_MAX_SET_SIZE, batch_size: int = 256,
                    causal_mode: str = "cut") -> DKNResult:
    """Localize ``fact`` (cached) and detect degenerate pairs among its top-``k`` neurons;
    ``causal_mode``: see the module docstring (no effect on masked LMs)."""
    check_thresholds(low, high)
    mode = effective_causal_mode(model, causal_mode)
    kn = localize_fact(model, tokenizer, fact, lang, method=method, settings=settings, causal_mode=mode,
                       cache=cache if cache is not None else True)
    neurons, _ = top_neurons_for(kn, k)
    prompts, target = fact_queries(model, fact, lang, mode)
    result = detect_degenerate(model, tokenizer, prompts, target, neurons, low=low,
                               high=high, grow=grow, max_set_size=max_set_size, batch_size=batch_size, lang=lang,
                               fact_id=fact.id, relation=fact.relation)
    result.k_requested = k
    result.target = fact.target(lang)
    result.causal_mode = mode
    return result
