"""Tiny models built in code for tests, benchmarks and quick experiments (no download).

Modules:

* :mod:`~amig_plugin.testing.tokenizers` -- offline tokenizers: a word-level one over a small
  vocabulary (optionally with the shipped facts' words), its ``<bos>`` and character-dropping
  variants, and a byte-level BPE trained in code;
* :mod:`~amig_plugin.testing.tiny` -- tiny random GPT-2 / BERT / Llama / Qwen2 / Gemma-3 models
  of the real transformers classes (``tiny``, ``tiny_sharp``; ``save_tiny`` saves one to a folder);
* :mod:`~amig_plugin.testing.planted` -- the families and prompts the tests use, a per-process
  model cache (``get_model``) and a model with a planted knowledge neuron (``plant_neuron``);
* :mod:`~amig_plugin.testing.bmlama` -- BMLAMA-format files: given rows or the shipped facts;
* :mod:`~amig_plugin.testing.facts` -- a few capital facts the tiny word tokenizer can read.
"""

from amig_plugin.testing.bmlama import BMLAMA_HEADER, write_bmlama_from_shipped, write_tsv
from amig_plugin.testing.facts import CAPITALS, tiny_facts
from amig_plugin.testing.planted import (
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
)
from amig_plugin.testing.tiny import (
    BUILDERS,
    save_tiny,
    sharpen,
    tiny,
    tiny_bert,
    tiny_gemma3,
    tiny_gpt2,
    tiny_llama,
    tiny_qwen2,
    tiny_sharp,
    same_weights,
    weights_copy,
)
from amig_plugin.testing.tokenizers import (
    BPE_SENTENCES,
    SPECIALS,
    WORDS,
    bos_word_tokenizer,
    bpe_tokenizer,
    dropping_word_tokenizer,
    fact_words,
    word_tokenizer,
)

__all__ = [
    "BMLAMA_HEADER", "CAPITALS", "same_weights", "save_tiny", "tiny_facts", "weights_copy", "write_tsv",
    "BERT_PROMPT", "BPE_SENTENCES", "BUILDERS", "CAUSAL_PROMPT", "FAMILIES", "PLANT_INDEX", "PLANT_LAYER",
    "Planted", "SPECIALS", "WORDS", "amig_hooks", "bos_word_tokenizer", "bpe_tokenizer", "dropping_word_tokenizer",
    "fact_words", "ffn_inputs", "get_model", "get_planted", "input_projections", "plain_log_prob", "plant_neuron",
    "prompt_for", "sharpen", "tiny", "tiny_bert", "tiny_gemma3", "tiny_gpt2", "tiny_llama", "tiny_qwen2",
    "tiny_sharp", "word_tokenizer", "write_bmlama_from_shipped",
]
