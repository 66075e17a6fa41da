"""Fact records: the :class:`Fact` data model, :class:`FactFormatError`, language codes
and the field checks every loader shares (standard library only)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..errors import AmigError

#: The placeholder that marks where the object goes in a cloze prompt.
MASK_PLACEHOLDER = "<mask>"

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




def require_fields(d: Mapping[str, Any], required: Sequence[str], *, where: str = "", noun: str = "field",
                   holder: str = "every fact") -> None:
    """Raise :class:`FactFormatError` ``"<where>missing <noun>(s) [...]; <holder> needs [...]"``
    when ``d`` lacks any key of ``required``."""
    missing = [k for k in required if k not in d]
    if missing:
        raise FactFormatError(f"{where}missing {noun}(s) {missing}; {holder} needs {list(required)}")


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
        object.__setattr__(self, "subject", dict(self.subject))
        object.__setattr__(self, "object", dict(self.object))
        object.__setattr__(self, "prompts", self._tuples("prompts", "prompts"))
        object.__setattr__(self, "candidates", self._tuples("candidates", "objects"))
        self.validate()

    def _tuples(self, name: str, items: str) -> dict[str, tuple[str, ...]]:
        """Field ``name`` (language -> list of ``items``) with tuples; a bare string is an error."""
        out = {}
        for lang, values in getattr(self, name).items():
            if isinstance(values, str):
                raise FactFormatError(
                    f"fact {self.id!r}: {name}[{lang!r}] must be a list of {items}, "
                    f"got a single string {values!r}; wrap it in a list"
                )
            out[lang] = tuple(values)
        return out

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
        require_fields(d, _REQUIRED_FIELDS)
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
