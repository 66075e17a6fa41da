"""Masked-LM (BERT / m-BERT) versions of EasyEdit's rewrite/rephrase/locality/portability
metrics.

EasyEdit's ``compute_edit_quality`` is causal-only: it scores ``prompt + " " + target``
teacher-forced, left to right. For a masked LM the natural equivalent, used here, is the
cloze: the prompt with one ``[MASK]`` per target token (where the prompt's ``<mask>`` or
``[MASK]`` is, or at the end), all masks predicted in one forward pass, and

* ``rewrite_acc`` / ``rephrase_acc`` / ``{key}_acc`` (portability): the fraction of target
  tokens whose argmax at their mask equals the gold token (EasyEdit's token accuracy);
* locality: ``{key}_output``, the argmax tokens at the masks of the locality prompt (as
  many masks as its ground truth has tokens); EasyEdit compares the post-edit outputs with
  the pre-edit ones (``{key}_acc``), exactly as for causal models.

The returned dicts have EasyEdit's shape (lists per prompt), so ``BaseEditor.edit``'s own
bookkeeping (pre/post locality comparison, main's ``finalize_locality_metrics`` and
``summary_metrics``) works unchanged. :class:`amig_plugin.easyedit.editor.AMIGEditor`
swaps this function in for ``compute_edit_quality`` while a masked LM is edited.
"""

from __future__ import annotations

import typing
from typing import Any, List, Sequence, Union

import torch

from ..models import get_family
from .prompts import cloze_prompt, strip_target

__all__ = [
    "compute_masked_lm_edit_quality",
    "masked_lm_predictions",
    "masked_token_accuracy",
]


def _as_list(x: Union[str, Sequence[str]]) -> List[str]:
    return [x] if isinstance(x, str) else list(x)


@torch.no_grad()
def masked_lm_predictions(model, tok, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """(argmax token ids at the target's masks, gold target ids) for one cloze query."""
    family = get_family(model)
    if family.kind != "masked":
        raise TypeError(f"{type(model).__name__} is not a masked LM; EasyEdit's own metrics evaluate causal LMs")
    query = family.encode(tok, cloze_prompt(prompt, tok.mask_token), strip_target(target))
    device = family.device()
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=query.input_ids.unsqueeze(0).to(device)).logits[0]
    finally:
        model.train(was_training)
    preds = logits[query.score_positions.to(device)].argmax(-1)
    return preds.tolist(), query.target_ids.tolist()


def masked_token_accuracy(model, tok, prompt: str, target: str) -> float:
    preds, gold = masked_lm_predictions(model, tok, prompt, target)
    return float(sum(int(p == g) for p, g in zip(preds, gold)) / len(gold))


def compute_masked_lm_edit_quality(
    model,
    model_name: Any,
    hparams: Any,
    tok,
    record: typing.Dict,
    device: Any = None,
    eval_metric: str = "token_em",
    test_generation: bool = False,
    **kwargs: Any,
) -> typing.Dict:
    """``compute_edit_quality`` for masked LMs (same signature and result shape)."""
    target_new = record["target_new"]
    ret: dict = {"rewrite_acc": [masked_token_accuracy(model, tok, p, target_new) for p in _as_list(record["prompt"])]}
    ret["locality"] = {}
    ret["portability"] = {}
    rephrase = record.get("rephrase_prompt")
    if rephrase is not None:
        ret["rephrase_acc"] = [masked_token_accuracy(model, tok, p, target_new) for p in _as_list(rephrase)]
    for key, item in (record.get("locality") or {}).items():
        prompts, truths = _as_list(item["prompt"]), _as_list(item["ground_truth"])
        ret["locality"][f"{key}_output"] = [masked_lm_predictions(model, tok, p, t)[0] for p, t in zip(prompts, truths)]
    for key, item in (record.get("portability") or {}).items():
        prompts, truths = _as_list(item["prompt"]), _as_list(item["ground_truth"])
        ret["portability"][f"{key}_acc"] = [masked_token_accuracy(model, tok, p, t) for p, t in zip(prompts, truths)]
    return ret
