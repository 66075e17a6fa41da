"""Edit requests from the benchmark formats knowledge editors are run with.

One record, :class:`~amig_plugin.data.edit_records.EditRequest`, and a parser per format
(:mod:`amig_plugin.data.edit_formats`):

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
own prediction (:func:`with_model_ground_truth` with a predictor such as
:func:`amig_plugin.models.generation.greedy_continuation`), which sets
``ground_truth_source = "model"``.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .bmlama import bmlama_paths, load_bmlama
from .edit_formats import _requests_from_facts, parse_record
from .edit_records import (FILE_LANGUAGE_CODES, FORMATS, EditDataError, EditRequest, PromptAnswer, UnknownFormatError,
                           iso_language)
from .jsonl import load_facts
from .prompts import PromptTextDropped

__all__ = ["FORMATS", "FILE_LANGUAGE_CODES", "EditDataError", "UnknownFormatError", "PromptAnswer", "EditRequest",
           "iso_language", "mzsre_files", "with_model_ground_truth", "detect_format", "load_requests",
           "merge_languages", "sample_requests"]


# ----------------------------------------------------------------------------------------
# ground truth from the model


def _answer_tokens(tokenizer, target_new: str, cap: int) -> int:
    """As many tokens as ``target_new`` has (1..``cap``): the old answer is compared with the
    new one at equal length, not a sentence continuation with an answer."""
    if tokenizer is None:  # a stand-in predictor that needs none: the cap
        return cap
    return max(1, min(cap, len(tokenizer(target_new, add_special_tokens=False)["input_ids"])))


def with_model_ground_truth(requests: Sequence[EditRequest], model, tokenizer, max_new_tokens: int = 8, *,
                            predict: Callable[..., str],
                            languages: Optional[Sequence[str]] = None) -> list[EditRequest]:
    """``requests`` with every missing ground truth (also in ``other_languages``; only those
    in ``languages`` when given) replaced by ``predict(model, tokenizer, prompt, n)``, the
    model's prediction of n tokens, n as many as the request's ``target_new`` has (at most
    ``max_new_tokens``; ``ground_truth_source = "model"``; for causal LMs
    :func:`amig_plugin.models.generation.greedy_continuation`); a request whose prediction
    is empty keeps ``None``."""
    def fill(r: EditRequest) -> EditRequest:
        others = {k: (fill(v) if languages is None or k in languages else v) for k, v in r.other_languages.items()}
        if r.ground_truth is not None:
            return replace(r, other_languages=others)
        pred = predict(model, tokenizer, r.prompt, _answer_tokens(tokenizer, r.target_new, max_new_tokens)) or None
        return replace(r, ground_truth=pred, ground_truth_source="model" if pred else "none",
                       other_languages=others)
    return [fill(r) for r in requests]


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
    if path.is_dir() and mzsre_files(path):
        return "mzsre"
    if path.is_dir() or path.suffix == ".tsv":
        if path.is_file() or any(path.glob("*.tsv")):
            return "bmlama"
        raise UnknownFormatError(f"{path}: a directory without BMLAMA <lang>.tsv files or MzsRE en-<xx>.json files; "
                                 f"give an edit-data file")
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


def mzsre_files(folder: str | Path) -> dict[str, Path]:
    """``{iso language: path}`` of the MzsRE pair files ``en-<xx>.json`` in ``folder``."""
    out = {}
    for path in sorted(Path(folder).glob("en-*.json")):
        out[iso_language(path.stem[3:])] = path
    return out


def _load_mzsre_folder(folder: Path, langs: Optional[Sequence[str]], limit: Optional[int]) -> list[EditRequest]:
    files = mzsre_files(folder)
    wanted = [x for x in (langs or files) if x != "en"]
    missing = [x for x in wanted if x not in files]
    if missing:
        raise EditDataError(f"{folder}: no MzsRE file for {missing} (it has en-<xx>.json for {sorted(files)}); "
                            f"choose --langs among en,{','.join(sorted(files))}")
    if not wanted:
        wanted = list(files)[:1]
    return merge_languages(*(load_requests(files[x], "mzsre", limit=limit) for x in wanted))


def load_requests(path: str | Path, format: Optional[str] = None, *, lang: str = "en",
                  seed: int = 0, limit: Optional[int] = None,
                  langs: Optional[Sequence[str]] = None) -> list[EditRequest]:
    """Edit requests from ``path`` in ``format`` (detected from the content when ``None``).

    ``lang``/``seed``: for ``facts`` and ``bmlama`` (the edit language; the seed choosing
    the wrong object that becomes ``target_new``). ``limit``: the first ``limit`` requests.
    ``langs``: for a folder of MzsRE files (``en-<xx>.json``), the languages to join
    (:func:`merge_languages`; default: every file). Records with an empty ``alt`` are
    skipped with a warning (EasyEdit skips them too)."""
    path = Path(path)
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise EditDataError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "mzsre" and path.is_dir():
        return _load_mzsre_folder(path, langs, limit)
    if format in ("facts", "bmlama"):
        if format == "facts":
            facts = load_facts(path)
        elif path.is_dir():
            facts = load_bmlama(bmlama_paths(path), template_lang=lang)
        else:
            facts = load_bmlama({path.stem: path}, template_lang=path.stem)
        with warnings.catch_warnings():  # prompts cut at <mask>: the loader of the facts says so already
            warnings.simplefilter("ignore", PromptTextDropped)
            out = _requests_from_facts(facts, format, lang, seed)
        return out[:limit] if limit is not None else out
    records = _records(path, _read_json(path))
    out, skipped = [], 0
    for index, data in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        req = parse_record(path, index, data, format)
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
