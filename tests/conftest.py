"""Shared fixtures: tiny models (cached per session), models with a planted knowledge neuron, and
BMLAMA-format files written from the shipped facts. The builders live in
:mod:`amig_plugin.testing`; their names are re-exported here for the tests that import them from
``conftest``.

Cached models are shared between tests: a test that changes weights must deep-copy first.
"""

from __future__ import annotations

import logging

import pytest
import torch

from amig_plugin.testing import (  # noqa: F401  (re-exported for `from conftest import ...`)
    BERT_PROMPT,
    CAUSAL_PROMPT,
    FAMILIES,
    PLANT_INDEX,
    PLANT_LAYER,
    Planted,
    amig_hooks,
    ffn_inputs,
    get_model,
    get_planted,
    input_projections,
    plain_log_prob,
    plant_neuron,
    prompt_for,
    write_bmlama_from_shipped,
)

torch.set_num_threads(1)
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def models():
    return get_model


@pytest.fixture(scope="session")
def planted():
    return get_planted


@pytest.fixture
def bmlama_dir(tmp_path):
    """A BMLAMA-format folder (en.tsv, zh.tsv; row i of each is the same fact) written from the
    shipped facts: the BMLAMA tests run on it without the real data set."""
    return write_bmlama_from_shipped(tmp_path / "bmlama", langs=("en", "zh"), n=None)
