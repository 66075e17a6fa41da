"""``apply_amig_to_model``: AMIG (or KN) knowledge-neuron editing as an EasyEdit method.

For each request, the ground truth's knowledge neurons are localized with our IG engine
(:func:`amig_plugin.localization.localize_query`: AMIG's masked-token baseline or KN's zero baseline,
tau x max threshold), then their value vectors -- the rows/columns of the FFN output
projection that the neurons feed -- are edited with
:func:`amig_plugin.intervene.edit_value_vectors`:

* ``edit_mode: update`` (Dai et al. 2022): ``v_i <- v_i - lambda_old e(ground truth) +
  lambda_new e(target_new)``, e(.) the model's real input word embedding;
* ``edit_mode: erase``: ``v_i <- 0`` (``target_new`` is ignored);
* ``edit_rule: optimize`` (this package's extension, not a published rule): only the same
  value vectors are changed, by Adam on NLL(target_new | prompt) + kl_weight x KL on the
  ``kl_prompts`` (never the evaluation's locality prompts), ||delta_i|| bounded
  (:func:`amig_plugin.intervene.neuron_edit.optimize_value_vectors`). Causal LMs use the KL term;
  masked LMs optimize the NLL alone.

``edit_rule`` (``dai`` | ``erase`` | ``optimize``) names the rule; when it is null
``edit_mode`` decides (``update`` = ``dai``).

Calling convention (EasyEdit's, PyPI 0.0.1.dev0 and GitHub main)::

    model, weights_copy = apply_amig_to_model(model, tok, [request], hparams, copy=False,
                                              return_orig_weights=True,
                                              keep_original_weight=False, train_ds=None)

``weights_copy`` is, on every call, a ``{param_name: original tensor}`` dict (a
:class:`WeightsCopy`, i.e. a ``dict`` that also carries ``.edits``: the neurons found and
edited per request). EasyEdit resets the model between edits by copying these tensors
back, which restores it bit for bit. ``return_orig_weights`` and ``keep_original_weight``
are accepted and ignored: returning ``{}`` (what PyPI's ROME/MEMIT/FT do when
``keep_original_weight`` is false) would silently disable the reset on GitHub main, which
always passes ``keep_original_weight=False``.

Sequential edits (``sequential: true`` in the YAML)
---------------------------------------------------
PyPI 0.0.1.dev0 has no sequential mode and resets after every request whenever the apply
function returns the originals; GitHub main has ``edit(..., sequential_edit=True)``, which
never resets. Our choice, identical on both:

* ``sequential: false`` (default): each call edits the model as it finds it and returns
  the originals of what it changed. On PyPI and on main with ``sequential_edit=False``
  every request is edited and evaluated on the unedited model; on main with
  ``sequential_edit=True`` edits accumulate (main does not reset).
* ``sequential: true``: requests are edited *in sequence*: request k is localized, edited
  and evaluated on the model that carries the edits of requests 1..k-1. Every call still
  returns the *pristine* originals (before the first edit of the sequence), so a reset
  restores the unedited model bit for bit. When EasyEdit has reset the model between two
  calls (PyPI always, main with ``sequential_edit=False``), the next call first puts the
  accumulated edits back. After ``edit()`` returns on PyPI the model is the pristine one
  (PyPI reset it); :func:`reapply_sequence` puts the whole sequence back and
  :func:`end_sequence` forgets it (optionally restoring the originals).

Multi-token targets
-------------------
The ground truth is localized teacher-forced over all its tokens (F = product of token
probabilities, or sum of log-probabilities with ``objective: logprob``), at the last prompt
position (causal) or the first ``[MASK]`` of one mask per target token (masked LMs). The
update adds/subtracts the *mean* input embedding of the target's tokens. Caveat: the edited
neurons act at the position that predicts the first target token, so the update mostly
moves that token; later tokens of a long target move only through the changed context.
Targets are tokenized as the model sees them after the prompt (``" Paris"`` with its
leading space for BPE models, no space after CJK text), without special tokens.
"""

from __future__ import annotations

import copy as copy_module
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ....intervene import WeightBackup, edit_value_vectors
from ....models import causal_prefix_and_target, get_family
from ....intervene.neuron_edit import optimize_value_vectors
from ....localization import localize_query
from ...prompts import cloze_prompt, detect_lang, missing_answer, strip_target
from ..validation import as_hparams
from .hparams import AMIGHyperParams

__all__ = [
    "WeightsCopy",
    "apply_amig_to_model",
    "end_sequence",
    "reapply_sequence",
    "sequence_state",
]

