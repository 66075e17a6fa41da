"""Head-to-head comparison of EasyEdit methods (AMIG, KN, ROME, MEMIT, FT) on the same
requests, through EasyEdit's own editor and metrics (``amig compare``).

Requests come from a fact file (:mod:`amig_plugin.data`; default: the shipped
English/Chinese facts), sampled across relations (:func:`amig_plugin.data.sample_facts`):

* ``prompt``: the fact's first prompt in ``lang`` that contains the subject, cut at
  ``<mask>`` for causal LMs (``"The capital of France is"``), kept whole for masked LMs;
* ``ground_truth``: the gold object; ``target_new``: another candidate object of the same
  relation (:func:`amig_plugin.data.wrong_objects`, seeded);
* ``rephrase_prompt``: the fact's next prompt in ``lang`` (none when the fact has one
  prompt, as in BMLAMA: the rephrase column is then empty);
* ``locality["neighborhood"]``: the first prompt of a fact of another relation and its
  gold object (EasyEdit compares the post-edit prediction with the pre-edit one);
* ``portability["other_language"]``: the same fact asked in ``other_lang`` with the new
  target in that language (candidate lists are parallel across languages; else the object
  of another fact of the relation with the same ``lang`` object).

Each method runs from its own YAML (AMIG: :class:`AMIGHyperParams`; the others: EasyEdit's
own hparams classes) in an :class:`~amig_plugin.easyedit.editor.AMIGEditor` sharing one
loaded model, with a reset after every request (``keep_original_weight=True`` on PyPI,
``sequential_edit=False`` on main). ROME/MEMIT covariance statistics come from a local
corpus (:mod:`amig_plugin.easyedit.stats`) or ROME's ``mom2_adjustment`` is turned off.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..data import Fact, causal_prompt_and_target, group_by_relation, sample_facts, wrong_objects
from ..defaults import DEFAULT_COMPARE_METHODS
from ..store import content_key

__all__ = [
    "METHODS",
    "build_requests",
    "load_method_hparams",
    "prepare_covariance",
    "run_method",
    "likn_request",
    "capturing_editor",
    "method_note",
    "format_table",
    "requests_fingerprint",
]

#: The default method labels of ``amig compare`` (each a folder of YAMLs under ``hparams/``).
METHODS = DEFAULT_COMPARE_METHODS

_HPARAM_CLASSES = {
    "KN": ("easyeditor.models.kn", "KNHyperParams"),
    "ROME": ("easyeditor.models.rome", "ROMEHyperParams"),
    "MEMIT": ("easyeditor.models.memit", "MEMITHyperParams"),
    "FT": ("easyeditor.models.ft", "FTHyperParams"),
}


# ----------------------------------------------------------------------------------------
# requests


def _translate(fact: Fact, target: str, lang: str, other: str, relation_facts: Sequence[Fact]) -> Optional[str]:
    cands, others = fact.candidates.get(lang, ()), fact.candidates.get(other, ())
    if len(cands) == len(others) and target in cands:
        return others[list(cands).index(target)]
    for f in relation_facts:
        if lang in f.object and other in f.object and f.object[lang] == target:
            return f.object[other]
    return None


def _prompt(prompt: str, target: str, masked: bool) -> str:
    return prompt if masked else causal_prompt_and_target(prompt, target)[0]


def build_requests(facts: Sequence[Fact], n: int, *, lang: str = "en", other_lang: Optional[str] = "zh",
                   seed: int = 0, masked: bool = False) -> List[dict]:
    """``n`` EasyEdit requests from ``facts`` (see the module docstring). Facts without a
    prompt containing the subject, a rephrase prompt or a wrong candidate are skipped."""
    pool = [f for f in facts if lang in f.object]
    by_relation = group_by_relation(pool)
    ordered = sample_facts(pool, len(pool), seed=seed)
    requests: List[dict] = []
    for i, fact in enumerate(ordered):
        if len(requests) >= n:
            break
        gold = fact.object[lang]
        prompts = [p for p in fact.prompts[lang] if fact.subject[lang] in p]
        if not prompts:
            continue
        wrong = wrong_objects(fact, lang, by_relation[fact.relation], seed=seed)
        if not wrong:
            continue
        new = wrong[0]
        main_prompt = prompts[0]
        rephrase = next((p for p in fact.prompts[lang] if p != main_prompt), None)
        neighbour = next((f for f in ordered[i + 1:] + ordered[:i] if f.relation != fact.relation), None)
        req = {
            "fact_id": fact.id,
            "prompt": _prompt(main_prompt, gold, masked),
            "ground_truth": gold,
            "target_new": new,
            "subject": fact.subject[lang],
            "locality": {},
            "portability": {},
        }
        if rephrase is not None:
            req["rephrase_prompt"] = _prompt(rephrase, gold, masked)
        if neighbour is not None:
            nb_prompt = neighbour.prompts[lang][0]
            req["locality"]["neighborhood"] = {"prompt": _prompt(nb_prompt, neighbour.object[lang], masked),
                                               "ground_truth": neighbour.object[lang]}
        if other_lang and other_lang in fact.object:
            new_other = _translate(fact, new, lang, other_lang, by_relation[fact.relation])
            if new_other is not None:
                req["portability"]["other_language"] = {
                    "prompt": _prompt(fact.prompts[other_lang][0], fact.object[other_lang], masked),
                    "ground_truth": new_other,
                }
        requests.append(req)
    if len(requests) < n:
        raise ValueError(f"only {len(requests)} usable facts for {n} requests (lang={lang}); use fewer or another fact file")
    return requests


def requests_fingerprint(requests: Sequence[dict]) -> str:
    """The first 12 hex digits of the requests' :func:`~amig_plugin.store.content_key`."""
    return content_key(list(requests))[:12]


