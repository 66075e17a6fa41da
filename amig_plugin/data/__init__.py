"""Facts: the data model, prompt shaping for causal LMs, the input formats, and edit requests.

A :class:`Fact` is one (subject, relation, object) triple expressed in one or more
languages. For each language it holds the subject's surface form, the gold object,
one or more cloze prompts (the subject filled in, exactly one ``<mask>`` where the
object goes) and, optionally, candidate objects of the same relation (gold included),
which are the natural source of wrong facts for fact-checking.

This package only uses the standard library (a model's own answer, where an edit format has
none, comes from a predictor the caller passes); it never imports ``easyeditor``.

Modules (imports run downwards only: ``records`` <- ``prompts``, ``files`` <- the formats):

- :mod:`~amig_plugin.data.records`: :class:`Fact`, :class:`FactFormatError`, language codes,
  the shared field checks;
- :mod:`~amig_plugin.data.prompts`: cloze prompt -> causal-LM query (``cut``/``sentence``),
  text normalisation, the warnings and per-language summary when ``cut`` drops text;
- :mod:`~amig_plugin.data.files`: UTF-8 text, lines and JSON Lines reading for the formats;
- :mod:`~amig_plugin.data.jsonl`: our JSONL fact format and the shipped English/Chinese set;
- :mod:`~amig_plugin.data.bmlama`: BMLAMA parallel ``<lang>.tsv`` files;
- :mod:`~amig_plugin.data.mlama`: the mLAMA directory layout, joined by uuid, with a report;
- :mod:`~amig_plugin.data.sampling`: wrong objects, grouping by relation, balanced samples;
- :mod:`~amig_plugin.data.edit_records`: :class:`~amig_plugin.data.edit_records.EditRequest`
  and its errors;
- :mod:`~amig_plugin.data.edit_formats`: one parser per editing-benchmark format (ZsRE,
  CounterFact, KnowEdit, MzsRE, our facts / BMLAMA);
- :mod:`~amig_plugin.data.edits`: format detection, :func:`~amig_plugin.data.edits.load_requests`,
  merging and sampling requests, the model's own answer as ground truth.

Public API (re-exported here)
-----------------------------
- :data:`MASK_PLACEHOLDER`, :data:`LANGUAGE_CODES`, :class:`FactFormatError`
- :class:`Fact` (``languages``, ``prompt()``, ``target()``, ``restrict()``,
  ``to_dict()``, ``from_dict()``, ``validate()``)
- :func:`normalize_text`, :func:`causal_cloze`, :class:`PromptTextDropped`
- :func:`split_prompt_at_mask`, :data:`CAUSAL_MODES`, :func:`causal_prompt_and_target`
- :func:`cut_losses`, :func:`cut_loss_warnings`, :func:`prompt_drop_summary`, :func:`prompt_languages`
- :func:`load_facts`, :func:`save_facts`, :func:`shipped_facts`
- :func:`load_bmlama`, :func:`bmlama_paths`
- :func:`load_mlama`, :func:`load_mlama_with_report`, :class:`MLamaReport`
- :func:`wrong_objects`, :func:`true_objects`, :func:`object_key`, :func:`group_by_relation`,
  :func:`sample_facts`

Edit requests are imported from :mod:`amig_plugin.data.edits`.
"""

from __future__ import annotations

from .bmlama import bmlama_paths, load_bmlama
from .jsonl import SHIPPED_FACTS_FILE, load_facts, save_facts, shipped_facts
from .mlama import MLamaReport, load_mlama, load_mlama_with_report
from .prompts import (CAUSAL_MODES, PromptTextDropped, _warned, causal_cloze, causal_prompt_and_target,
                      cut_loss_warnings, cut_losses, dropped_words, normalize_text, prompt_drop_summary,
                      prompt_languages, split_prompt_at_mask, warned_languages)
from .records import LANGUAGE_CODES, MASK_PLACEHOLDER, Fact, FactFormatError, validate_language_code
from .sampling import group_by_relation, object_key, sample_facts, true_objects, wrong_objects

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
    "dropped_words",
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
    "true_objects",
    "object_key",
    "group_by_relation",
    "sample_facts",
]

# ``_warned`` (the prompts already warned about, see :mod:`.prompts`) stays reachable as
# ``amig_plugin.data._warned``: tests clear it between cases.
