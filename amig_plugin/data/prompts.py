"""Prompt shaping for causal LMs: a cloze prompt with ``<mask>`` becomes ``(prefix,
target)`` (:func:`causal_prompt_and_target`, modes ``cut`` and ``sentence``), text
normalisation, and the warnings when ``cut`` mode drops text after the mask (one per
prompt, or one per language inside :func:`prompt_drop_summary`; :func:`cut_losses` and
:func:`cut_loss_warnings` count them up front)."""

from __future__ import annotations

import re
import unicodedata
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

from .records import MASK_PLACEHOLDER, Fact, FactFormatError, _mask_count_error


def normalize_text(text: str) -> str:
    """``text`` in Unicode NFC (composed characters: ``"e" + U+0301`` -> ``"é"``).

    Every prompt and target is normalised here before it is tokenized, so the NFC and NFD
    spellings of one word are one query (same tokens, same neurons)."""
    return unicodedata.normalize("NFC", text) if isinstance(text, str) else text


class PromptTextDropped(UserWarning):
    """A causal query leaves out text of the prompt (cut mode, text after ``<mask>``)."""


_warned: set[tuple[str, str]] = set()


def _warn_once(kind: str, key: str, message: str, category: type[Warning], stacklevel: int = 3) -> None:
    """``warnings.warn`` once per (kind, key) in this process."""
    if (kind, key) in _warned:
        return
    _warned.add((kind, key))
    warnings.warn(message, category, stacklevel=stacklevel)


#: Scripts written without spaces between words: no space is put between such text and
#: an object that follows it (CJK ideographs and punctuation, kana, full-width forms,
#: Thai, Lao, Khmer, Myanmar).
_SPACELESS = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                        r"\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]")
_WORD = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                   r"\uf900-\ufaff\U00020000-\U0003ffff]|[^\W_]+")


def causal_cloze(prompt: str) -> str:
    """A prompt without ``<mask>`` as the cloze prompt a causal LM continues: the target
    follows the prompt as if it ended in ``" <mask>"`` (one space, then the target:
    ``"The capital of France is"`` + ``"Paris"`` scores ``" Paris"``, the word-initial
    BPE token), except after a script written without spaces (``"法国的首都是"`` +
    ``"巴黎"``: nothing added) and after whitespace (kept: the same rule). A prompt with
    ``<mask>`` is returned unchanged; write the mask yourself to control the boundary."""
    if MASK_PLACEHOLDER in prompt:
        return prompt
    if not prompt or prompt[-1].isspace() or _SPACELESS.match(prompt[-1]):
        return prompt + MASK_PLACEHOLDER
    return prompt + " " + MASK_PLACEHOLDER


def dropped_words(text: str) -> int:
    """Words in ``text``: runs of letters/digits, each CJK/kana/Thai character counting as one."""
    return len(_WORD.findall(text))


def split_prompt_at_mask(prompt: str) -> tuple[str, str]:
    """Return ``(text before <mask>, text after <mask>)``; exactly one mask required
    (:class:`FactFormatError` naming the prompt otherwise)."""
    n = prompt.count(MASK_PLACEHOLDER)
    if n != 1:
        raise _mask_count_error(prompt, n)
    before, after = prompt.split(MASK_PLACEHOLDER)
    return before, after


#: How a cloze prompt becomes a causal-LM query (see :func:`causal_prompt_and_target`).
CAUSAL_MODES: tuple[str, ...] = ("cut", "sentence")


