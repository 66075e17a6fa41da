"""Edit requests: :class:`EditRequest` (one edit with its paraphrases, locality and
portability prompts, and the same request in other languages), :class:`PromptAnswer`, the
format names and the errors of edit-data files (:mod:`amig_plugin.data.edits` loads them)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

from ..errors import AmigError

FORMATS = ("zsre", "counterfact", "knowedit", "mzsre", "facts", "bmlama")

#: language codes of the MzsRE files that are not ISO 639-1
FILE_LANGUAGE_CODES = {"cz": "cs", "du": "nl"}


class EditDataError(AmigError, ValueError):
    """A bad edit-data file or record (the message names file, record and field)."""


class UnknownFormatError(EditDataError):
    """A file in none of the known edit-data formats."""


@dataclass(frozen=True)
class PromptAnswer:
    prompt: str
    answer: str


@dataclass(frozen=True)
class EditRequest:
    """One edit: make ``prompt`` (about ``subject``) answer ``target_new``.

    ``ground_truth``: the original answer, ``None`` where the format has none (then take
    the model's prediction: :func:`with_model_ground_truth`); ``ground_truth_source``:
    ``"data"``, ``"model"`` or ``"none"``. ``rephrase``: paraphrases (generality);
    ``locality``: unrelated prompts with their answers; ``portability``: prompts whose
    answer should follow from the edit. ``other_languages``: the same request in other
    languages (ISO codes), for cross-lingual evaluation. ``source``: the format name.
    """

    prompt: str
    subject: str
    target_new: str
    ground_truth: Optional[str]
    rephrase: tuple[str, ...] = ()
    locality: tuple[PromptAnswer, ...] = ()
    portability: tuple[PromptAnswer, ...] = ()
    lang: str = "en"
    case_id: str = ""
    source: str = ""
    ground_truth_source: str = "data"
    other_languages: Mapping[str, "EditRequest"] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (nested requests included)."""
        d = asdict(self)
        d["other_languages"] = {k: v.to_dict() for k, v in self.other_languages.items()}
        return d

    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`: identifies the request."""
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_easyedit(self, other_lang: Optional[str] = None, eval_langs: Sequence[str] = ()) -> dict:
        """The request as EasyEdit's ``editor.edit`` takes it (one element of its lists): the
        first rephrase, ``locality["neighborhood"]`` and ``portability["one_hop"]`` from the
        first pair, and with ``other_lang`` (present in ``other_languages``)
        ``portability["other_language"]``: that language's prompt with its new target (the
        English edit carried over).

        ``eval_langs``: cross-lingual evaluation keys for each listed language ``L`` of
        ``other_languages`` (EasyEdit scores every key with its own metrics):
        ``portability[L_reliability]`` (L's prompt -> L's new target),
        ``portability[L_generality]`` (L's first rephrase), ``portability[L_portability]``
        (L's first portability pair) and ``locality[L_locality]`` (L's first locality
        prompt: post-edit tokens equal pre-edit tokens)."""
        out = {"case_id": self.case_id, "prompt": self.prompt, "subject": self.subject,
               "target_new": self.target_new, "ground_truth": self.ground_truth, "locality": {}, "portability": {}}
        if self.rephrase:
            out["rephrase_prompt"] = self.rephrase[0]
        if self.locality:
            out["locality"]["neighborhood"] = {"prompt": self.locality[0].prompt, "ground_truth": self.locality[0].answer}
        if self.portability:
            out["portability"]["one_hop"] = {"prompt": self.portability[0].prompt,
                                             "ground_truth": self.portability[0].answer}
        if other_lang and other_lang in self.other_languages:
            other = self.other_languages[other_lang]
            out["portability"]["other_language"] = {"prompt": other.prompt, "ground_truth": other.target_new}
        for lang in eval_langs:
            if lang not in self.other_languages:
                raise KeyError(f"request {self.case_id or self.prompt!r} has no {lang!r} side "
                               f"(it has {sorted(self.other_languages) or 'none'})")
            other = self.other_languages[lang]
            out["portability"][f"{lang}_reliability"] = {"prompt": other.prompt, "ground_truth": other.target_new}
            if other.rephrase:
                out["portability"][f"{lang}_generality"] = {"prompt": other.rephrase[0], "ground_truth": other.target_new}
            if other.portability:
                out["portability"][f"{lang}_portability"] = {"prompt": other.portability[0].prompt,
                                                             "ground_truth": other.portability[0].answer}
            if other.locality:
                out["locality"][f"{lang}_locality"] = {"prompt": other.locality[0].prompt,
                                                       "ground_truth": other.locality[0].answer}
        return out


def iso_language(code: str) -> str:
    """ISO 639-1 code of a language code used in the MzsRE files (``cz`` -> ``cs``, ``du`` -> ``nl``)."""
    return FILE_LANGUAGE_CODES.get(code, code)