class WeightsCopy(dict):
    """``{param_name: original tensor}`` plus ``.edits``: one dict per request with the
    neurons found (``[[layer, index], ...]``), their attributions, the language, tau,
    the completeness residual and the seconds spent."""

    def __init__(self, originals: Mapping[str, torch.Tensor] = (), edits: Optional[List[dict]] = None):
        super().__init__(originals)
        self.edits: List[dict] = list(edits or [])


# ----------------------------------------------------------------------------------------
# sequential state


@dataclass
class SequenceState:
    pristine: Dict[str, torch.Tensor] = field(default_factory=dict)
    accumulated: Dict[str, torch.Tensor] = field(default_factory=dict)
    edits: List[dict] = field(default_factory=list)


_STATES: "weakref.WeakKeyDictionary[torch.nn.Module, SequenceState]" = weakref.WeakKeyDictionary()


def _params(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def _all_equal(params: Dict[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> bool:
    return all(torch.equal(params[name], t.to(params[name].device)) for name, t in tensors.items())


def _copy_into(params: Dict[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)


def sequence_state(model: torch.nn.Module) -> Optional[SequenceState]:
    """The running edit sequence of ``model`` (``sequential: true``), or None."""
    return _STATES.get(model)


def reapply_sequence(model: torch.nn.Module) -> bool:
    """Put the accumulated edits of ``model``'s sequence back (after EasyEdit reset it).
    Returns False when there is no sequence."""
    state = _STATES.get(model)
    if state is None:
        return False
    _copy_into(_params(model), state.accumulated)
    return True


def end_sequence(model: torch.nn.Module, restore: bool = False) -> Optional[SequenceState]:
    """Forget ``model``'s sequence (the next ``sequential`` call starts a new one); with
    ``restore=True`` copy the pristine originals back first. Returns the ended state."""
    state = _STATES.pop(model, None)
    if state is not None and restore:
        _copy_into(_params(model), state.pristine)
    return state


def _resume_sequence(model: torch.nn.Module) -> SequenceState:
    state = _STATES.get(model)
    if state is None:
        state = _STATES[model] = SequenceState()
        return state
    params = _params(model)
    if _all_equal(params, state.accumulated):
        return state  # nothing was reset (GitHub main with sequential_edit=True)
    if _all_equal(params, state.pristine):
        _copy_into(params, state.accumulated)  # EasyEdit reset the model: put the sequence back
        return state
    warnings.warn(
        "amig: the model's edited weights changed outside the AMIG edit sequence; "
        "starting a new sequence from the current weights",
        RuntimeWarning,
        stacklevel=3,
    )
    state = _STATES[model] = SequenceState()
    return state


# ----------------------------------------------------------------------------------------
# the edit


def _as_hparams(hparams: Any) -> AMIGHyperParams:
    return as_hparams(AMIGHyperParams, hparams)


def _engine_target(family, cloze: str, target: str) -> str:
    """The target text exactly as the engine scores it after ``cloze`` (leading space for
    BPE models after a space, none after CJK text)."""
    if family.kind == "causal":
        return causal_prefix_and_target(cloze, target)[1]
    return target


def _select_neurons(kn, hparams: AMIGHyperParams) -> List[tuple]:
    neurons = list(kn.neurons)
    if hparams.max_neurons is not None:
        neurons = neurons[: hparams.max_neurons]
    if len(neurons) < hparams.min_neurons:
        for layer, index, _score in kn.top:
            if len(neurons) >= hparams.min_neurons:
                break
            if (int(layer), int(index)) not in neurons:
                neurons.append((int(layer), int(index)))
    return neurons


def _edit_one(family, tok, request: Mapping, hparams: AMIGHyperParams, backup: WeightBackup) -> dict:
    start = time.perf_counter()
    if not isinstance(request, Mapping) or "prompt" not in request:
        raise ValueError(f"an EasyEdit request is a dict with 'prompt', 'ground_truth', 'target_new'; got {request!r}")
    ground_truth = request.get("ground_truth")
    if missing_answer(ground_truth):
        raise ValueError(
            "AMIG localizes the knowledge neurons of the ground truth: pass ground_truth=... to "
            f"edit() (request prompt {request['prompt']!r} has ground_truth={ground_truth!r})"
        )
    prompt = request["prompt"]
    if isinstance(prompt, (list, tuple)):
        if len(prompt) != 1:
            raise ValueError("AMIG edits one prompt per request; give a single prompt string")
        prompt = prompt[0]
    lang = request.get("lang") or (detect_lang(prompt) if hparams.lang == "auto" else hparams.lang)
    mask_token = getattr(tok, "mask_token", None) if family.kind == "masked" else None
    cloze = cloze_prompt(prompt, mask_token)
    prompts = [cloze]
    rephrase = request.get("rephrase_prompt")
    if hparams.localize_on == "prompt+rephrase" and isinstance(rephrase, str) and rephrase.strip():
        prompts.append(cloze_prompt(rephrase, mask_token))
    gt = _engine_target(family, cloze, strip_target(ground_truth))
    new_target = request.get("target_new")
    rule = hparams.rule()
    if rule in ("dai", "optimize"):
        if new_target in (None, ""):
            raise ValueError(f"edit rule {rule!r} needs target_new (use edit_rule: erase to only erase)")
        new = _engine_target(family, cloze, strip_target(new_target))
    else:
        new = None
    tau = hparams.tau_for(lang)
    kn = localize_query(
        family, tok, prompts, strip_target(ground_truth), lang=lang, method=hparams.method, tau=tau,
        share_p=hparams.share_p, steps=hparams.steps, objective=hparams.objective,
        quadrature=hparams.quadrature, amig_mode=hparams.amig_mode, layers=hparams.layers,
        ig_batch_size=hparams.ig_batch_size, top_k=max(50, hparams.min_neurons),
    )
    neurons = _select_neurons(kn, hparams)
    trace: dict = {}
    if neurons and rule == "optimize":
        subject = request.get("subject") or ""
        kl = [] if family.kind == "masked" else [p.replace("{subject}", subject) for p in hparams.kl_prompts
                                                  if subject or "{subject}" not in p]
        result = optimize_value_vectors(
            family, tok, neurons, cloze, strip_target(new_target), locality=kl, steps=hparams.optimize_steps,
            lr=hparams.optimize_lr, kl_weight=hparams.kl_weight, norm_bound=hparams.norm_bound, backup=backup)
        trace = {"optimize_steps_run": result.steps, "nll_start": result.nll[0], "nll_end": result.nll[-1],
                 "kl_end": result.kl[-1] if result.kl else None}
    elif neurons:
        edit_value_vectors(
            family, tok, neurons, mode="update" if rule == "dai" else "erase", old_target=gt, new_target=new,
            lambda_old=hparams.lambda_old, lambda_new=hparams.lambda_new, backup=backup,
        )
    score = dict(((int(l), int(i)), s) for l, i, s in kn.top)
    score.update(zip(kn.neurons, kn.scores))
    return {
        "prompt": prompt,
        "ground_truth": ground_truth,
        "target_new": new_target,
        "lang": lang,
        "method": kn.method,
        "tau": tau,
        "neurons": [list(n) for n in neurons],
        "attributions": [score.get(tuple(n)) for n in neurons],
        "above_tau": len(kn.neurons),
        "completeness_residual": max(kn.completeness_residuals) if kn.completeness_residuals else None,
        "clean_score": kn.clean_scores[0] if kn.clean_scores else None,
        "edit_rule": rule,
        **trace,
        "seconds": time.perf_counter() - start,
    }


def apply_amig_to_model(
    model,
    tok,
    requests: Sequence[Mapping] | Mapping,
    hparams: AMIGHyperParams,
    copy: bool = False,
    return_orig_weights: bool = False,
    keep_original_weight: bool = False,
    **kwargs: Any,
):
    """Localize each request's ground-truth knowledge neurons and edit their value vectors.

    Returns ``(model, weights_copy)``; ``weights_copy`` is a :class:`WeightsCopy`
    ``{param_name: original tensor}`` on every call (see the module docstring for
    ``copy``, sequential edits and multi-token targets). ``kwargs`` (EasyEdit passes
    ``train_ds``) are accepted and ignored.
    """
    hparams = _as_hparams(hparams)
    if isinstance(requests, Mapping):
        requests = [requests]
    requests = list(requests)
    if copy:
        model = copy_module.deepcopy(model)
    family = get_family(model)
    state = _resume_sequence(model) if hparams.sequential else None
    backup = WeightBackup(model)
    if state is not None:
        backup.originals = state.pristine
    edits = [_edit_one(family, tok, request, hparams, backup) for request in requests]
    if state is not None:
        params = _params(model)
        state.accumulated = {name: params[name].detach().clone() for name in backup.originals}
        state.edits.extend(edits)
    return model, WeightsCopy(backup.originals, edits=edits)
