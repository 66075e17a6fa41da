"""Model families: where the knowledge neurons are, which position is attributed, how a
target is encoded and scored.

A *knowledge neuron* is one unit of an FFN's hidden vector at one position: the vector that
the FFN's output projection consumes.

==================  ==========================================  ==========================
family              neuron vector = input of                    attributed position
==================  ==========================================  ==========================
BERT / m-BERT       ``bert.encoder.layer[l].output.dense``       the (first) ``[MASK]``
GPT-2 / mGPT        ``transformer.h[l].mlp.c_proj``              last prompt token
gated-MLP decoders  ``model.layers[l].mlp.down_proj``            last prompt token
(Llama, Qwen2/3, Gemma/2/3, Mistral)  i.e. ``act(gate(h)) * up(h)``
==================  ==========================================  ==========================

Families are found from the loaded model's class (``isinstance``), never from name
substrings. An unsupported class raises :class:`UnsupportedModelError` naming it and the
supported ones.

Modules (imports run downwards only: ``detect`` -> ``families`` -> ``base`` -> ``queries``;
``hooks`` -> ``base``):

* ``queries``   :class:`EncodedQuery`, the prompt/target rules, :class:`QueryError`.
* ``base``      :class:`ModelFamily` (the adapter interface), :class:`FFNJoin`, ``Neuron``.
* ``families``  the adapters per architecture: BERT, GPT-2, gated-MLP decoders.
* ``detect``    :func:`get_family` (family detection), :class:`UnsupportedModelError`.
* ``hooks``     :class:`NeuronHooks`: read or replace neuron vectors during a forward.
* ``kv_cache``  :func:`cache_keyword`, :func:`returned_cache`: ``cache`` vs ``past_key_values``.
* ``logits``    logits at chosen positions only (one sequence or a right-padded batch).
* ``generation`` :func:`greedy_continuation`: the model's own answer to a prompt.
"""

from ..scoring import LMHead
from .base import FFNJoin, ModelFamily, Neuron, NeuronSite
from .detect import UnsupportedModelError, get_family, supported_architectures
from .families import CausalLMFamily, GatedMLPFamily, GPT2Family, MaskedLMFamily
from .hooks import NeuronHooks, _NeuronPatch
from .queries import EncodedQuery, PromptTooLongError, QueryError, _tokenize_target, causal_prefix_and_target

__all__ = [
    "CausalLMFamily", "EncodedQuery", "FFNJoin", "GPT2Family", "GatedMLPFamily", "LMHead", "MaskedLMFamily",
    "ModelFamily", "Neuron", "NeuronHooks", "NeuronSite", "PromptTooLongError", "QueryError",
    "UnsupportedModelError", "causal_prefix_and_target", "get_family", "supported_architectures",
    "_NeuronPatch", "_tokenize_target",
]
