"""Language-independent knowledge neurons (LIKN) and the cross-lingual editing experiment.

Chen et al. (AAAI 2024), "Journey to the Center of the Knowledge Neurons", §LIKN; see
``docs/likn.md``.

**LIKN.** Each fact is localized in each language (AMIG or KN, through the shared
:class:`~amig_plugin.localization.cache.LocalizationCache`); the fact's language-independent neurons are
the intersection of its per-language neuron sets, matched exactly on ``(layer, index)``.
Facts whose intersection is empty are kept and reported (:class:`LIKNReport`).

**Cross-lingual editing.** On the SAME facts, each fact gets these edits (:func:`plan_edits`):

=========  ==========================================  ============================
edit       neurons                                     reported as, measured in ℓ
=========  ==========================================  ============================
LIKN       the intersection                            ``LIKN`` (every language)
KN[A]      language A's neurons                        ``Mono-KN (A→ℓ)`` for ℓ ≠ A,
                                                       ``Own-KN (A)`` for ℓ = A
Seq-KN     A's neurons, then B's, ... (all applied)    ``Seq-KN`` (every language)
Random     random neurons, as many as the LIKN         ``Random`` (control)
=========  ==========================================  ============================

Every edit is measured in every language; nothing is undone between the steps of an edit
(the paper's Seq-KN code undid the first edit before the second and recorded only the
second: a bug we do not repeat). Two protocols: ``activation`` (the paper's: the edit's
neurons ×0 / ×2 at the target position) and ``value`` (Dai et al.'s value-vector update
old → new, the steps applied one after the other, weights restored bit for bit after each
edit). Measured per fact, edit and language: the relative change of P(gold) on the fact's
prompt ("related") and on other facts' prompts ("unrelated"), accuracy before and after;
aggregated over facts with 95% CIs and the paper's success ratio.

Modules (each imports only modules above it; none imports this package):

* :mod:`.sets` — one fact's per-language sets and their intersection (:class:`FactLIKN`);
* :mod:`.edits` — the edits of a fact (:func:`plan_edits`) and the value-vector edit (:func:`apply_value_edit`);
* :mod:`.statistics` — :func:`aggregate`, :func:`success_ratios`, :func:`success_bootstrap`;
* :mod:`.tables` — markdown number cells and the aggregate tables;
* :mod:`.controls` — chance baselines, shuffled-fact and hub controls of the overlap;
* :mod:`.report` — the LIKN of many facts (:class:`LIKNReport`), :func:`compute_likn`, :func:`find_likn`;
* :mod:`.protocols` — the activation and value protocols with their candidate ranker;
* :mod:`.experiment` — :class:`LIKNExperiment` (report, JSON save/load) and :func:`run_likn_experiment`.
"""

from ..likelihood import score_pairs
from ..localization import cloze_query, fact_query, localize_fact, localize_facts  # noqa: F401 (cloze_query)
from .controls import controls_markdown, hub_neurons, layer_matched_chance, likn_controls, pair_controls, uniform_chance
from .edits import (MODES, Edit, activation_signs, apply_value_edit, parallel_new_object, plan_edits,  # noqa: F401
                    setting_kind, setting_label)
from .experiment import LIKNExperiment, _jsonable, run_likn_experiment  # noqa: F401 (_jsonable: pipeline)
from .protocols import PROTOCOLS, activation_protocol, value_protocol
from .report import LIKNReport, compute_likn, find_likn
from .sets import FactLIKN, Neuron, intersect_neuron_sets
from .statistics import aggregate, success_bootstrap, success_ratios
from .tables import activation_table, bootstrap_table, sturdy_table, value_table  # noqa: F401

__all__ = [
    "Neuron",
    "PROTOCOLS",
    "fact_query",
    "localize_fact",
    "localize_facts",
    "intersect_neuron_sets",
    "FactLIKN",
    "LIKNReport",
    "compute_likn",
    "layer_matched_chance",
    "uniform_chance",
    "hub_neurons",
    "pair_controls",
    "likn_controls",
    "controls_markdown",
    "find_likn",
    "Edit",
    "plan_edits",
    "setting_label",
    "parallel_new_object",
    "activation_signs",
    "apply_value_edit",
    "score_pairs",
    "activation_protocol",
    "value_protocol",
    "aggregate",
    "success_ratios",
    "success_bootstrap",
    "LIKNExperiment",
    "run_likn_experiment",
]
