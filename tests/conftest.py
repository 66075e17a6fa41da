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

# re-exported for the tests that import them from conftest
from amig_plugin.testing import FAMILIES, amig_hooks, get_model, get_planted, write_bmlama_from_shipped  # noqa: F401

torch.set_num_threads(1)
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def models():
    return get_model


@pytest.fixture(scope="session")
def planted():
    return get_planted


@pytest.fixture
def fresh_prompt_warnings():
    """Forget which prompts already warned about dropped text (they warn once per process)."""
    from amig_plugin import data

    data._warned.clear()
    yield
    data._warned.clear()


@pytest.fixture
def bmlama_dir(tmp_path):
    """A BMLAMA-format folder (en.tsv, zh.tsv; row i of each is the same fact) written from the
    shipped facts: the BMLAMA tests run on it without the real data set."""
    return write_bmlama_from_shipped(tmp_path / "bmlama", langs=("en", "zh"), n=None)


# ----------------------------------------------------------------------------------------
# one cached tiny model per family, for tests that only read it


@pytest.fixture(scope="module")
def gpt2():
    return get_model("gpt2")


@pytest.fixture(scope="module")
def bert():
    return get_model("bert")
