"""``LIKN`` as an EasyEdit method: edit a fact's language-independent knowledge neurons
(scoring the edit in every language: :mod:`.evaluate`).

A LIKN request is EasyEdit's request dict for its primary language plus the same fact in
the other languages::

    {"prompt": "The capital of France is", "ground_truth": "Paris", "target_new": "Rome",
     "subject": "France", "locality": {}, "portability": {},
     "lang": "en",                                   # optional: else hparams.lang / detection
     "multilingual": {"zh": {"prompt": "法国的首都是", "ground_truth": "巴黎", "target_new": "罗马"}}}

Pass such dicts with ``editor.edit_requests(requests)`` (``edit()`` drops unknown keywords;
dicts given to ``edit_requests`` reach the apply function unchanged) or call
:func:`apply_likn_to_model` directly. Prompts may carry ``<mask>`` anywhere; otherwise the
target follows the prompt (with a space for languages written with spaces, none after CJK
text: :func:`amig_plugin.easyedit.prompts.cloze_prompt`).

:func:`apply_likn_to_model` localizes the ground truth in every language (AMIG or KN, τ per
language), intersects the neuron sets (exact ``(layer, index)`` match) and edits only the
intersection: for each language ``l`` in turn, Dai et al.'s value-vector update
``v_i += s_i·(λ_new·e(new_l) − λ_old·e(old_l))`` (:func:`amig_plugin.likn.apply_value_edit`;
``s_i`` = sign of the neuron's activation on that language's prompt when ``signed``, since
gated-MLP neurons can be negative), or ``v_i = 0`` with ``edit_mode: erase``. A request
whose intersection is empty edits nothing (``empty_likn: skip``, recorded in
``weights_copy.edits``) or raises (``empty_likn: error``); so does a request with no ground
truth in one of its languages (nothing to localize there, so no neuron is shared; recorded as
``no_ground_truth``, with a warning). It returns EasyEdit's
``(model, weights_copy)`` with ``weights_copy`` a ``{param_name: original}`` dict on every
call (see :mod:`amig_plugin.easyedit.methods.amig.main`).
"""

from __future__ import annotations

import copy as copy_module
import time
import warnings
from typing import Any, Dict, Mapping, Optional

from ..validation import as_hparams
from .hparams import LIKNHyperParams

__all__ = ["request_languages", "apply_likn_to_model"]


def _as_hparams(hparams: Any) -> LIKNHyperParams:
    return as_hparams(LIKNHyperParams, hparams)


# ----------------------------------------------------------------------------------------
# requests


def request_languages(request: Mapping, hparams: Optional[LIKNHyperParams] = None) -> Dict[str, Dict[str, Any]]:
    """``{lang: {"prompt", "ground_truth", "target_new"}}`` of a LIKN request: its primary
    language (``request["lang"]``, else ``hparams.lang``, else detected: CJK -> zh, else
    en) plus ``request["multilingual"]``."""
    from ...prompts import detect_lang

    if not isinstance(request, Mapping) or "prompt" not in request:
        raise ValueError(f"a LIKN request is an EasyEdit request dict with 'prompt', 'ground_truth', 'target_new' "
                         f"and 'multilingual': {{lang: {{...}}}}; got {request!r}")
    prompt = request["prompt"]
    if isinstance(prompt, (list, tuple)):
        if len(prompt) != 1:
            raise ValueError("LIKN edits one prompt per language and request; give a single prompt string")
        prompt = prompt[0]
    lang = request.get("lang")
    if not lang:
        lang = hparams.lang if hparams is not None and hparams.lang != "auto" else detect_lang(prompt)
    out = {lang: {"prompt": prompt, "ground_truth": request.get("ground_truth"), "target_new": request.get("target_new")}}
    extra = request.get("multilingual") or {}
    if not isinstance(extra, Mapping):
        raise ValueError(f"request['multilingual'] must map language codes to {{'prompt', 'ground_truth', "
                         f"'target_new'}}, got {type(extra).__name__}")
    for code, item in extra.items():
        if not isinstance(item, Mapping) or "prompt" not in item or "ground_truth" not in item:
            raise ValueError(f"request['multilingual'][{code!r}] needs 'prompt' and 'ground_truth' (and 'target_new' "
                             f"for edit_mode update), got {item!r}")
        out[code] = {"prompt": item["prompt"], "ground_truth": item["ground_truth"], "target_new": item.get("target_new")}
    from ....data import FactFormatError, validate_language_code

    for code in out:
        try:
            validate_language_code(code)
        except FactFormatError as exc:
            raise ValueError(f"LIKN request {prompt!r}: {exc}") from None
    if hparams is not None and hparams.languages is not None:
        missing = [l for l in hparams.languages if l not in out]
        if missing:
            raise ValueError(f"LIKN request {prompt!r} lacks the languages {missing} required by hparams.languages "
                             f"{hparams.languages}; it has {sorted(out)}")
        out = {l: out[l] for l in hparams.languages}
    if len(out) < 2:
        raise ValueError(f"LIKN needs the fact in at least 2 languages; request {prompt!r} has only {sorted(out)}: add "
                         "request['multilingual'] = {lang: {'prompt': ..., 'ground_truth': ..., 'target_new': ...}}")
    return out


def _query(family, tok, prompt: str, target: str):
    """(cloze prompt, target text as the engine scores it) for an EasyEdit prompt."""
    from ....models import causal_prefix_and_target
    from ...prompts import cloze_prompt, strip_target

    mask_token = getattr(tok, "mask_token", None) if family.kind == "masked" else None
    cloze = cloze_prompt(prompt, mask_token)
    target = strip_target(target)
    engine_target = causal_prefix_and_target(cloze, target)[1] if family.kind == "causal" else target
    return cloze, target, engine_target


