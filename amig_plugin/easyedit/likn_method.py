"""``LIKN`` as an EasyEdit method: edit a fact's language-independent knowledge neurons,
and score the edit in every language of the request.

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
``weights_copy.edits``) or raises (``empty_likn: error``). It returns EasyEdit's
``(model, weights_copy)`` with ``weights_copy`` a ``{param_name: original}`` dict on every
call (see :mod:`amig_plugin.easyedit.amig_main`).

:func:`cross_lingual_quality` scores a request in every language: EasyEdit's token accuracy
of ``target_new`` (and of the ground truth) teacher-forced after the prompt, without
EasyEdit's ``prompt + " " + target`` join (no space after CJK text), plus P(new), P(old) and
whether the new object now beats the old. :func:`edit_cross_lingual` runs
``editor.edit_requests`` with that score added to EasyEdit's pre/post metrics
(``metrics[i]["pre"|"post"]["cross_lingual"][lang]``); :func:`summarize_cross_lingual`
averages them per language.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import dataclasses
import importlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

from .hparams import AMIGHyperParams, HParamsError

__all__ = [
    "ALG_NAME",
    "LIKNHyperParams",
    "request_languages",
    "apply_likn_to_model",
    "register_likn",
    "unregister_likn",
    "is_likn_registered",
    "load_likn_editor",
    "cross_lingual_quality",
    "cross_lingual_evaluation",
    "edit_cross_lingual",
    "summarize_cross_lingual",
]

ALG_NAME = "LIKN"
LIKN_KEYS = ("languages", "signed", "empty_likn", "cache")
_LOCK = threading.Lock()


@dataclass
class LIKNHyperParams(AMIGHyperParams):
    """AMIG's hyper-parameters (localization, τ per language, the update rule) plus:

    ==========  ========  ==================================================================
    key         default   meaning
    ==========  ========  ==================================================================
    languages   null      languages every request must carry (null: those it carries, >= 2)
    signed      true      orient each neuron's update by the sign of its activation
    empty_likn  skip      ``skip`` (edit nothing, record it) or ``error`` for an empty LIKN
    cache       false     localize through the shared LocalizationCache
    ==========  ========  ==================================================================

    ``alg_name`` must be ``LIKN``; ``max_neurons`` caps the intersection (best mean
    attribution first); ``min_neurons`` is not used (the intersection is what it is);
    ``sequential: true`` is not supported.
    """

    languages: Optional[List[str]] = None
    signed: bool = True
    empty_likn: str = "skip"
    cache: bool = False

    def __post_init__(self) -> None:
        _validate_likn(self, source="LIKNHyperParams")

    @classmethod
    def from_dict(cls, config: Any, source: str = "hparams") -> "LIKNHyperParams":
        if not isinstance(config, Mapping):
            raise HParamsError(f"{source}: expected a mapping of keys to values, got {type(config).__name__}")
        config = dict(config)
        if config.get("alg_name") != ALG_NAME:
            raise HParamsError(f"{source}: alg_name: must be {ALG_NAME!r} for LIKNHyperParams (got "
                               f"{config.get('alg_name')!r})")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in config if k not in valid]
        if unknown:
            import difflib

            parts = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise HParamsError(f"{source}: unknown key(s) {', '.join(parts)}; valid keys are: {', '.join(valid)}")
        extra = {k: config.pop(k) for k in LIKN_KEYS if k in config}
        try:
            base = AMIGHyperParams.from_dict({**config, "alg_name": "AMIG"}, source=source)
        except HParamsError as exc:
            raise HParamsError(f"{exc} (LIKN adds: {', '.join(LIKN_KEYS)})") from None
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in extra:
                value = extra[f.name]
            elif f.name in LIKN_KEYS:
                value = f.default
            else:
                value = getattr(base, f.name)
            object.__setattr__(obj, f.name, value)
        obj.alg_name = ALG_NAME
        _validate_likn(obj, source=source)
        return obj


def _validate_likn(h: LIKNHyperParams, source: str) -> None:
    if h.alg_name != ALG_NAME:
        raise HParamsError(f"{source}: alg_name: must be {ALG_NAME!r} (got {h.alg_name!r})")
    base = {f.name: getattr(h, f.name) for f in dataclasses.fields(AMIGHyperParams)}
    AMIGHyperParams(**{**base, "alg_name": "AMIG"})  # AMIG's validation of the shared keys
    if h.sequential:
        raise HParamsError(f"{source}: sequential: true is not supported by LIKN (got True); edit one request at a time")
    if h.edit_rule == "optimize":
        raise HParamsError(f"{source}: edit_rule: 'optimize' is not supported by LIKN yet (got 'optimize'); "
                           "use edit_mode update or erase")
    if h.languages is not None:
        from ..data import FactFormatError, validate_language_code

        if not isinstance(h.languages, list) or len(h.languages) < 2:
            raise HParamsError(f"{source}: languages: must be null or a list of at least 2 language codes "
                               f"(got {h.languages!r})")
        for code in h.languages:
            try:
                validate_language_code(code)
            except FactFormatError as exc:
                raise HParamsError(f"{source}: languages: {exc}") from None
    for key in ("signed", "cache"):
        if not isinstance(getattr(h, key), bool):
            raise HParamsError(f"{source}: {key}: must be true or false (got {getattr(h, key)!r})")
    if h.empty_likn not in ("skip", "error"):
        raise HParamsError(f"{source}: empty_likn: must be 'skip' or 'error' (got {h.empty_likn!r})")


def _as_hparams(hparams: Any) -> LIKNHyperParams:
    if isinstance(hparams, LIKNHyperParams):
        return hparams
    if isinstance(hparams, Mapping):
        return LIKNHyperParams.from_dict(hparams)
    if hasattr(hparams, "__dict__"):
        fields = {f.name for f in dataclasses.fields(LIKNHyperParams)}
        return LIKNHyperParams.from_dict({k: v for k, v in vars(hparams).items() if k in fields})
    raise TypeError(f"hparams must be LIKNHyperParams (LIKNHyperParams.from_hparams(path)), got {type(hparams).__name__}")


# ----------------------------------------------------------------------------------------
# requests


def request_languages(request: Mapping, hparams: Optional[LIKNHyperParams] = None) -> Dict[str, Dict[str, Any]]:
    """``{lang: {"prompt", "ground_truth", "target_new"}}`` of a LIKN request: its primary
    language (``request["lang"]``, else ``hparams.lang``, else detected: CJK -> zh, else
    en) plus ``request["multilingual"]``."""
    from .prompts import detect_lang

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
    from ..data import FactFormatError, validate_language_code

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
    from ..models import causal_prefix_and_target
    from .prompts import cloze_prompt, strip_target

    mask_token = getattr(tok, "mask_token", None) if family.kind == "masked" else None
    cloze = cloze_prompt(prompt, mask_token)
    target = strip_target(target)
    engine_target = causal_prefix_and_target(cloze, target)[1] if family.kind == "causal" else target
    return cloze, target, engine_target


# ----------------------------------------------------------------------------------------
# the apply function


def _edit_one(family, tok, request: Mapping, hparams: LIKNHyperParams, backup) -> dict:
    from ..localization import LocalizationCache
    from ..intervene import edit_value_vectors
    from ..likn import Edit, apply_value_edit, intersect_neuron_sets
    from ..neurons import localize

    start = time.perf_counter()
    langs = request_languages(request, hparams)
    run = LocalizationCache.for_model(family.model).localize if hparams.cache else localize
    per_lang, scores, old, new, queries, info = {}, {}, {}, {}, {}, {}
    for lang, item in langs.items():
        if item["ground_truth"] in (None, "", "<|endoftext|>"):
            raise ValueError(f"LIKN localizes the ground truth: request language {lang!r} has none")
        cloze, gt, gt_engine = _query(family, tok, item["prompt"], item["ground_truth"])
        if hparams.edit_mode == "update":
            if item["target_new"] in (None, ""):
                raise ValueError(f"edit_mode 'update' needs target_new in every language; {lang!r} has none")
            new[lang] = _query(family, tok, item["prompt"], item["target_new"])[2]
        old[lang] = gt_engine
        queries[lang] = (cloze, gt)
        tau = hparams.tau_for(lang)
        kn = run(family, tok, [cloze], gt, lang=lang, method=hparams.method, tau=tau, share_p=hparams.share_p,
                 steps=hparams.steps, objective=hparams.objective, quadrature=hparams.quadrature,
                 amig_mode=hparams.amig_mode, layers=hparams.layers, ig_batch_size=hparams.ig_batch_size, top_k=50)
        per_lang[lang] = list(kn.neurons)
        scores[lang] = dict(zip(kn.neurons, kn.scores))
        info[lang] = dict(tau=tau, neurons=len(kn.neurons),
                          completeness_residual=max(kn.completeness_residuals) if kn.completeness_residuals else None,
                          clean_score=kn.clean_scores[0] if kn.clean_scores else None)
    shared = intersect_neuron_sets(per_lang)
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
        "per_language": {l: [list(n) for n in per_lang[l]] for l in langs},
        "neurons": [list(n) for n in shared],
        "empty": not shared,
        "localization": info,
        "seconds": time.perf_counter() - start,
    }


def apply_likn_to_model(model, tok, requests, hparams, copy: bool = False, return_orig_weights: bool = False,
                        keep_original_weight: bool = False, **kwargs: Any):
    """EasyEdit's apply function for ``LIKN`` (see the module docstring). Returns
    ``(model, weights_copy)``; ``weights_copy`` is a
    :class:`~amig_plugin.easyedit.amig_main.WeightsCopy` ``{param_name: original}`` with
    ``.edits`` (per request: per-language neurons, the edited intersection)."""
    from ..intervene import WeightBackup
    from ..models import get_family
    from .amig_main import WeightsCopy

    hparams = _as_hparams(hparams)
    if isinstance(requests, Mapping):
        requests = [requests]
    if copy:
        model = copy_module.deepcopy(model)
    family = get_family(model)
    backup = WeightBackup(model)
    edits = [_edit_one(family, tok, r, hparams, backup) for r in list(requests)]
    return model, WeightsCopy(backup.originals, edits=edits)


# ----------------------------------------------------------------------------------------
# registration


def _apply():
    return apply_likn_to_model


def is_likn_registered() -> bool:
    from .compat import alg_dict

    return alg_dict().get(ALG_NAME) is _apply()


def register_likn(force: bool = False) -> Dict[str, Any]:
    """Add ``LIKN`` to EasyEdit's live ``ALG_DICT`` (idempotent, like ``register()`` for AMIG;
    see :mod:`amig_plugin.easyedit.registration`)."""
    from .compat import alg_dict, easyedit_flavour, registries

    with _LOCK:
        table = alg_dict()
        current = table.get(ALG_NAME)
        if current is not None and current is not _apply() and not force:
            raise RuntimeError(f"EasyEdit's ALG_DICT already maps {ALG_NAME!r} to "
                               f"{getattr(current, '__module__', '?')}.{getattr(current, '__qualname__', current)!r}; "
                               "pass force=True to replace it")
        registered_now = current is not _apply()
        table[ALG_NAME] = _apply()
        found = registries()
        for name in ("CALLABLE_RESTORE_ALGS", "PEFT_RESTORE_ALGS", "KEEP_EDITED_MODEL_ALGS"):
            algs = found.get(name)
            if algs is not None and ALG_NAME in algs:
                raise RuntimeError(f"EasyEdit's {name} contains {ALG_NAME!r}: its weights_copy would not be restored "
                                   "as a {name: tensor} dict; remove it from that set")
    return {"alg_name": ALG_NAME, "flavour": easyedit_flavour(), "registered_now": registered_now}


def unregister_likn() -> bool:
    from .compat import alg_dict

    with _LOCK:
        table = alg_dict()
        if table.get(ALG_NAME) is _apply():
            del table[ALG_NAME]
            return True
    return False


def load_likn_editor(hparams, model=None, tokenizer=None, log_dir: Optional[str] = None):
    """An :class:`~amig_plugin.easyedit.editor.AMIGEditor` running ``LIKN`` (registered
    first); ``hparams`` may be a path to a LIKN YAML."""
    import os

    from .editor import load_editor

    if isinstance(hparams, (str, os.PathLike)):
        hparams = LIKNHyperParams.from_hparams(hparams)
    register_likn()
    return load_editor(hparams, model=model, tokenizer=tokenizer, log_dir=log_dir)


# ----------------------------------------------------------------------------------------
# cross-lingual evaluation


def _score(family, tok, prompt: str, target: str) -> dict:
    """Teacher-forced token accuracy and Σ log P of ``target`` after ``prompt`` (engine
    encoding: no space inserted after CJK text; masked LMs: one [MASK] per token)."""
    import torch

    from ..attribution import frozen_eval

    cloze, _target, engine_target = _query(family, tok, prompt, target)
    q = family.encode(tok, cloze, _target)
    with frozen_eval(family.model), torch.no_grad():
        logits = family.model(input_ids=q.input_ids.unsqueeze(0).to(family.device())).logits[0]
    logits = logits[q.score_positions.to(logits.device)].float()
    logp = torch.log_softmax(logits, dim=-1)
    gold = q.target_ids.to(logits.device)
    acc = float((logits.argmax(-1) == gold).float().mean())
    total = float(logp.gather(-1, gold.view(-1, 1)).sum())
    return {"acc": acc, "logprob": total, "tokens": int(gold.numel())}


def cross_lingual_quality(model, tok, request: Mapping, hparams: Optional[LIKNHyperParams] = None) -> Dict[str, dict]:
    """``{lang: {"rewrite_acc", "ground_truth_acc", "new_prob", "old_prob", "new_beats_old"}}``
    for every language of ``request`` (primary + ``multilingual``); ``rewrite_acc`` is
    EasyEdit's token accuracy of ``target_new``; ``new_beats_old`` compares log-prob per token."""
    import math

    from ..models import get_family

    family = get_family(model)
    out = {}
    for lang, item in request_languages(request, hparams).items():
        res: Dict[str, Any] = {}
        if item.get("target_new"):
            new = _score(family, tok, item["prompt"], item["target_new"])
            res.update(rewrite_acc=new["acc"], new_prob=math.exp(new["logprob"]))
        if item.get("ground_truth"):
            old = _score(family, tok, item["prompt"], item["ground_truth"])
            res.update(ground_truth_acc=old["acc"], old_prob=math.exp(old["logprob"]))
        if item.get("target_new") and item.get("ground_truth"):
            res["new_beats_old"] = new["logprob"] / new["tokens"] > old["logprob"] / old["tokens"]
        out[lang] = res
    return out


