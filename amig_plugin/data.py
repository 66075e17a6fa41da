"""Facts: the data model, the shipped English/Chinese sample, and loaders for
BMLAMA-style parallel TSVs and the mLAMA directory layout.

A :class:`Fact` is one (subject, relation, object) triple expressed in one or more
languages. For each language it holds the subject's surface form, the gold object,
one or more cloze prompts (the subject filled in, exactly one ``<mask>`` where the
object goes) and, optionally, candidate objects of the same relation (gold included),
which are the natural source of wrong facts for fact-checking.

This module only uses the standard library; it never imports ``easyeditor`` or torch.

Public API
----------
- :data:`MASK_PLACEHOLDER`, :data:`LANGUAGE_CODES`, :class:`FactFormatError`
- :class:`Fact` (``languages``, ``prompt()``, ``target()``, ``restrict()``,
  ``to_dict()``, ``from_dict()``, ``validate()``)
- :func:`normalize_text`, :func:`causal_cloze`, :class:`PromptTextDropped`
- :func:`split_prompt_at_mask`, :data:`CAUSAL_MODES`, :func:`causal_prompt_and_target`
- :func:`cut_losses`, :func:`cut_loss_warnings`, :func:`prompt_drop_summary`, :func:`prompt_languages`
- :func:`load_facts`, :func:`save_facts`, :func:`shipped_facts`
- :func:`load_bmlama`, :func:`bmlama_paths`
- :func:`load_mlama`, :func:`load_mlama_with_report`, :class:`MLamaReport`
- :func:`wrong_objects`, :func:`group_by_relation`, :func:`sample_facts`
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import unicodedata
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union
from .errors import AmigError

__all__ = [
    "MASK_PLACEHOLDER",
    "LANGUAGE_CODES",
    "SHIPPED_FACTS_FILE",
    "FactFormatError",
    "Fact",
    "validate_language_code",
    "normalize_text",
    "PromptTextDropped",
    "causal_cloze",
    "split_prompt_at_mask",
    "CAUSAL_MODES",
    "causal_prompt_and_target",
    "cut_losses",
    "cut_loss_warnings",
    "prompt_drop_summary",
    "warned_languages",
    "prompt_languages",
    "load_facts",
    "save_facts",
    "shipped_facts",
    "bmlama_paths",
    "load_bmlama",
    "MLamaReport",
    "load_mlama",
    "load_mlama_with_report",
    "wrong_objects",
    "group_by_relation",
    "sample_facts",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: The placeholder that marks where the object goes in a cloze prompt.
MASK_PLACEHOLDER = "<mask>"

#: Name of the packaged English/Chinese fact file (in ``amig_plugin/resources``).
SHIPPED_FACTS_FILE = "facts_en_zh.jsonl"

#: ISO 639-1 two-letter language codes accepted as language keys. A region or script
#: subtag may follow (``zh-TW``, ``pt-BR``, ``zh-Hans``); the base code must be here.
LANGUAGE_CODES: frozenset[str] = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs
    cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha
    he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn
    ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb
    nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd
    se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw
    ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
    """.split()
)

_LANG_RE = re.compile(r"^([a-z]{2})((?:-[A-Za-z0-9]{2,8})*)$")


class FactFormatError(AmigError, ValueError):
    """A fact, a fact file or a dataset file is malformed.

    The message names the problem and how to fix it; errors raised while loading a
    file start with ``<file>:<line>:``.
    """


# ----------------------------------------------------------------------------------
# Language codes
# ----------------------------------------------------------------------------------


def validate_language_code(code: Any) -> str:
    """Return ``code`` if it is an accepted language code, else raise FactFormatError."""
    if not isinstance(code, str):
        raise FactFormatError(
            f"language code must be a string, got {type(code).__name__} {code!r}; "
            "use an ISO 639-1 code such as 'en' or 'zh'"
        )
    m = _LANG_RE.match(code)
    if m is None or m.group(1) not in LANGUAGE_CODES:
        raise FactFormatError(
            f"unknown language code {code!r}; use a lower-case ISO 639-1 code such as "
            "'en', 'zh', 'de', 'fr' (optionally with a subtag, e.g. 'zh-TW'); "
            "see amig_plugin.data.LANGUAGE_CODES"
        )
    return code


# ----------------------------------------------------------------------------------
# The Fact data model
# ----------------------------------------------------------------------------------

_FACT_FIELDS = ("id", "relation", "relation_name", "subject", "object", "prompts", "candidates")
_REQUIRED_FIELDS = ("id", "relation", "subject", "object", "prompts")