def edit_arguments(requests: Sequence[dict]) -> dict:
    """``BaseEditor.edit`` keyword arguments for ``requests`` (locality/portability keys that
    every request has)."""
    kwargs: Dict[str, Any] = dict(
        prompts=[r["prompt"] for r in requests],
        ground_truth=[r["ground_truth"] for r in requests],
        target_new=[r["target_new"] for r in requests],
        subject=[r["subject"] for r in requests],
    )
    if requests and all("rephrase_prompt" in r for r in requests):
        kwargs["rephrase_prompts"] = [r["rephrase_prompt"] for r in requests]
    for group, arg in (("locality", "locality_inputs"), ("portability", "portability_inputs")):
        keys = set.intersection(*(set(r[group]) for r in requests)) if requests else set()
        if keys:
            kwargs[arg] = {k: {"prompt": [r[group][k]["prompt"] for r in requests],
                               "ground_truth": [r[group][k]["ground_truth"] for r in requests]} for k in sorted(keys)}
    return kwargs


# ----------------------------------------------------------------------------------------
# hparams and covariance statistics


#: Keys that only one EasyEdit flavour's hparams class has, with the value that gives the
#: other flavour's behaviour (GitHub main's FT needs ``objective_optimization``; PyPI
#: 0.0.1.dev0's FT has no such key and optimizes at the prompt's last positions).
_FLAVOUR_DEFAULTS = {"FT": {"objective_optimization": "prompt_last"}}


#: Keys of this package's adaptations that an EasyEdit hparams YAML may carry (kept as
#: attributes of the hparams object): MEMIT's ``post_norm_targets`` and ``z_space``
#: (:func:`amig_plugin.easyedit.shims.memit_post_norm_targets`).
_OUR_KEYS = {"MEMIT": ("post_norm_targets", "z_space")}


def _easyedit_hparams(cls, path: str):
    """``cls(**yaml)`` as ``cls.from_hparams(path)`` does, but with keys ``cls`` does not know
    dropped and keys it requires filled from :data:`_FLAVOUR_DEFAULTS`, so one YAML serves
    PyPI 0.0.1.dev0 and GitHub main."""
    import dataclasses

    import yaml

    with open(path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream) or {}
    if not dataclasses.is_dataclass(cls) or not isinstance(config, dict):
        return cls.from_hparams(path)
    config = cls.construct_float_from_scientific_notation(config)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, same in _FLAVOUR_DEFAULTS.get(config.get("alg_name"), {}).items():
        if key not in fields and config.get(key, same) != same:
            raise ValueError(f"{path}: {key}: {config[key]!r} needs an EasyEdit whose {cls.__name__} has "
                             f"{key!r} (GitHub main); this one only does {key}: {same!r}")
    ours = {k: config.pop(k) for k in _OUR_KEYS.get(config.get("alg_name"), ()) if k in config}
    config = {k: v for k, v in config.items() if k in fields}
    for key, value in _FLAVOUR_DEFAULTS.get(config.get("alg_name"), {}).items():
        if key in fields:
            config.setdefault(key, value)
    hparams = cls(**config)
    for key, value in ours.items():
        setattr(hparams, key, value)
    return hparams


