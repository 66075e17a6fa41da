"""Family detection: the adapter for a loaded model, chosen by ``isinstance`` against
transformers classes (never by name substrings)."""

from __future__ import annotations

from torch import nn

from ..errors import AmigError
from .base import ModelFamily, NeuronSite
from .families import GatedMLPFamily, GPT2Family, MaskedLMFamily


class UnsupportedModelError(AmigError, TypeError):
    """The model's architecture has no knowledge-neuron adapter."""


# (transformers class name, family); looked up lazily so older transformers still work.
_SUPPORTED: list[tuple[str, type[ModelFamily]]] = [
    ("BertForMaskedLM", MaskedLMFamily),
    ("GPT2LMHeadModel", GPT2Family),
    ("LlamaForCausalLM", GatedMLPFamily),
    ("MistralForCausalLM", GatedMLPFamily),
    ("Qwen2ForCausalLM", GatedMLPFamily),
    ("Qwen3ForCausalLM", GatedMLPFamily),
    ("GemmaForCausalLM", GatedMLPFamily),
    ("Gemma2ForCausalLM", GatedMLPFamily),
    ("Gemma3ForCausalLM", GatedMLPFamily),
]


def supported_architectures() -> list[str]:
    return [name for name, _ in _SUPPORTED]


def get_family(model: nn.Module, neuron_site: NeuronSite = "ffn_hidden") -> ModelFamily:
    """The adapter for ``model``, chosen by ``isinstance`` against transformers classes."""
    if isinstance(model, ModelFamily):
        return model
    import transformers

    for class_name, family_cls in _SUPPORTED:
        cls = getattr(transformers, class_name, None)
        if cls is not None and isinstance(model, cls):
            family = family_cls(model, neuron_site=neuron_site)
            if family_cls is GatedMLPFamily:
                mlp = family.blocks()[0].mlp
                if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
                    raise UnsupportedModelError(f"{type(model).__name__}'s MLP has no gate_proj/up_proj/down_proj")
            if neuron_site == "ffn_pre_activation" and family_cls is not GPT2Family:
                raise ValueError("neuron_site='ffn_pre_activation' exists only for GPT-2 (EasyEdit-KN comparison)")
            return family
    raise UnsupportedModelError(
        f"unsupported model class {type(model).__name__}; amig-plugin supports: "
        + ", ".join(supported_architectures())
        + ". Load one of these (e.g. AutoModelForMaskedLM for BERT, AutoModelForCausalLM for decoders)."
    )
