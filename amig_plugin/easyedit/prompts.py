"""From EasyEdit requests to our cloze prompts.

EasyEdit writes causal requests as ``prompt="The capital of France is"``,
``target="Paris"`` and evaluates ``prompt + " " + target``. Our engine takes a cloze
prompt with ``<mask>`` where the target goes (:mod:`amig_plugin.data`), and puts the
target's leading space where the language has one. Here:

* a prompt that already holds ``<mask>`` (or the tokenizer's mask token, e.g. ``[MASK]``)
  is used as is;
* otherwise ``<mask>`` is appended: after a space (``"... is <mask>"`` -> the engine
  scores ``" Paris"``, the word-initial BPE token, as EasyEdit's evaluation sees it),
  or directly when the prompt ends in a CJK character (``"法国的首都是<mask>"`` ->
  ``"巴黎"``, no space: Chinese has none).
"""

from __future__ import annotations

import re
from typing import Optional

from ..data import MASK_PLACEHOLDER

__all__ = ["has_cjk", "detect_lang", "cloze_prompt", "strip_target", "missing_answer"]

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u3000-\u303f\uff00-\uffef]")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text or ""))


def detect_lang(text: str) -> str:
    """``"zh"`` when the text holds CJK characters, else ``"en"`` (used by ``lang: auto``)."""
    return "zh" if has_cjk(text) else "en"


def cloze_prompt(prompt: str, mask_token: Optional[str] = None) -> str:
    """An EasyEdit prompt as a cloze prompt with exactly one ``<mask>``."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"empty prompt {prompt!r}: give the text that precedes the target")
    if MASK_PLACEHOLDER in prompt:
        return prompt
    if mask_token and prompt.count(mask_token) == 1:
        return prompt.replace(mask_token, MASK_PLACEHOLDER)
    stripped = prompt.rstrip()
    if _CJK.match(stripped[-1]):
        return stripped + MASK_PLACEHOLDER
    return stripped + " " + MASK_PLACEHOLDER


def strip_target(target: str) -> str:
    """EasyEdit targets carry no leading space (it adds one); tolerate one anyway."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"empty target {target!r}: give the object, e.g. 'Paris'")
    return target.strip()


def missing_answer(text: object) -> bool:
    """True where an answer field (a ground truth, a target) carries no text: None or not a
    string, blank, or what EasyEdit fills in when the user gave none (PyPI: ``'<|endoftext|>'``,
    main: None)."""
    return not isinstance(text, str) or text.strip() in ("", "<|endoftext|>")
