"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024, Table 3), done right.

Per language and relation, the facts are split into a DKN part, a dev part and a test part;
the neurons recurring in the DKN part's degenerate pairs (count > λ × max count) become the
relation's DKN; each (prompt, candidate) query of the dev and test parts, true object or a
wrong one, is scored by the mean attribution of those neurons; the threshold is tuned on dev
only and every metric is computed on test, beside baselines without DKN (the paper's exact
match, a likelihood rank, a dev-tuned likelihood threshold). The positive class is "the fact
is true" (precision and recall the right way round). The whole protocol is
:mod:`amig_plugin.factcheck.run`'s docstring.

Modules (data flows down this list):

- :mod:`.metrics`: :class:`Confusion`, trivial baselines' F1, ROC-AUC, the dev threshold (pure).
- :mod:`.queries`: DKN / dev / test splits, wrong candidates, the true and wrong queries and
  the (prompt, target) scored for a candidate in each causal mode.
- :mod:`.checker`: relation-level DKN, the DKN score of a query, :class:`FactChecker` (fitted,
  saved and loaded; used by the EasyEdit metric).
- :mod:`.report`: :func:`evaluate_queries` (pure), :class:`FactCheckReport` with its bootstrap
  intervals and markdown, :func:`format_summary` (languages × methods).
- :mod:`.run`: :func:`run_factcheck`, the whole evaluator for one language (resumable scoring).
"""

from ..likelihood import likelihood
from ..neurons import Neuron
from .checker import DEFAULT_LAMBDA, FactChecker, check_lambda, dkn_score, recurring_neurons, relation_dkn
from .metrics import Confusion, all_true_f1, choose_threshold, random_f1, roc_auc
from .queries import (DEFAULT_FRACTIONS, PARTS, TooFewFactsError, build_queries, candidate_query, check_fractions,
                      split_facts, split_relation, wrong_candidates)
from .report import METHOD_LABELS, METHODS, MIN_DEV_QUERIES, SCORE_FIELDS, FactCheckReport, evaluate_queries, format_summary
from .run import run_factcheck

__all__ = [
    "Confusion", "DEFAULT_FRACTIONS", "DEFAULT_LAMBDA", "FactCheckReport", "FactChecker", "METHODS", "METHOD_LABELS",
    "MIN_DEV_QUERIES", "Neuron", "PARTS", "SCORE_FIELDS", "TooFewFactsError", "all_true_f1", "build_queries", "candidate_query",
    "check_fractions", "check_lambda", "choose_threshold", "dkn_score", "evaluate_queries", "format_summary",
    "likelihood", "random_f1", "recurring_neurons", "relation_dkn", "roc_auc", "run_factcheck", "split_facts",
    "split_relation", "wrong_candidates",
]
