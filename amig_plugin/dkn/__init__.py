"""Degenerate knowledge neurons (DKN, Chen et al. 2024, §"Degenerate Knowledge Neurons").

Among a fact's top-``k`` knowledge neurons (``k = 20``), a pair (a, b) is *degenerate* when
suppressing either neuron alone keeps P(gold | prompt) >= (1 − low)·P0 while suppressing
both drops it below (1 − high)·P0 (paper: ``low = 0.2``, ``high = 0.25``): the two back each
other up. Detection batches all 1 + k + k(k−1)/2 suppressed forwards; larger degenerate
sets grow greedily from the pairs' rule; causal LMs score the object alone (``"cut"``) or
with the rest of the sentence (``"sentence"``).

Modules (data flows down this list):

- :mod:`.result`: the thresholds, the pair rule (:func:`classify_pairs`) and one fact's
  :class:`DKNResult` (with the ``excess_drop`` diagnostic).
- :mod:`.detection`: suppressed scores, :func:`detect_degenerate` (batched),
  :func:`detect_degenerate_loop` (the one-by-one reference), :func:`grow_degenerate_sets`.
- :mod:`.facts`: one fact: top neurons of its cached localization, the queries it scores in
  each causal mode, :func:`detect_for_fact`.
- :mod:`.records`: detection keys, record validation, the shared store
  (:func:`default_store_dir`), :func:`detect_facts` (resumable, every fact of a language).
- :mod:`.summary`: :func:`layer_summary` and its markdown table.
"""

from .detection import detect_degenerate, detect_degenerate_loop, grow_degenerate_sets, suppressed_scores
from .facts import detect_for_fact, effective_causal_mode, fact_queries, top_neurons_for
from .records import (FACT_ERRORS, check_detection_record, default_store_dir, detect_facts, detection_key,
                      detection_keys, lookup_detection, model_key, put_detection)
from .result import (DEFAULT_HIGH, DEFAULT_K, DEFAULT_LOW, DEFAULT_MAX_SET_SIZE, DKNResult, Neuron, check_thresholds,
                     classify_pairs, pair_indices)
from .summary import format_layer_summary, layer_summary

__all__ = [
    "DEFAULT_HIGH", "DEFAULT_K", "DEFAULT_LOW", "DEFAULT_MAX_SET_SIZE", "DKNResult", "FACT_ERRORS", "Neuron",
    "check_detection_record", "check_thresholds", "classify_pairs", "default_store_dir", "detect_degenerate",
    "detect_degenerate_loop", "detect_facts", "detect_for_fact", "detection_key", "detection_keys",
    "effective_causal_mode", "fact_queries", "format_layer_summary", "grow_degenerate_sets", "layer_summary",
    "lookup_detection", "model_key", "pair_indices", "put_detection", "suppressed_scores", "top_neurons_for",
]
