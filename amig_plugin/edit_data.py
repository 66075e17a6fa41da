"""Edit requests from the benchmark formats knowledge editors are run with.

One record, :class:`EditRequest`, and a parser per format:

* ``zsre`` — ZsRE, MEND style: a JSON list of ``{"src", "alt", "subject", "rephrase",
  "loc", "loc_ans"}`` with optional ``"answers"`` (the original answer: ``answers[0]``),
  ``"case_id"`` and ``"portability"`` (``{"New Question", "New Answer"}`` or a list of them).
* ``counterfact`` — CounterFact, MEND style (the same fields as ``zsre``; ``"pred"`` or
  ``"answers"`` is the original answer where present) or the ``requested_rewrite`` form
  (``{"requested_rewrite": {"prompt": "{} plays", "subject", "target_new": {"str"},
  "target_true": {"str"}}, "paraphrase_prompts", "neighborhood_prompts"}``; neighbourhood
  prompts keep ``target_true``).
* ``knowedit`` — KnowEdit JSON: ``{"subject" | "concept", "prompt" | "text", "target_new" |
  "labels", "ground_truth"?, "rephrase"?, "portability": {kind: [{"prompt",
  "ground_truth"}]}, "locality": {kind: [...]}}``; the flat ``rephrase_prompt`` /
  ``locality_prompt`` / ``locality_ground_truth`` fields are read too.
* ``mzsre`` — cross-lingual ZsRE pairs ``[{"en": {...}, "xx": {...}}]``, each side MEND
  style: one English request per pair with the other side under
  ``other_languages[iso]``. The files' codes ``cz`` and ``du`` become ISO ``cs`` and ``nl``.
* ``facts`` — this package's JSONL facts (:func:`amig_plugin.data.load_facts`): the gold
  object is the ground truth and the first wrong object of the relation the new target.
* ``bmlama`` — a BMLAMA directory of ``<lang>.tsv`` files (or one such file), as ``facts``.

:func:`load_requests` detects the format from the content (or takes ``format=``); an
unknown file is refused by name and a bad record names file, record index and field.

Ground truth: ZsRE/CounterFact MEND-style files without ``answers`` and MzsRE carry no
original answer: ``ground_truth`` is ``None`` there and the caller must take the model's
own prediction (:func:`model_prediction`, :func:`with_model_ground_truth`), which sets
``ground_truth_source = "model"``.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import AmigError

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

    def to_easyedit(self, other_lang: Optional[str] = None) -> dict:
        """The request as EasyEdit's ``editor.edit`` takes it (one element of its lists): the
        first rephrase, ``locality["neighborhood"]`` and ``portability["one_hop"]`` from the
        first pair, and with ``other_lang`` (present in ``other_languages``)
        ``portability["other_language"]``: that language's prompt with its new target (the
        English edit carried over)."""
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
        return out


# ----------------------------------------------------------------------------------------
# ground truth from the model


def model_prediction(model, tokenizer, prompt: str, max_new_tokens: int = 8) -> str:
    """The model's own greedy continuation of ``prompt`` (causal LMs), stripped.

    Greedy: argmax token by token, at most ``max_new_tokens``, stopping at EOS or at the
    first newline after some text (leading blank lines are skipped). Used as the ground truth where a format has none (MzsRE, MEND-style
    files without ``answers``)."""
    import torch

    device = next(model.parameters()).device
    ids = list(tokenizer(prompt)["input_ids"])
    start = len(ids)
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == eos:
                break
            ids.append(nxt)
            text = tokenizer.decode(ids[start:], skip_special_tokens=True)
            if "\n" in text.lstrip():
                break
    text = tokenizer.decode(ids[start:], skip_special_tokens=True)
    return text.strip().split("\n")[0].strip()


def with_model_ground_truth(requests: Sequence[EditRequest], model, tokenizer, max_new_tokens: int = 8,
                            predict: Callable[..., str] = model_prediction) -> list[EditRequest]:
    """``requests`` with every missing ground truth (also in ``other_languages``) replaced
    by the model's greedy prediction (``ground_truth_source = "model"``); a request whose
    prediction is empty keeps ``None``."""
    def fill(r: EditRequest) -> EditRequest:
        others = {k: fill(v) for k, v in r.other_languages.items()}
        if r.ground_truth is not None:
            return replace(r, other_languages=others)
        pred = predict(model, tokenizer, r.prompt, max_new_tokens) or None
        return replace(r, ground_truth=pred, ground_truth_source="model" if pred else "none",
                       other_languages=others)
    return [fill(r) for r in requests]


# ----------------------------------------------------------------------------------------
# record helpers


class _Record:
    """Field access that names file, record index and field on failure."""

    def __init__(self, path: Path, index: int, data: Any, where: str = ""):
        if not isinstance(data, dict):
            raise EditDataError(f"{path}: record {index}{where} is a {type(data).__name__}, not a JSON object")
        self.path, self.index, self.data, self.where = path, index, data, where

    def error(self, message: str) -> EditDataError:
        return EditDataError(f"{self.path}: record {self.index}{self.where}: {message}")

    def text(self, *names: str, required: bool = True) -> Optional[str]:
        """The first present field of ``names`` as a string (a list: its first string)."""
        for name in names:
            if name in self.data and self.data[name] is not None:
                value = _first_text(self.data[name])
                if value is None:
                    raise self.error(f"field {name!r} must be a string (or a list of strings), "
                                     f"got {type(self.data[name]).__name__}")
                return value
        if required:
            raise self.error(f"missing field {' or '.join(repr(n) for n in names)}")
        return None


def _first_text(value: Any) -> Optional[str]:
    while isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, str) else None


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(t for t in (_first_text(v) for v in value) if t)
    return ()


def _pairs(rec: _Record, value: Any, field_name: str) -> tuple[PromptAnswer, ...]:
    """Prompt/answer pairs from ``{"New Question", "New Answer"}``, ``{"prompt",
    "ground_truth"}`` (lists aligned or single), or lists / dicts of kinds of those."""
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(p for v in value for p in _pairs(rec, v, field_name))
    if not isinstance(value, dict):
        raise rec.error(f"field {field_name!r} must be an object or a list of objects")
    if "New Question" in value or "prompt" in value:
        prompts = value.get("New Question", value.get("prompt"))
        answers = value.get("New Answer", value.get("ground_truth", value.get("answer")))
        if answers is None:
            raise rec.error(f"field {field_name!r} has a prompt without an answer")
        if isinstance(prompts, list):
            answers = answers if isinstance(answers, list) and len(answers) == len(prompts) else [answers] * len(prompts)
            return tuple(PromptAnswer(p, a) for p, a in ((_first_text(p), _first_text(a)) for p, a in zip(prompts, answers))
                         if p and a)
        p, a = _first_text(prompts), _first_text(answers)
        if not p or not a:
            raise rec.error(f"field {field_name!r}: prompt and answer must be strings")
        return (PromptAnswer(p, a),)
    return tuple(pair for v in value.values() for pair in _pairs(rec, v, field_name))  # kinds


# ----------------------------------------------------------------------------------------
# parsers: (path, parsed JSON) -> requests


def _mend(rec: _Record, source: str, lang: str = "en") -> Optional[EditRequest]:
    target = rec.text("alt")
    if not target.strip():
        return None  # EasyEdit skips empty targets too
    d = rec.data
    answer = rec.text("answers", "pred", required=False)
    locality = ()
    if d.get("loc") is not None:
        locality = (PromptAnswer(rec.text("loc"), rec.text("loc_ans")),)
    return EditRequest(
        prompt=rec.text("src"), subject=rec.text("subject"), target_new=target, ground_truth=answer,
        rephrase=_texts(d.get("rephrase")), locality=locality,
        portability=_pairs(rec, d.get("portability"), "portability"), lang=lang,
        case_id=str(d.get("case_id", rec.index)), source=source,
        ground_truth_source="data" if answer is not None else "none")


def _requested_rewrite(rec: _Record) -> EditRequest:
    rr = rec.data.get("requested_rewrite")
    if isinstance(rr, list) and rr:
        rr = rr[0]
    rw = _Record(rec.path, rec.index, rr, where=".requested_rewrite")
    subject, template = rw.text("subject"), rw.text("prompt")
    if "{}" not in template:
        raise rw.error(f"field 'prompt' must hold '{{}}' where the subject goes, got {template!r}")

    def target(name: str) -> str:
        value = rw.data.get(name)
        text = value.get("str") if isinstance(value, dict) else value
        if not isinstance(text, str):
            raise rw.error(f"missing field {name!r} ({{\"str\": ...}})")
        return text

    truth = target("target_true")
    neighbours = []
    for n in rec.data.get("neighborhood_prompts") or ():
        if isinstance(n, dict):
            neighbours.append(PromptAnswer(n.get("prompt", ""), _first_text(n.get("target", truth)) or truth))
        elif isinstance(n, str):
            neighbours.append(PromptAnswer(n, truth))
    return EditRequest(
        prompt=template.replace("{}", subject), subject=subject, target_new=target("target_new"),
        ground_truth=truth, rephrase=_texts(rec.data.get("paraphrase_prompts")), locality=tuple(neighbours),
        lang="en", case_id=str(rec.data.get("case_id", rec.index)), source="counterfact")


def _knowedit(rec: _Record) -> EditRequest:
    d = rec.data
    truth = rec.text("ground_truth", required=False)
    locality = _pairs(rec, d.get("locality"), "locality")
    if d.get("locality_prompt") is not None:
        locality += (PromptAnswer(rec.text("locality_prompt"), rec.text("locality_ground_truth")),)
    return EditRequest(
        prompt=rec.text("prompt", "text"), subject=rec.text("subject", "concept"),
        target_new=rec.text("target_new", "labels"), ground_truth=truth,
        rephrase=_texts(d.get("rephrase", d.get("rephrase_prompt"))), locality=locality,
        portability=_pairs(rec, d.get("portability"), "portability"),
        case_id=str(d.get("case_id", rec.index)), source="knowedit",
        ground_truth_source="data" if truth is not None else "none")


def iso_language(code: str) -> str:
    """ISO 639-1 code of a language code used in the MzsRE files (``cz`` -> ``cs``, ``du`` -> ``nl``)."""
    return FILE_LANGUAGE_CODES.get(code, code)


def _mzsre(path: Path, index: int, data: Any) -> Optional[EditRequest]:
    if not isinstance(data, dict) or "en" not in data or len(data) != 2:
        raise EditDataError(f"{path}: record {index}: an MzsRE record is {{\"en\": {{...}}, \"xx\": {{...}}}} "
                            f"with exactly two languages, got keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    (other,) = [k for k in data if k != "en"]
    en = _mend(_Record(path, index, data["en"], where=".en"), "mzsre", "en")
    xx = _mend(_Record(path, index, data[other], where=f".{other}"), "mzsre", iso_language(other))
    if en is None or xx is None:
        return None
    return replace(en, other_languages={xx.lang: xx})


def _requests_from_facts(facts, source: str, lang: str, seed: int) -> list[EditRequest]:
    from .data import causal_prompt_and_target, group_by_relation, wrong_objects

    pool = [f for f in facts if lang in f.object]
    by_relation = group_by_relation(pool)
    out = []
    for i, fact in enumerate(pool):
        wrong = wrong_objects(fact, lang, by_relation[fact.relation], seed=seed)
        if not wrong:
            continue
        neighbour = next((f for f in pool[i + 1:] + pool[:i] if f.relation != fact.relation), None)

        def one(language: str, new: str) -> EditRequest:
            gold = fact.object[language]
            prompts = [causal_prompt_and_target(p, gold)[0] for p in fact.prompts[language]]
            loc = ()
            if neighbour is not None and language in neighbour.object:
                loc = (PromptAnswer(causal_prompt_and_target(neighbour.prompts[language][0], neighbour.object[language])[0],
                                    neighbour.object[language]),)
            return EditRequest(prompt=prompts[0], subject=fact.subject[language], target_new=new, ground_truth=gold,
                               rephrase=tuple(prompts[1:]), locality=loc, lang=language, case_id=fact.id, source=source)

        cands = list(fact.candidates.get(lang, ()))
        others = {}
        for language in fact.object:
            other_cands = list(fact.candidates.get(language, ()))
            if language != lang and len(other_cands) == len(cands) and wrong[0] in cands:
                others[language] = one(language, other_cands[cands.index(wrong[0])])
        out.append(replace(one(lang, wrong[0]), other_languages=others))
    return out


# ----------------------------------------------------------------------------------------
# detection and loading


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EditDataError(f"{path}: not UTF-8 text; edit data must be UTF-8 JSON or JSONL") from None
    except OSError as exc:
        raise EditDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UnknownFormatError(f"{path}: neither JSON nor JSONL (line {lineno}: {e.msg}); "
                                         f"give a file in one of the formats {', '.join(FORMATS)}") from None
    return records


def _records(path: Path, data: Any) -> list:
    if isinstance(data, dict):
        for key in ("data", "requests", "records"):
            if isinstance(data.get(key), list):
                return data[key]
        return [data]
    if isinstance(data, list):
        return data
    raise UnknownFormatError(f"{path}: holds a JSON {type(data).__name__}, not a list of records; "
                             f"give a file in one of the formats {', '.join(FORMATS)}")


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its content (the first record's fields); an unknown
    file raises :class:`UnknownFormatError` naming it."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".tsv":
        if path.is_file() or any(path.glob("*.tsv")):
            return "bmlama"
        raise UnknownFormatError(f"{path}: a directory without BMLAMA <lang>.tsv files; give an edit-data file")
    records = _records(path, _read_json(path))
    if not records:
        raise UnknownFormatError(f"{path}: no records; give a non-empty file")
    return _format_of(path, records[0])


def _format_of(path: Path, first: Any) -> str:
    if isinstance(first, dict):
        keys = set(first)
        if "requested_rewrite" in keys:
            return "counterfact"
        if "src" in keys and "alt" in keys:
            loc = first.get("loc")
            zsre = "answers" in keys or (isinstance(loc, str) and loc.startswith("nq question:")) or \
                str(first.get("src", "")).rstrip().endswith("?")
            return "zsre" if zsre else "counterfact"
        if "en" in keys and len(keys) == 2 and all(isinstance(v, dict) for v in first.values()) and "src" in first["en"]:
            return "mzsre"
        if ({"prompt", "text"} & keys) and ({"target_new", "labels"} & keys):
            return "knowedit"
        if {"id", "subject", "object", "prompts"} <= keys:
            return "facts"
    found = sorted(first)[:8] if isinstance(first, dict) else type(first).__name__
    raise UnknownFormatError(f"{path}: not a known edit-data format (first record: {found}); "
                             f"give a file in one of the formats {', '.join(FORMATS)}, or name it with format=")


def load_requests(path: str | Path, format: Optional[str] = None, *, lang: str = "en",
                  seed: int = 0, limit: Optional[int] = None) -> list[EditRequest]:
    """Edit requests from ``path`` in ``format`` (detected from the content when ``None``).

    ``lang``/``seed``: for ``facts`` and ``bmlama`` (the edit language; the seed choosing
    the wrong object that becomes ``target_new``). ``limit``: the first ``limit`` requests.
    Records with an empty ``alt`` are skipped with a warning (EasyEdit skips them too)."""
    path = Path(path)
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise EditDataError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if format in ("facts", "bmlama"):
        from .data import bmlama_paths, load_bmlama, load_facts

        if format == "facts":
            facts = load_facts(path)
        elif path.is_dir():
            facts = load_bmlama(bmlama_paths(path), template_lang=lang)
        else:
            facts = load_bmlama({path.stem: path}, template_lang=path.stem)
        from .data import PromptTextDropped

        with warnings.catch_warnings():  # prompts cut at <mask>: the loader of the facts says so already
            warnings.simplefilter("ignore", PromptTextDropped)
            out = _requests_from_facts(facts, format, lang, seed)
        return out[:limit] if limit is not None else out
    records = _records(path, _read_json(path))
    out, skipped = [], 0
    for index, data in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        if format == "mzsre":
            req = _mzsre(path, index, data)
        else:
            rec = _Record(path, index, data)
            if format == "knowedit":
                req = _knowedit(rec)
            elif format == "counterfact" and "requested_rewrite" in rec.data:
                req = _requested_rewrite(rec)
            else:
                req = _mend(rec, format)
        if req is None:
            skipped += 1
        else:
            out.append(req)
    if skipped:
        warnings.warn(f"{path}: {skipped} record(s) with an empty 'alt' skipped", stacklevel=2)
    return out


def merge_languages(*request_lists: Sequence[EditRequest]) -> list[EditRequest]:
    """Join MzsRE files of several language pairs (``en-zh``, ``en-fr``, ...) into one list:
    requests at the same index must have the same English side; their ``other_languages``
    are merged. Raises :class:`EditDataError` where the English sides differ."""
    if not request_lists:
        return []
    n = min(len(r) for r in request_lists)
    out = []
    for i in range(n):
        base = request_lists[0][i]
        merged = dict(base.other_languages)
        for reqs in request_lists[1:]:
            r = reqs[i]
            if replace(r, other_languages={}) != replace(base, other_languages={}):
                raise EditDataError(f"record {i}: the English sides of the language pairs differ "
                                    f"({base.prompt!r} vs {r.prompt!r}); join files of the same requests")
            merged.update(r.other_languages)
        out.append(replace(base, other_languages=merged))
    return out


def sample_requests(requests: Sequence[EditRequest], n: int, seed: int = 0) -> list[EditRequest]:
    """``n`` requests drawn without replacement (seeded), in file order."""
    if n >= len(requests):
        return list(requests)
    keep = sorted(random.Random(seed).sample(range(len(requests)), n))
    return [requests[i] for i in keep]