#: The algorithms a method label may run (its YAML's ``alg_name``).
ALGORITHMS = ("AMIG", "LIKN", "KN", "ROME", "MEMIT", "FT")


def yaml_algorithm(path: str) -> str:
    """The ``alg_name`` of the hparams YAML at ``path`` (one of :data:`ALGORITHMS`)."""
    import yaml

    if not os.path.isfile(path):
        raise ValueError(f"no hparams file {path}")
    with open(path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    alg = config.get("alg_name") if isinstance(config, dict) else None
    if alg not in ALGORITHMS:
        raise ValueError(f"{path}: alg_name is {alg!r}; an hparams YAML names one of {ALGORITHMS}")
    return alg


def load_method_hparams(method: str, path: str, model_name: Optional[str] = None):
    """The hparams object of the method labelled ``method`` (``AMIG``, ``AMIG-OPT``, ``FT-M``,
    ...) from its YAML: the YAML's ``alg_name`` chooses the class (AMIG/LIKN: ours; the
    others: EasyEdit's); a label that is itself an algorithm's name must match it."""
    alg = yaml_algorithm(path)
    if method in ALGORITHMS and alg != method:
        raise ValueError(f"{path}: alg_name is {alg!r}, expected {method!r}")
    if alg == "AMIG":
        from .methods.amig.hparams import AMIGHyperParams

        hparams = AMIGHyperParams.from_hparams(path)
    elif alg == "LIKN":
        from .methods.likn.hparams import LIKNHyperParams

        hparams = LIKNHyperParams.from_hparams(path)
    else:
        from .compat import import_easyeditor

        import_easyeditor()
        module, cls = _HPARAM_CLASSES[alg]
        hparams = _easyedit_hparams(getattr(importlib.import_module(module), cls), path)
    if model_name is not None:
        hparams.model_name = model_name
    return hparams


def prepare_covariance(model, tok, hparams, *, mode: str, corpus: str, stats_dir: str, max_tokens: int,
                       progress: bool = True) -> str:
    """Make ROME/MEMIT runnable offline. ``mode``: ``local`` (statistics from ``corpus``,
    cached under ``stats_dir``) or ``off`` (ROME without ``mom2_adjustment``; MEMIT cannot
    run without statistics). Returns a description of what was used."""
    if hparams.alg_name == "ROME" and (mode == "off" or not hparams.mom2_adjustment):
        hparams.mom2_adjustment = False
        return "ROME: mom2_adjustment off (no covariance statistics)"
    if mode == "off":
        raise ValueError("MEMIT always needs covariance statistics; use --mom2 local")
    from ..localization import shown_path
    from .stats import ensure_mom2_stats, local_corpus

    texts = local_corpus(corpus)
    # the token cap is part of the name: statistics of another cap are another file, never a stale reuse
    label = ("amig-local-" + (os.path.basename(corpus) if os.path.exists(corpus) else corpus).replace("+", "-")
             + f"-{max_tokens}tok")
    hparams.mom2_dataset = label
    hparams.mom2_n_samples = len(texts)
    hparams.stats_dir = stats_dir
    layer_names = [hparams.rewrite_module_tmp.format(layer) for layer in hparams.layers]
    paths = ensure_mom2_stats(model, tok, layer_names, stats_dir=stats_dir, ds_name=label,
                              sample_size=len(texts), precision=hparams.mom2_dtype, texts=texts,
                              max_tokens=max_tokens, progress=progress)
    import numpy as np

    with np.load(paths[0]) as data:
        count = int(data["mom2.count"]) if "mom2.count" in data else -1
    return (f"{hparams.alg_name}: covariance (mom2) statistics from local corpus '{corpus}' ({count} token "
            f"positions; Wikipedia unreachable), cached in {shown_path(Path(paths[0]).parent)}")


# ----------------------------------------------------------------------------------------
# running


def likn_request(request, lang: str) -> dict:
    """The LIKN request of an :class:`~amig_plugin.data.edit_records.EditRequest` for the
    language pair (its language, ``lang``): EasyEdit's dict with ``lang``'s evaluation keys
    and ``multilingual[lang]`` (that side's prompt, ground truth and new target)."""
    other = request.other_languages[lang]
    out = request.to_easyedit(None, [lang])
    out["lang"] = request.lang
    out["multilingual"] = {lang: {"prompt": other.prompt, "ground_truth": other.ground_truth or "",
                                  "target_new": other.target_new}}
    return out


def run_method(editor, requests: Sequence[dict], seed: int = 0, raw: bool = False,
               pre: Optional[List[dict]] = None) -> List[dict]:
    """``editor.edit`` on ``requests`` with a reset after each request; EasyEdit's metrics.
    ``raw``: hand the request dicts to ``editor.edit_requests`` unchanged (LIKN's
    ``multilingual`` key). ``pre``: the requests' pre-edit metrics already computed on this
    model (one ``{"pre": ...}`` per request; GitHub main's ``pre_edit``), so that EasyEdit
    does not score the unedited model again (:func:`pre_edit_key`)."""
    import numpy as np
    import torch

    from .editor import independent_edit_kwargs

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    kwargs = dict(independent_edit_kwargs(), verbose=False)
    if pre is not None:
        kwargs["pre_edit"] = copy.deepcopy(list(pre))  # EasyEdit adds each request's post metrics to these dicts
    if raw:
        metrics, _, _ = editor.edit_requests(list(requests), **kwargs)
    else:
        metrics, _, _ = editor.edit(**edit_arguments(requests), **kwargs)
    return metrics


def pre_edit_key(request: dict, hparams) -> Optional[str]:
    """The key under which ``request``'s pre-edit metrics can be reused by another method on
    the same (restored) model, or None where they cannot: EasyEdit's PyPI release (no
    ``pre_edit``), an active fact checker (its verdicts are part of the metrics). The key holds
    the request and every setting ``compute_edit_quality`` reads: ``max_length``,
    ``use_chat_template``, ``evaluation_type`` and whether the method is GRACE."""
    from .compat import FLAVOUR_MAIN, easyedit_flavour
    from .factcheck_metric import active_checker

    if easyedit_flavour() != FLAVOUR_MAIN or active_checker() is not None:
        return None
    from ..compare_records import canonical, request_fingerprint

    scoring = [getattr(hparams, "max_length", None), bool(getattr(hparams, "use_chat_template", False)),
               getattr(hparams, "evaluation_type", None), getattr(hparams, "alg_name", None) == "GRACE"]
    return request_fingerprint(request) + canonical(scoring)


def capturing_editor(alg: str, hparams, model, tok) -> tuple:
    """(an editor running ``alg`` on the shared model, the list that receives each call's
    AMIG/LIKN edit records: our apply functions return them in ``weights_copy.edits``)."""
    from .editor import load_editor, load_likn_editor

    editor = (load_likn_editor if alg == "LIKN" else load_editor)(hparams, model=model, tokenizer=tok)
    captured: list = []
    apply_algo = editor.apply_algo

    def capturing(*args, **kwargs):
        out = apply_algo(*args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and hasattr(out[1], "edits"):
            captured.extend(out[1].edits)
        return out

    editor.apply_algo = capturing
    return editor, captured


def method_note(alg: str, h, records: Sequence[dict], covariance_note: str = "") -> str:
    """The table's note on a method: its settings that matter and what its edits were."""
    edits = [r["amig_edit"] for r in records if r.get("amig_edit")]
    if alg == "AMIG" and edits:
        sizes = [len(e["neurons"]) for e in edits]
        res = [abs(e["completeness_residual"]) for e in edits if e.get("completeness_residual") is not None]
        rule_text = {"dai": f"Dai et al.'s rule, lambda {h.lambda_old}/{h.lambda_new}", "erase": "erase",
                     "optimize": (f"optimized value vectors (our extension), {h.optimize_steps} steps, "
                                  f"KL weight {h.kl_weight}, norm bound {h.norm_bound}")}[h.rule()]
        from ..defaults import DEFAULT_RESIDUAL_TOLERANCE as tol

        above = sum(r > tol for r in res)
        return (f"{h.method.upper()} IG steps={h.steps}, {sum(sizes) / len(sizes):.1f} neurons/edit "
                f"(tau x max, cap {h.max_neurons}), {rule_text}"
                + (f", max completeness residual {max(res):.2g}" if res else "")
                + (f" (UNCONVERGED: {above} of {len(res)} edits above {tol})" if above else ""))
    if alg == "LIKN":
        sizes = [len(e.get("neurons") or []) for e in edits]
        blank = sum(bool(e.get("no_ground_truth")) for e in edits)
        counts = ""
        if sizes:
            why = f"; {blank} of them with no ground truth in L, the model's continuation being blank" if blank else ""
            counts = (f"; {sum(sizes) / len(sizes):.1f} shared neurons/edit, {sum(x == 0 for x in sizes)} of "
                      f"{len(sizes)} empty (nothing edited{why})")
        return (f"LIKN: {h.method.upper()} localization in en and in L, the shared neurons edited with Dai et al.'s "
                f"rule (lambda {h.lambda_old}/{h.lambda_new}) in both; one edit per (request, L)"
                + counts + "; the en row pools every pair's edit")
    if alg == "KN":
        return f"EasyEdit KN, steps={h.steps}, IG batch forced to 1 by EasyEdit"
    if alg == "FT":
        objective = getattr(h, "objective_optimization", "prompt_last")
        kind = "FT-M, loss on the teacher-forced target" if objective == "target_new" else "FT-L, loss at the prompt end"
        return f"EasyEdit FT ({kind}), layers {h.layers}, {h.num_steps} steps"
    if alg == "MEMIT" and getattr(h, "post_norm_targets", False):
        z_space = getattr(h, "z_space", "residual")
        return (f"{covariance_note}; layers {h.layers}, v_lr {h.v_lr}; residual targets mapped through the "
                f"post-FFN norm" + (", z optimized in the FFN-output space" if z_space == "down_proj" else "")
                + " (our adaptation for Gemma-3)")
    return covariance_note


def _clean(obj: Any) -> Any:
    """JSON-safe copy of EasyEdit metrics (numpy scalars, tensors)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def slim_metrics(metrics: Sequence[dict]) -> List[dict]:
    return [_clean({k: m[k] for k in ("case_id", "time", "pre", "post") if k in m}) for m in metrics]


# ----------------------------------------------------------------------------------------
# table


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_table(rows: Sequence[dict], other_lang: Optional[str] = "zh", unedited_note: str = "") -> str:
    """Markdown table. ``rows``: ``{"method", "summary" (from summarize), "note"}``; the
    first row is the unedited model (pre-edit metrics of the first method), its notes
    followed by ``unedited_note`` (e.g. where the ground truth is the model's own prediction).
    The one-hop portability column is shown when a method has it (benchmark files)."""
    port = f"portability ({other_lang}, same fact)" if other_lang else "portability"
    one_hop = any(r.get("summary") and "portability.one_hop_acc" in {**r["summary"]["pre"], **r["summary"]["post"]}
                  for r in rows)
    cols = ["method", "requests", "rewrite acc", "rephrase acc", "locality", port]
    cols += ["portability (one hop)"] if one_hop else []
    cols += ["s / edit", "notes"]
    head = "| " + " | ".join(cols) + " |\n" + "|" + "---|" * len(cols) + "\n"
    lines = []
    if rows:
        first = next((r for r in rows if r.get("summary")), None)
        if first is not None:
            pre = first["summary"]["pre"]
            cells = ["(unedited)", str(first["summary"]["requests"]), _fmt(pre.get("rewrite_acc")),
                     _fmt(pre.get("rephrase_acc")), "1 (by definition)", _fmt(pre.get("portability.other_language_acc"))]
            cells += [_fmt(pre.get("portability.one_hop_acc"))] if one_hop else []
            cells += ["-", "pre-edit metrics" + (f"; {unedited_note}" if unedited_note else "")]
            lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        s = r.get("summary")
        if not s:
            lines.append("| " + " | ".join([r["method"]] + ["-"] * (len(cols) - 2) + [f"failed: {r.get('error', '?')}"]) + " |")
            continue
        post = s["post"]
        cells = [r["method"], str(s["requests"]), _fmt(post.get("rewrite_acc")), _fmt(post.get("rephrase_acc")),
                 _fmt(post.get("locality.neighborhood_acc")), _fmt(post.get("portability.other_language_acc"))]
        cells += [_fmt(post.get("portability.one_hop_acc"))] if one_hop else []
        cells += [_fmt(s.get("seconds_per_edit"), 1), r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines)
