"""One parser per edit-data format: ``(file, record) -> EditRequest`` for ZsRE and
CounterFact in MEND style (:func:`_mend`), CounterFact's ``requested_rewrite`` form,
KnowEdit and MzsRE pairs, and requests built from facts (our JSONL, BMLAMA). Every error
names the file, the record index and the field (:class:`_Record`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from .edit_records import EditDataError, EditRequest, PromptAnswer, iso_language
from .prompts import causal_prompt_and_target
from .sampling import group_by_relation, wrong_objects


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


def parse_record(path: Path, index: int, data: Any, format: str) -> Optional[EditRequest]:
    """Record ``index`` of a ``zsre``, ``counterfact``, ``knowedit`` or ``mzsre`` file as a
    request; ``None`` for a record with an empty ``alt`` (skipped, as EasyEdit does)."""
    if format == "mzsre":
        return _mzsre(path, index, data)
    rec = _Record(path, index, data)
    if format == "knowedit":
        return _knowedit(rec)
    if format == "counterfact" and "requested_rewrite" in rec.data:
        return _requested_rewrite(rec)
    return _mend(rec, format)


def _requests_from_facts(facts, source: str, lang: str, seed: int) -> list[EditRequest]:
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