# ----------------------------------------------------------------------------------------
# the apply function


def _localize(family, tok, cloze: str, target: str, lang: str, tau: float, hparams: LIKNHyperParams):
    """The knowledge neurons of ``target`` after ``cloze`` in ``lang`` (top 50 kept), through
    the shared localization cache when ``hparams.cache``
    (:func:`amig_plugin.localization.localize_query`)."""
    from ....localization import localize_query

    return localize_query(family, tok, [cloze], target, lang=lang, method=hparams.method,
                          cache=True if hparams.cache else None, tau=tau, share_p=hparams.share_p,
                          steps=hparams.steps, objective=hparams.objective, quadrature=hparams.quadrature,
                          amig_mode=hparams.amig_mode, layers=hparams.layers, ig_batch_size=hparams.ig_batch_size,
                          top_k=50)


def _edit_one(family, tok, request: Mapping, hparams: LIKNHyperParams, backup) -> dict:
    from ....intervene import edit_value_vectors
    from ....likn import Edit, apply_value_edit, intersect_neuron_sets
    from ...prompts import missing_answer

    start = time.perf_counter()
    langs = request_languages(request, hparams)
    per_lang, scores, old, new, queries, info = {}, {}, {}, {}, {}, {}
    no_ground_truth = [lang for lang, item in langs.items() if missing_answer(item["ground_truth"])]
    if no_ground_truth:  # nothing to localize in that language: no neuron can be shared
        if hparams.empty_likn == "error":
            raise ValueError(f"LIKN localizes the ground truth: request language {no_ground_truth[0]!r} has none; "
                             "give it one, or set empty_likn: skip to edit nothing instead")
        warnings.warn(f"LIKN: {request.get('prompt')!r} has no ground truth in {', '.join(no_ground_truth)}, so no "
                      "neuron can be shared: nothing edited (empty_likn: skip)", stacklevel=2)
    for lang, item in ({} if no_ground_truth else langs).items():
        cloze, gt, gt_engine = _query(family, tok, item["prompt"], item["ground_truth"])
        if hparams.edit_mode == "update":
            if item["target_new"] in (None, ""):
                raise ValueError(f"edit_mode 'update' needs target_new in every language; {lang!r} has none")
            new[lang] = _query(family, tok, item["prompt"], item["target_new"])[2]
        old[lang] = gt_engine
        queries[lang] = (cloze, gt)
        tau = hparams.tau_for(lang)
        kn = _localize(family, tok, cloze, gt, lang, tau, hparams)
        per_lang[lang] = list(kn.neurons)
        scores[lang] = dict(zip(kn.neurons, kn.scores))
        info[lang] = dict(tau=tau, neurons=len(kn.neurons),
                          completeness_residual=max(kn.completeness_residuals) if kn.completeness_residuals else None,
                          clean_score=kn.clean_scores[0] if kn.clean_scores else None)
    shared = intersect_neuron_sets(per_lang) if per_lang else []
    shared.sort(key=lambda n: -sum(scores[l].get(n, 0.0) for l in langs) / len(langs))
    if hparams.max_neurons is not None:
        shared = shared[: hparams.max_neurons]
    if not shared and hparams.empty_likn == "error":
        raise ValueError(f"LIKN: the fact {request.get('prompt')!r} has no language-independent neuron "
                         f"(sizes {', '.join(f'{l}: {len(n)}' for l, n in per_lang.items())}); "
                         "set empty_likn: skip to edit nothing instead")
    if shared:
        if hparams.edit_mode == "erase":
            edit_value_vectors(family, tok, shared, mode="erase", backup=backup)
        else:
            edit = Edit("LIKN", tuple((l, tuple(shared)) for l in langs))
            apply_value_edit(family, tok, edit, old, new, lambda_old=hparams.lambda_old, lambda_new=hparams.lambda_new,
                             queries=queries if hparams.signed else None, backup=backup)
    return {
        "prompt": request.get("prompt"),
        "languages": list(langs),
        "method": hparams.method,
        "per_language": {l: [list(n) for n in per_lang.get(l, ())] for l in langs},
        "neurons": [list(n) for n in shared],
        "empty": not shared,
        "no_ground_truth": no_ground_truth,
        "localization": info,
        "seconds": time.perf_counter() - start,
    }


def apply_likn_to_model(model, tok, requests, hparams, copy: bool = False, return_orig_weights: bool = False,
                        keep_original_weight: bool = False, **kwargs: Any):
    """EasyEdit's apply function for ``LIKN`` (see the module docstring). Returns
    ``(model, weights_copy)``; ``weights_copy`` is a
    :class:`~amig_plugin.easyedit.methods.amig.main.WeightsCopy` ``{param_name: original}`` with
    ``.edits`` (per request: per-language neurons, the edited intersection)."""
    from ....intervene import WeightBackup
    from ....models import get_family
    from ..amig.main import WeightsCopy

    hparams = _as_hparams(hparams)
    if isinstance(requests, Mapping):
        requests = [requests]
    if copy:
        model = copy_module.deepcopy(model)
    family = get_family(model)
    backup = WeightBackup(model)
    edits = [_edit_one(family, tok, r, hparams, backup) for r in list(requests)]
    return model, WeightsCopy(backup.originals, edits=edits)