def _mask_count_error(prompt: str, count: int) -> FactFormatError:
    if count == 0:
        return FactFormatError(
            f"prompt {prompt!r} has no {MASK_PLACEHOLDER}; put {MASK_PLACEHOLDER} "
            "where the object goes"
        )
    return FactFormatError(
        f"prompt {prompt!r} has {count} {MASK_PLACEHOLDER} placeholders; a prompt must "
        f"have exactly one {MASK_PLACEHOLDER}, where the object goes"
    )


@dataclass(frozen=True)
class Fact:
    """One fact in one or more languages.

    Attributes:
        id: unique identifier, e.g. ``"P36-france"`` or ``"bmlama-0"``.
        relation: relation identifier, a Wikidata property id such as ``"P36"`` where
            known (datasets without one get a stable derived id, see :func:`load_bmlama`).
        subject: language -> subject surface form.
        object: language -> gold object (the target the model should produce).
        prompts: language -> cloze prompts, the subject filled in and exactly one
            ``<mask>`` where the object goes.
        candidates: language -> objects of the same relation, gold included (may be
            empty, or miss a language: then that language has no candidates).
        relation_name: optional human-readable name or template of the relation.

    The constructor validates everything (see :meth:`validate`) and normalises
    sequences to tuples. The dataclass is frozen; its dict fields are copies owned by
    the fact, do not mutate them. Facts hash by ``(id, relation)``.
    """

    id: str
    relation: str
    subject: dict[str, str]
    object: dict[str, str]
    prompts: dict[str, tuple[str, ...]]
    candidates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    relation_name: str = ""

    def __post_init__(self) -> None:
        # Normalise containers (lists -> tuples, own copies of dicts), then validate.
        for name in ("subject", "object", "prompts", "candidates"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise FactFormatError(
                    f"fact {self.id!r}: field {name!r} must be a mapping language -> "
                    f"value, got {type(value).__name__}"
                )
        prompts = {}
        for lang, ps in self.prompts.items():
            if isinstance(ps, str):
                raise FactFormatError(
                    f"fact {self.id!r}: prompts[{lang!r}] must be a list of prompts, "
                    f"got a single string {ps!r}; wrap it in a list"
                )
            prompts[lang] = tuple(ps)
        candidates = {}
        for lang, cs in self.candidates.items():
            if isinstance(cs, str):
                raise FactFormatError(
                    f"fact {self.id!r}: candidates[{lang!r}] must be a list of objects, "
                    f"got a single string {cs!r}; wrap it in a list"
                )
            candidates[lang] = tuple(cs)
        object.__setattr__(self, "subject", dict(self.subject))
        object.__setattr__(self, "object", dict(self.object))
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "candidates", candidates)
        self.validate()

    def __hash__(self) -> int:
        return hash((self.id, self.relation))

    # -- validation -----------------------------------------------------------------

    def validate(self) -> None:
        """Check the fact; raise :class:`FactFormatError` naming the problem and fix."""
        if not isinstance(self.id, str) or not self.id.strip():
            raise FactFormatError(f"fact id must be a non-empty string, got {self.id!r}")
        where = f"fact {self.id!r}"
        if not isinstance(self.relation, str) or not self.relation.strip():
            raise FactFormatError(
                f"{where}: relation must be a non-empty string such as 'P36', "
                f"got {self.relation!r}"
            )
        if any(ch.isspace() for ch in self.relation):
            raise FactFormatError(
                f"{where}: relation {self.relation!r} contains whitespace; use an id "
                "such as 'P36' and put the readable name in relation_name"
            )
        if not isinstance(self.relation_name, str):
            raise FactFormatError(f"{where}: relation_name must be a string")
        langs = set(self.object)
        if not langs:
            raise FactFormatError(f"{where}: no language; give at least one object")
        for lang in sorted(set(self.subject) | langs | set(self.prompts) | set(self.candidates)):
            try:
                validate_language_code(lang)
            except FactFormatError as e:
                raise FactFormatError(f"{where}: {e}") from None
        for name in ("subject", "prompts"):
            keys = set(getattr(self, name))
            if keys != langs:
                raise FactFormatError(
                    f"{where}: languages are inconsistent: object has {sorted(langs)} but "
                    f"{name} has {sorted(keys)}; give subject, object and prompts for "
                    "the same languages"
                )
        extra = set(self.candidates) - langs
        if extra:
            raise FactFormatError(
                f"{where}: candidates given for {sorted(extra)} which have no object; "
                f"remove them or add the language (languages: {sorted(langs)})"
            )
        for lang in sorted(langs):
            obj = self.object[lang]
            if not isinstance(obj, str) or not obj.strip():
                raise FactFormatError(
                    f"{where}: object[{lang!r}] must be a non-empty string, got {obj!r}"
                )
            subj = self.subject[lang]
            if not isinstance(subj, str) or not subj.strip():
                raise FactFormatError(
                    f"{where}: subject[{lang!r}] must be a non-empty string, got {subj!r}"
                )
            ps = self.prompts[lang]
            if not ps:
                raise FactFormatError(
                    f"{where}: prompts[{lang!r}] is empty; give at least one prompt "
                    f"with one {MASK_PLACEHOLDER}"
                )
            for p in ps:
                if not isinstance(p, str):
                    raise FactFormatError(
                        f"{where}: prompts[{lang!r}] contains a non-string {p!r}"
                    )
                n = p.count(MASK_PLACEHOLDER)
                if n != 1:
                    raise FactFormatError(f"{where} ({lang}): {_mask_count_error(p, n)}")
            cs = self.candidates.get(lang, ())
            for c in cs:
                if not isinstance(c, str) or not c.strip():
                    raise FactFormatError(
                        f"{where}: candidates[{lang!r}] contains {c!r}; candidates must "
                        "be non-empty strings"
                    )
            if cs and obj not in cs:
                raise FactFormatError(
                    f"{where}: candidates[{lang!r}] does not include the gold object "
                    f"{obj!r}; add it (candidates are objects of the same relation, "
                    "gold included)"
                )

    # -- accessors ------------------------------------------------------------------

    @property
    def languages(self) -> tuple[str, ...]:
        """The fact's languages, sorted."""
        return tuple(sorted(self.object))

    def _check_lang(self, lang: str) -> None:
        if lang not in self.object:
            raise KeyError(
                f"fact {self.id!r} has no language {lang!r}; it has {list(self.languages)}"
            )

    def prompt(self, lang: str, index: int = 0) -> str:
        """The ``index``-th prompt in ``lang`` (with its ``<mask>``)."""
        self._check_lang(lang)
        ps = self.prompts[lang]
        if not -len(ps) <= index < len(ps):
            raise IndexError(
                f"fact {self.id!r} has {len(ps)} prompt(s) in {lang!r}; index {index} "
                "is out of range"
            )
        return ps[index]

    def target(self, lang: str) -> str:
        """The gold object in ``lang``."""
        self._check_lang(lang)
        return self.object[lang]

    def restrict(self, languages: Iterable[str]) -> "Fact":
        """A copy of this fact with only ``languages`` (all must be present)."""
        langs = list(dict.fromkeys(languages))
        for lang in langs:
            self._check_lang(lang)
        return Fact(
            id=self.id,
            relation=self.relation,
            subject={l: self.subject[l] for l in langs},
            object={l: self.object[l] for l in langs},
            prompts={l: self.prompts[l] for l in langs},
            candidates={l: self.candidates[l] for l in langs if l in self.candidates},
            relation_name=self.relation_name,
        )

    # -- (de)serialisation ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL format, see ``resources/FACTS_FORMAT.md``)."""
        langs = self.languages
        d: dict[str, Any] = {"id": self.id, "relation": self.relation}
        if self.relation_name:
            d["relation_name"] = self.relation_name
        d["subject"] = {l: self.subject[l] for l in langs}
        d["object"] = {l: self.object[l] for l in langs}
        d["prompts"] = {l: list(self.prompts[l]) for l in langs}
        d["candidates"] = {l: list(self.candidates[l]) for l in langs if self.candidates.get(l)}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Fact":
        """Build a fact from :meth:`to_dict`'s format; unknown fields are errors."""
        if not isinstance(d, Mapping):
            raise FactFormatError(
                f"a fact must be a JSON object, got {type(d).__name__}; write one object "
                "per line"
            )
        unknown = sorted(set(d) - set(_FACT_FIELDS))
        if unknown:
            raise FactFormatError(
                f"unknown field(s) {unknown}; the known fields are {list(_FACT_FIELDS)} "
                "(check the spelling)"
            )
        missing = [k for k in _REQUIRED_FIELDS if k not in d]
        if missing:
            raise FactFormatError(
                f"missing field(s) {missing}; every fact needs {list(_REQUIRED_FIELDS)}"
            )
        fid = d["id"]
        for name in ("subject", "object", "prompts", "candidates"):
            if name in d and not isinstance(d[name], Mapping):
                raise FactFormatError(
                    f"fact {fid!r}: field {name!r} must be an object mapping language "
                    f"codes to values, got {type(d[name]).__name__}"
                )
        for name in ("prompts", "candidates"):
            for lang, v in d.get(name, {}).items():
                if not isinstance(v, (list, tuple)):
                    raise FactFormatError(
                        f"fact {fid!r}: {name}[{lang!r}] must be a list of strings, got "
                        f"{type(v).__name__} {v!r}"
                    )
        return cls(
            id=fid,
            relation=d["relation"],
            subject=d["subject"],
            object=d["object"],
            prompts=d["prompts"],
            candidates=d.get("candidates", {}) or {},
            relation_name=d.get("relation_name", "") or "",
        )