def cut_losses(facts: Iterable[Fact], langs: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per language: how many prompts lose words in ``cut`` mode, i.e. have a letter or
    digit (any script) after ``<mask>`` (``{"prompts": n, "lose_text": k, "example": the
    first such prompt or ""}``). In BMLAMA-17 every Japanese prompt does
    (``"Xは<mask>に生まれました。"`` cuts to ``"Xは"``): the relation is gone from the prefix;
    use ``sentence`` mode there."""
    out: dict[str, dict] = {l: {"prompts": 0, "lose_text": 0, "example": ""} for l in langs}
    for fact in facts:
        for l in langs:
            for prompt in fact.prompts.get(l, ()):
                after = prompt.split(MASK_PLACEHOLDER, 1)[1] if MASK_PLACEHOLDER in prompt else ""
                out[l]["prompts"] += 1
                loses = any(ch.isalnum() for ch in after)
                out[l]["lose_text"] += loses
                if loses and not out[l]["example"]:
                    out[l]["example"] = prompt
    return out


def warned_languages(lines: Iterable[str]) -> list[str]:
    """The languages that :func:`cut_loss_warnings` lines are about (``said`` of
    :func:`prompt_drop_summary`)."""
    return [line.split(":", 1)[0] for line in lines]


def cut_loss_warnings(losses: Mapping[str, Mapping[str, int]], min_share: float = 0.1,
                      fix: str = "use --causal-mode sentence (object scored inside the full sentence) for this language"
                      ) -> list[str]:
    """One line per language where more than ``min_share`` of the prompts lose text in cut mode
    (count, share, an example when ``losses`` has one, the fix)."""
    return [f"{l}: {c['lose_text']} of {c['prompts']} prompts lose text after the mask in cut mode "
            f"({100 * c['lose_text'] / c['prompts']:.0f}%"
            + (f", e.g. {c['example']!r}" if c.get("example") else "")
            + "): the object is scored without the rest of the sentence; "
            + fix for l, c in losses.items() if c["prompts"] and c["lose_text"] > min_share * c["prompts"]]


class _DropSummary:
    """Prompts shaped for a causal LM while a :func:`prompt_drop_summary` is open: per
    language, the distinct prompts and those whose cut drops words (with an example)."""

    def __init__(self) -> None:
        self.labels: list[str | Mapping[str, str] | None] = []
        self.shaped: dict[str, set[str]] = {}
        self.dropped: dict[str, dict[str, tuple[str, str]]] = {}
        self.said: set[str] = set()

    def language(self, prompt: str) -> str:
        for label in reversed(self.labels):
            if isinstance(label, str):
                return label
            if label is not None and prompt in label:
                return label[prompt]
        return "all languages"

    def note(self, prompt: str, dropped: tuple[str, str] | None) -> None:
        prompt = normalize_text(prompt)
        lang = self.language(prompt)
        self.shaped.setdefault(lang, set()).add(prompt)
        if dropped is not None:
            self.dropped.setdefault(lang, {}).setdefault(prompt, dropped)

    def messages(self) -> list[str]:
        out = []
        for lang, dropped in self.dropped.items():
            if lang in self.said:
                continue
            n, k = len(self.shaped[lang]), len(dropped)
            prompt, (prefix, after) = next(iter(dropped.items()))
            out.append(f"{lang}: {k} of {n} causal prompts ({100 * k / n:.0f}%) lose text after {MASK_PLACEHOLDER} in "
                       f"cut mode, e.g. {prompt!r} (the model sees only {prefix!r}, not {after.strip()!r}): the object "
                       f"is scored without the rest of the sentence. Use causal mode 'sentence' (--causal-mode "
                       f"sentence) to score it inside the full sentence, or end the prompts at {MASK_PLACEHOLDER}")
        return out


_summaries: list[_DropSummary] = []


@contextmanager
def prompt_drop_summary(lang: str | Mapping[str, str] | None = None, *, said: Iterable[str] = ()) -> Iterator[None]:
    """Bulk shaping: inside, a cut-mode prompt that drops text after ``<mask>`` is counted
    instead of warned about one by one; leaving the outermost summary issues ONE
    :class:`PromptTextDropped` warning per language (count, share of the distinct prompts
    shaped, one example, the fix), except for the languages in ``said`` (the caller has
    already warned about them, e.g. with :func:`cut_loss_warnings`).

    ``lang``: the language of every prompt shaped inside, or a mapping prompt -> language
    (:func:`prompt_languages`) for runs over several languages; an inner summary's label
    wins, its prompts are reported by the outermost one."""
    if isinstance(lang, Mapping):
        lang = {normalize_text(p): l for p, l in lang.items()}
    outer = not _summaries
    summary = _DropSummary() if outer else _summaries[0]
    if outer:
        _summaries.append(summary)
    summary.labels.append(lang)
    summary.said.update(said)
    try:
        yield
    finally:
        summary.labels.pop()
        if outer:
            _summaries.pop()
            for message in summary.messages():
                warnings.warn(message, PromptTextDropped, stacklevel=3)


def prompt_languages(facts: Iterable[Fact], langs: Sequence[str] | None = None) -> dict[str, str]:
    """prompt -> language over ``facts`` (``langs``: those languages only), for
    :func:`prompt_drop_summary`."""
    return {p: l for f in facts for l, ps in f.prompts.items() if langs is None or l in langs for p in ps}


def causal_prompt_and_target(prompt: str, target: str, mode: str = "cut") -> tuple[str, str]:
    """Turn a cloze prompt and its object into ``(prefix, target_text)`` for a causal LM.

    The prefix is always the text before ``<mask>``: a causal model predicts the object
    from what precedes it, and the position that predicts the object's first token (the
    last prefix token) is where knowledge neurons are attributed and edited. The modes
    differ in what happens to the text AFTER the mask:

    - ``"cut"`` (default) DROPS it: the model is scored on continuing the prefix with
      the object, ``P(object | prefix)``.
    - ``"sentence"`` KEEPS it: the scored continuation is the object followed by the
      rest of the sentence, ``P(object + rest | prefix)`` (teacher-forced). This is the
      sentence likelihood of the filled-in prompt up to the factor ``P(prefix)``, which
      no candidate object and no edit at the target position changes, so candidate
      rankings and relative changes equal those of the full sentence likelihood. Use it
      for prompts whose mask stands mid-sentence (most BMLAMA Chinese prompts,
      ``"贝鲁特是<mask>的首都。"``), where the prefix alone (``"贝鲁特是"``) barely
      constrains the object. Trailing whitespace of the sentence is dropped.

    If whitespace stands just before ``<mask>`` it is removed from the prefix and one
    space is put in front of the target, so that BPE / SentencePiece models see the
    word-initial token (``"The capital of France is"`` + ``" Paris"``). Languages
    written without spaces (Chinese, Japanese) get nothing added:
    ``"法国的首都是<mask>。"`` -> (``"法国的首都是"``, ``"巴黎"``) in ``cut`` mode and
    ``"巴黎是<mask>的首都。"`` -> (``"巴黎是"``, ``"法国的首都。"``) in ``sentence`` mode.
    With a prompt that has nothing after the mask but a full stop, ``sentence`` mode
    scores the object plus the full stop.

    A prompt that starts with the mask (``"<mask>是法国的首都。"``) leaves an empty
    prefix: there is no position that predicts the object from the subject, so this
    raises :class:`FactFormatError` in both modes; rewrite the prompt with the mask
    after the subject.

    ``cut`` mode and words after the mask (``"Paris is the capital of <mask> since 1944."``):
    the query never sees them, so a :class:`PromptTextDropped` warning says how many words
    were dropped, once per prompt (punctuation alone, as in ``"... is <mask>."``, is not
    worth a warning); inside :func:`prompt_drop_summary` (runs over many facts) one warning
    per language counts them instead. Use ``sentence`` mode to score them, or end the prompt at the mask.
    A prompt without ``<mask>`` is read as :func:`causal_cloze` says (the target after
    one space, none after Chinese/Japanese text).
    """
    if mode not in CAUSAL_MODES:
        raise ValueError(f"unknown mode {mode!r}; supported modes: {list(CAUSAL_MODES)}")
    before, after = split_prompt_at_mask(prompt)
    if not target:
        raise FactFormatError("the target is empty; give the gold object")
    if before[-1:].isspace():
        prefix = before.rstrip()
        target_text = target if target.startswith(" ") else " " + target
    else:
        prefix = before
        target_text = target
    if not prefix.strip():
        raise FactFormatError(
            f"prompt {prompt!r} has nothing before {MASK_PLACEHOLDER} (empty prefix): a "
            "causal model cannot predict the object from nothing; rewrite the prompt so "
            f"the subject comes before {MASK_PLACEHOLDER} (e.g. 'X的首都是{MASK_PLACEHOLDER}。')"
        )
    if mode == "sentence":
        target_text = target_text + after.rstrip()
        if _summaries:
            _summaries[0].note(prompt, None)
    elif _summaries:  # bulk shaping: counted, one warning per language at the end
        _summaries[0].note(prompt, (prefix, after) if dropped_words(after) else None)
    elif dropped_words(after):
        n = dropped_words(after)
        _warn_once("cut", prompt, f"causal prompt {prompt!r}: cut mode drops the {n} word(s) after {MASK_PLACEHOLDER} "
                   f"({after.strip()!r}); the model sees only {prefix!r}. Use causal mode 'sentence' to score them, "
                   f"or end the prompt at {MASK_PLACEHOLDER}", PromptTextDropped)
    return prefix, target_text