@contextlib.contextmanager
def cross_lingual_evaluation(editor) -> Iterator[None]:
    """Inside ``editor.runtime()``: EasyEdit's ``compute_edit_quality`` (whatever the editor
    installed, e.g. the masked-LM one) also returns ``["cross_lingual"]`` for requests that
    carry ``multilingual``."""
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    original = editor_mod.compute_edit_quality
    hparams = editor.hparams if isinstance(editor.hparams, LIKNHyperParams) else None

    def compute_edit_quality(model, model_name, hp, tok, record, *args, **kwargs):
        ret = original(model, model_name, hp, tok, record, *args, **kwargs)
        if isinstance(record, Mapping) and record.get("multilingual"):
            ret["cross_lingual"] = cross_lingual_quality(model, tok, record, hparams)
        return ret

    editor_mod.compute_edit_quality = compute_edit_quality
    try:
        yield
    finally:
        editor_mod.compute_edit_quality = original


def edit_cross_lingual(editor, requests: Sequence[Mapping], **kwargs):
    """``editor.edit_requests(requests, **kwargs)`` with the cross-lingual scores added to
    each request's pre- and post-edit metrics. Returns EasyEdit's ``(metrics, model,
    weights_copy)``."""
    runtime = getattr(editor, "runtime", None)
    with (runtime() if runtime is not None else contextlib.nullcontext()), cross_lingual_evaluation(editor):
        return editor.edit_requests(list(requests), **kwargs)


def summarize_cross_lingual(all_metrics: Sequence[Mapping]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{"pre"|"post": {lang: {metric: mean over requests}}}`` of the cross-lingual scores."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for phase in ("pre", "post"):
        acc: Dict[str, Dict[str, List[float]]] = {}
        for m in all_metrics:
            for lang, res in ((m.get(phase) or {}).get("cross_lingual") or {}).items():
                for key, value in res.items():
                    acc.setdefault(lang, {}).setdefault(key, []).append(float(value))
        out[phase] = {lang: {k: sum(v) / len(v) for k, v in d.items()} for lang, d in acc.items()}
    return out