# ----------------------------------------------------------------------------------
# Prompts for causal models
# ----------------------------------------------------------------------------------


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
_CAUSAL_MODES = CAUSAL_MODES


def cut_losses(facts: Iterable["Fact"], langs: Sequence[str]) -> dict[str, dict[str, int]]:
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


def prompt_languages(facts: Iterable["Fact"], langs: Sequence[str] | None = None) -> dict[str, str]:
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


# ----------------------------------------------------------------------------------
# Our JSONL format
# ----------------------------------------------------------------------------------


def _facts_from_lines(lines: Iterable[str], source: str) -> list[Fact]:
    facts: list[Fact] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FactFormatError(
                f"{source}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); each "
                "line must be one complete JSON object (see FACTS_FORMAT.md)"
            ) from None
        try:
            fact = Fact.from_dict(d)
        except FactFormatError as e:
            raise FactFormatError(f"{source}:{lineno}: {e}") from None
        if fact.id in seen:
            raise FactFormatError(
                f"{source}:{lineno}: duplicate fact id {fact.id!r} (first on line "
                f"{seen[fact.id]}); give every fact a unique id"
            )
        seen[fact.id] = lineno
        facts.append(fact)
    return facts


def load_facts(path: PathLike) -> list[Fact]:
    """Load facts from our JSONL format (one JSON object per line, blank lines allowed)."""
    path = Path(path)
    return _facts_from_lines(_read_text(path).split("\n"), str(path))


def save_facts(facts: Iterable[Fact], path: PathLike) -> None:
    """Write facts as JSONL (UTF-8, non-ASCII kept), loadable by :func:`load_facts`."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for fact in facts:
            f.write(json.dumps(fact.to_dict(), ensure_ascii=False) + "\n")


def shipped_facts(languages: Sequence[str] | None = None) -> list[Fact]:
    """The packaged English/Chinese fact set (``resources/facts_en_zh.jsonl``).

    With ``languages`` (e.g. ``["zh"]``) every fact is restricted to those languages;
    asking for a language the set lacks raises :class:`FactFormatError`.
    """
    res = resources.files("amig_plugin") / "resources" / SHIPPED_FACTS_FILE
    text = res.read_text(encoding="utf-8")
    facts = _facts_from_lines(text.split("\n"), f"amig_plugin/resources/{SHIPPED_FACTS_FILE}")
    if languages is None:
        return facts
    if isinstance(languages, str):
        languages = [languages]
    langs = [validate_language_code(l) for l in languages]
    have = set().union(*(f.object for f in facts)) if facts else set()
    missing = [l for l in langs if l not in have]
    if missing:
        raise FactFormatError(
            f"the shipped fact set has no {missing}; it has {sorted(have)}. Load your "
            "own facts with load_facts(), load_bmlama() or load_mlama()"
        )
    return [f.restrict(langs) for f in facts]


# ----------------------------------------------------------------------------------
# BMLAMA
# ----------------------------------------------------------------------------------

_BMLAMA_COLUMNS = ("Prompt", "Ans", "Candidate Ans", "Subject")


def _read_text(path: PathLike) -> str:
    """A UTF-8 text file (BOM dropped, line ends kept); invalid UTF-8 is a
    :class:`FactFormatError` naming the file, line and column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FactFormatError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}: "
                              f"{exc.reason}); save the file as UTF-8") from None


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, LF or CRLF, without the line ends (BOM dropped).

    Splits on ``\\n`` only (not on the other separators ``str.splitlines`` knows), so
    line numbers match what an editor shows.
    """
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def _slug(text: str) -> str:
    """Unicode-safe relation slug: NFKC, lower case, runs of non-alphanumeric characters
    (any script's letters and digits are kept) -> ``-``. ASCII templates give the same
    slugs as before (``"[X] was born in [Y]."`` -> ``"x-was-born-in-y"``); Chinese or
    Japanese ones keep their characters (``"[X]出生于[Y]。"`` -> ``"x-出生于-y"``)."""
    s = re.sub(r"\[X\]", " x ", unicodedata.normalize("NFKC", text))
    s = re.sub(r"\[Y\]", " y ", s)
    s = "".join(ch if ch.isalnum() else "-" for ch in s.lower())
    s = re.sub(r"-+", "-", s).strip("-")
    return s or "unknown"


def _bmlama_template(row: tuple) -> str | None:
    """``[X] ... [Y]`` template of a parsed BMLAMA row, or None if the subject is not in the prompt."""
    _lineno, prompt, _ans, _cands, subject = row
    if subject not in prompt:
        return None
    return prompt.replace(subject, "[X]", 1).replace(MASK_PLACEHOLDER, "[Y]")


def _pick_template_lang(parsed: Mapping[str, tuple], wanted: str | None) -> str:
    """``wanted`` when loaded; else the loaded language whose templates split the rows into
    the most relations (the finest partition; ties: sorted order)."""
    if wanted in parsed:
        return wanted
    return max(sorted(parsed), key=lambda l: (len({_bmlama_template(r) for r in parsed[l][1]}), -sorted(parsed).index(l)))


def bmlama_paths(directory: PathLike, languages: Sequence[str] | None = None) -> dict[str, Path]:
    """``{lang: directory/<lang>.tsv}`` for ``languages`` (default: every ``*.tsv`` there)."""
    directory = Path(directory)
    if languages is None:
        languages = sorted(p.stem for p in directory.glob("*.tsv"))
        if not languages:
            raise FactFormatError(f"{directory}: no <lang>.tsv files found")
    return {lang: directory / f"{lang}.tsv" for lang in languages}


def _parse_bmlama_file(lang: str, path: Path) -> list[tuple[int, str, str, tuple[str, ...], str]]:
    lines = _read_lines(path)
    if not lines:
        raise FactFormatError(f"{path}:1: empty file; expected a header line "
                              f"{'<TAB>'.join(_BMLAMA_COLUMNS)}")
    header = [h.strip() for h in lines[0].split("\t")]
    # Quirk (BMLAMA zh.tsv): the header splits "Candidate Ans" into two fields
    # "Candidate<TAB>Ans" while the data rows have four fields. Merge them back.
    fixed: list[str] = []
    i = 0
    while i < len(header):
        if header[i] == "Candidate" and i + 1 < len(header) and header[i + 1] == "Ans":
            fixed.append("Candidate Ans")
            i += 2
        else:
            fixed.append(header[i])
            i += 1
    missing = [c for c in _BMLAMA_COLUMNS if c not in fixed]
    if missing:
        raise FactFormatError(
            f"{path}:1: missing column(s) {missing} in header {fixed}; a BMLAMA file "
            f"needs the tab-separated columns {list(_BMLAMA_COLUMNS)}"
        )
    idx = {c: fixed.index(c) for c in _BMLAMA_COLUMNS}
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # blank lines (e.g. a trailing empty line) carry no row
        fields = line.split("\t")
        if len(fields) != len(fixed):
            raise FactFormatError(
                f"{path}:{lineno}: expected {len(fixed)} tab-separated fields "
                f"{fixed}, found {len(fields)}; fix the row (a field may contain a tab "
                "or the row may be cut)"
            )
        prompt = fields[idx["Prompt"]].strip()
        ans = fields[idx["Ans"]].strip()
        subject = fields[idx["Subject"]].strip()
        n = prompt.count(MASK_PLACEHOLDER)
        if n != 1:
            raise FactFormatError(f"{path}:{lineno}: {_mask_count_error(prompt, n)}")
        if not ans:
            raise FactFormatError(f"{path}:{lineno}: empty 'Ans' (gold object); fill it in")
        if not subject:
            raise FactFormatError(f"{path}:{lineno}: empty 'Subject'; fill it in")
        cands = [c.strip() for c in fields[idx["Candidate Ans"]].split(",")]
        cands = list(dict.fromkeys(c for c in cands if c))
        if ans not in cands:
            # The gold object itself may contain a comma ("Washington, D.C."); keep it.
            cands.append(ans)
        rows.append((lineno, prompt, ans, tuple(cands), subject))
    return rows


def load_bmlama(paths: Mapping[str, PathLike], template_lang: str | None = "en") -> list[Fact]:
    """Load BMLAMA-style parallel TSV files, ``{lang: path}``; row i of every file is
    the same fact.

    Each file has the tab-separated columns ``Prompt`` (cloze sentence with the subject
    filled in and ``<mask>``), ``Ans`` (gold object), ``Candidate Ans`` (comma-separated
    objects of the same relation, gold included) and ``Subject``. LF or CRLF line ends,
    a UTF-8 BOM, and the zh.tsv header quirk (``Candidate<TAB>Ans`` as two header fields
    over four-field rows) are handled. Blank lines are skipped. If the gold object is
    missing from a row's split candidate list (e.g. it contains a comma) it is appended.

    Relation: BMLAMA has no relation column, so it is recovered from the prompt in
    ``template_lang`` (default ``"en"``; when that one is not loaded, the loaded language
    whose templates give the most relations, ties in sorted order): the first occurrence of
    the subject becomes ``[X]`` and the mask ``[Y]``, e.g. ``"[X] was born in [Y]."``.
    Rows are parallel, so any language's aligned template names the relation. The relation
    id is ``"bmlama-"`` plus a Unicode-safe slug of that template
    (``"bmlama-x-was-born-in-y"``, ``"bmlama-x-出生于-y"``), stable whatever the row order
    or file subset; the template itself is the ``relation_name``. Fact ids are
    ``"bmlama-<row>"`` with the 0-based data-row index, the cross-lingual fact id.

    Raises :class:`FactFormatError` naming the file and line for: unknown language
    code, missing column, a row with the wrong number of fields, a prompt without
    exactly one ``<mask>``, empty gold/subject, a template-language subject that does
    not occur in its prompt, and row-count mismatch across languages.
    """
    if not paths:
        raise FactFormatError("load_bmlama: no files given; pass {lang: path}")
    parsed: dict[str, tuple[Path, list]] = {}
    for lang, p in paths.items():
        p = Path(p)
        try:
            validate_language_code(lang)
        except FactFormatError as e:
            raise FactFormatError(f"{p}: {e} (the key of this file in paths)") from None
        parsed[lang] = (p, _parse_bmlama_file(lang, p))
    langs = sorted(parsed)
    counts = {lang: len(parsed[lang][1]) for lang in langs}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{parsed[l][0]}: {counts[l]} rows" for l in langs)
        shortest = min(counts.values())
        longest = max(langs, key=lambda l: counts[l])
        first_extra = f"{parsed[longest][0]}:{parsed[longest][1][shortest][0]}"
        raise FactFormatError(
            f"row count mismatch across languages ({detail}); first row without a "
            f"counterpart: {first_extra}. BMLAMA files are parallel (row i of every file "
            "is the same fact): use files from the same release"
        )
    if template_lang is not None and template_lang not in parsed and template_lang != "en":
        raise FactFormatError(f"template language {template_lang!r} is not among the loaded files {langs}; "
                              "pick one of them (or leave it out)")
    tlang = _pick_template_lang(parsed, template_lang)
    tpath, trows = parsed[tlang]
    facts: list[Fact] = []
    for i in range(counts[tlang]):
        lineno, prompt, _ans, _c, subject = trows[i]
        if subject not in prompt:
            raise FactFormatError(
                f"{tpath}:{lineno}: subject {subject!r} does not occur in prompt "
                f"{prompt!r}; the relation template cannot be recovered (fix the "
                "Subject or Prompt field)"
            )
        template = prompt.replace(subject, "[X]", 1).replace(MASK_PLACEHOLDER, "[Y]")
        try:
            fact = Fact(
                id=f"bmlama-{i}",
                relation="bmlama-" + _slug(template),
                relation_name=template,
                subject={l: parsed[l][1][i][4] for l in langs},
                object={l: parsed[l][1][i][2] for l in langs},
                prompts={l: (parsed[l][1][i][1],) for l in langs},
                candidates={l: parsed[l][1][i][3] for l in langs},
            )
        except FactFormatError as e:
            where = ", ".join(f"{parsed[l][0]}:{parsed[l][1][i][0]}" for l in langs)
            raise FactFormatError(f"{where}: {e}") from None
        facts.append(fact)
    return facts


# ----------------------------------------------------------------------------------
# mLAMA
# ----------------------------------------------------------------------------------


@dataclass
class MLamaReport:
    """What :func:`load_mlama_with_report` kept and dropped.

    Attributes:
        languages: the requested languages.
        relations: relations loaded (template and fact file present in every language).
        skipped_relations: relation -> reason it was skipped (missing template or file
            in some language).
        kept: number of facts returned.
        dropped: uuids seen in some but not all languages (summed over relations).
        dropped_by_language: language -> uuids of that language dropped because another
            language lacks them.
        duplicates: repeated uuids within one file (first occurrence kept).
    """

    languages: tuple[str, ...]
    relations: list[str] = field(default_factory=list)
    skipped_relations: dict[str, str] = field(default_factory=dict)
    kept: int = 0
    dropped: int = 0
    dropped_by_language: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


def _read_jsonl_objects(path: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    out = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FactFormatError(
                f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); each line "
                "must be one complete JSON object"
            ) from None
        if not isinstance(d, dict):
            raise FactFormatError(
                f"{path}:{lineno}: expected a JSON object, got {type(d).__name__}"
            )
        missing = [k for k in required if k not in d]
        if missing:
            raise FactFormatError(
                f"{path}:{lineno}: missing key(s) {missing}; each line needs {list(required)}"
            )
        for k in required:
            if not isinstance(d[k], str) or not d[k].strip():
                raise FactFormatError(
                    f"{path}:{lineno}: key {k!r} must be a non-empty string, got {d[k]!r}"
                )
        out.append((lineno, d))
    return out


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")


def _fill_template(template: str, subject: str, tidy: bool) -> str:
    left, right = template.split("[Y]")
    prompt = (left + MASK_PLACEHOLDER + right).replace("[X]", subject)
    if tidy:
        prompt = _SPACE_BEFORE_PUNCT.sub(r"\1", prompt).strip()
    return prompt


def load_mlama_with_report(
    root: PathLike,
    languages: Sequence[str],
    relations: Sequence[str] | None = None,
    tidy: bool = True,
) -> tuple[list[Fact], MLamaReport]:
    """Load mLAMA facts joined across ``languages`` by uuid, with a report.

    Layout: ``<root>/<lang>/templates.jsonl`` (lines ``{"relation": "P19", "template":
    "[X] was born in [Y] ."}``) and ``<root>/<lang>/<relation>.jsonl`` (lines
    ``{"uuid": ..., "sub_label": ..., "obj_label": ...}``). The prompt is the template
    with ``[X]`` -> subject and ``[Y]`` -> ``<mask>``; with ``tidy`` (default) the spaces
    mLAMA puts before punctuation are removed (``"born in <mask>."``).

    Only uuids present in every requested language are kept; the others are counted in
    the report (``dropped``, ``dropped_by_language``) and logged, never dropped
    silently. Relations missing a template or a fact file in some language are listed
    in ``skipped_relations`` (an explicitly requested relation that is missing is an
    error). Candidates of a fact in a language are all objects of its relation among
    the kept facts in that language (sorted, gold included). Fact ids are
    ``"mlama-<uuid>"``.
    """
    root = Path(root)
    if isinstance(languages, str):
        languages = [languages]
    langs = list(dict.fromkeys(languages))
    if not langs:
        raise FactFormatError("load_mlama: no languages given")
    for lang in langs:
        try:
            validate_language_code(lang)
        except FactFormatError as e:
            raise FactFormatError(f"{root / lang}: {e}") from None
        if not (root / lang).is_dir():
            raise FactFormatError(
                f"{root / lang}: no such directory; mLAMA needs <root>/<lang>/templates.jsonl"
            )
    report = MLamaReport(languages=tuple(langs))

    templates: dict[str, dict[str, str]] = {}
    for lang in langs:
        tpath = root / lang / "templates.jsonl"
        if not tpath.is_file():
            raise FactFormatError(f"{tpath}: file not found; mLAMA needs one per language")
        tl: dict[str, str] = {}
        for lineno, d in _read_jsonl_objects(tpath, ("relation", "template")):
            t = d["template"]
            if t.count("[X]") != 1 or t.count("[Y]") != 1:
                raise FactFormatError(
                    f"{tpath}:{lineno}: template {t!r} must contain [X] (subject) and "
                    "[Y] (object) exactly once each"
                )
            tl[d["relation"]] = t
        templates[lang] = tl

    if relations is None:
        all_rels = sorted(set().union(*(set(t) for t in templates.values())))
    else:
        all_rels = list(dict.fromkeys(relations))
    for rel in all_rels:
        reasons = [f"no template in {lang}" for lang in langs if rel not in templates[lang]]
        reasons += [
            f"no file {root / lang / (rel + '.jsonl')}"
            for lang in langs
            if rel in templates[lang] and not (root / lang / f"{rel}.jsonl").is_file()
        ]
        if reasons:
            if relations is not None:
                raise FactFormatError(f"relation {rel!r} requested but: {'; '.join(reasons)}")
            report.skipped_relations[rel] = "; ".join(reasons)
        else:
            report.relations.append(rel)

    facts: list[Fact] = []
    dropped_by_lang = {lang: 0 for lang in langs}
    for rel in report.relations:
        per_lang: dict[str, dict[str, tuple[int, dict]]] = {}
        for lang in langs:
            fpath = root / lang / f"{rel}.jsonl"
            rows: dict[str, tuple[int, dict]] = {}
            for lineno, d in _read_jsonl_objects(fpath, ("uuid", "sub_label", "obj_label")):
                if d["uuid"] in rows:
                    report.duplicates += 1
                    continue
                rows[d["uuid"]] = (lineno, d)
            per_lang[lang] = rows
        first = per_lang[langs[0]]
        common = [u for u in first if all(u in per_lang[l] for l in langs[1:])]
        common_set = set(common)
        union = set().union(*(set(r) for r in per_lang.values()))
        report.dropped += len(union) - len(common)
        for lang in langs:
            dropped_by_lang[lang] += len(set(per_lang[lang]) - common_set)
        cands = {
            lang: tuple(sorted({per_lang[lang][u][1]["obj_label"].strip() for u in common}))
            for lang in langs
        }
        for u in common:
            try:
                facts.append(
                    Fact(
                        id=f"mlama-{u}",
                        relation=rel,
                        relation_name=templates[langs[0]][rel],
                        subject={l: per_lang[l][u][1]["sub_label"].strip() for l in langs},
                        object={l: per_lang[l][u][1]["obj_label"].strip() for l in langs},
                        prompts={
                            l: (_fill_template(templates[l][rel],
                                               per_lang[l][u][1]["sub_label"].strip(), tidy),)
                            for l in langs
                        },
                        candidates=cands,
                    )
                )
            except FactFormatError as e:
                where = ", ".join(
                    f"{root / l / (rel + '.jsonl')}:{per_lang[l][u][0]}" for l in langs
                )
                raise FactFormatError(f"{where}: {e}") from None
    report.kept = len(facts)
    report.dropped_by_language = dropped_by_lang
    msg = (
        f"mLAMA {root} {langs}: kept {report.kept} facts over {len(report.relations)} "
        f"relations; dropped {report.dropped} uuids not present in all languages "
        f"(per language: {dropped_by_lang})"
    )
    if report.skipped_relations:
        msg += f"; skipped relations {sorted(report.skipped_relations)}"
    if report.duplicates:
        msg += f"; ignored {report.duplicates} repeated uuids"
    if report.dropped or report.skipped_relations or report.duplicates:
        logger.warning(msg)
    else:
        logger.info(msg)
    return facts, report


def load_mlama(
    root: PathLike,
    languages: Sequence[str],
    relations: Sequence[str] | None = None,
    tidy: bool = True,
) -> list[Fact]:
    """Like :func:`load_mlama_with_report` without the report (the counts are logged)."""
    return load_mlama_with_report(root, languages, relations=relations, tidy=tidy)[0]


# ----------------------------------------------------------------------------------
# Wrong facts, grouping
# ----------------------------------------------------------------------------------


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def wrong_objects(
    fact: Fact,
    lang: str,
    facts_of_relation: Iterable[Fact] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Objects of the same relation that make ``fact`` false in ``lang``.

    The pool is ``fact.candidates[lang]``; if that is empty, the objects of
    ``facts_of_relation`` (same relation) in ``lang``. Removed: the gold object and
    every object that is true for the same subject and relation among
    ``facts_of_relation`` (e.g. other borders of a country), compared case- and
    whitespace-insensitively; duplicates are removed. The result is shuffled with a
    generator seeded by ``(seed, fact.id, lang)`` (stable across runs and processes)
    and cut to at most ``n`` items.
    """
    gold = fact.target(lang)
    others = [f for f in (facts_of_relation or ()) if f.relation == fact.relation and lang in f.object]
    subj = _norm(fact.subject[lang])
    true_objs = {_norm(gold)}
    true_objs.update(_norm(f.object[lang]) for f in others if _norm(f.subject[lang]) == subj)
    pool = list(fact.candidates.get(lang, ())) or [f.object[lang] for f in others]
    out: list[str] = []
    seen: set[str] = set()
    for c in pool:
        k = _norm(c)
        if k in true_objs or k in seen:
            continue
        seen.add(k)
        out.append(c)
    random.Random(f"{seed}:{fact.id}:{lang}").shuffle(out)
    if n is not None:
        if n < 0:
            raise ValueError(f"n must be >= 0 or None, got {n}")
        out = out[:n]
    return out


def group_by_relation(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    """``{relation: [facts]}``, relations in order of first appearance, facts in order."""
    groups: dict[str, list[Fact]] = {}
    for f in facts:
        groups.setdefault(f.relation, []).append(f)
    return groups


def sample_facts(facts: Sequence[Fact], n: int, seed: int = 0) -> list[Fact]:
    """``n`` facts spread over relations, deterministic and prefix-consistent.

    Facts are shuffled within each relation (seeded), then taken round-robin over the
    relations (sorted by id), so ``sample_facts(fs, n)`` is a prefix of
    ``sample_facts(fs, n + k)``: studies of 100, 200 and 300 facts share their first facts
    (and cached localizations).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(facts):
        raise ValueError(f"asked for {n} facts but only {len(facts)} are available")
    by_relation = group_by_relation(facts)
    queues = []
    for relation in sorted(by_relation):
        members = list(by_relation[relation])
        random.Random(f"{seed}:{relation}").shuffle(members)
        queues.append(members)
    out: list[Fact] = []
    depth = 0
    while len(out) < n:
        for queue in queues:
            if depth < len(queue) and len(out) < n:
                out.append(queue[depth])
        depth += 1
    return out
