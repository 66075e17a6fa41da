"""Model names and kinds: the embedded default and its aliases, the label its results carry,
and which configs are masked LMs."""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "gemma-3-270m"

#: Names (compared case-insensitively, ignoring surrounding blanks) that mean the embedded model.
EMBEDDED_ALIASES = frozenset(
    {
        "gemma-3-270m",
        "gemma3-270m",
        "gemma_3_270m",
        "gemma3_270m",
        "gemma-3-270m-q4_k_m",
        "gemma3-270m-q4_k_m",
        "default",
        "embedded",
    }
)

#: How results of the embedded model are labelled in tables and plot titles.
EMBEDDED_LABEL = "Gemma-3-270M (Q4_K_M-dequantized weights)"


def model_label(name: str | None) -> str:
    """A model name for titles: the embedded model says that its weights are the
    Q4_K_M-dequantized ones (not the original bf16 checkpoint); other names are kept."""
    if name is None or str(name).strip().lower() in EMBEDDED_ALIASES or "embedded default" in str(name):
        return EMBEDDED_LABEL
    return str(name)


#: ``config.model_type`` values of encoder-only models loaded with ``AutoModelForMaskedLM``
#: (used when ``config.architectures`` does not settle the choice).
MASKED_LM_MODEL_TYPES = frozenset(
    {
        "albert",
        "bert",
        "big_bird",
        "camembert",
        "convbert",
        "data2vec-text",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "esm",
        "flaubert",
        "funnel",
        "ibert",
        "megatron-bert",
        "mobilebert",
        "modernbert",
        "mpnet",
        "mra",
        "nezha",
        "nystromformer",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roc_bert",
        "roformer",
        "squeezebert",
        "xlm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
        "yoso",
    }
)

GEMMA_INSTALL_HINT = "pip install 'amig-plugin[gemma]'"


def is_embedded_name(name: str) -> bool:
    """True if ``name`` refers to the embedded default model."""
    return isinstance(name, str) and name.strip().lower() in EMBEDDED_ALIASES


def is_masked_lm_config(config: Any) -> bool:
    """True for BERT-like (masked LM) configs, False for causal LMs.

    ``config.architectures`` decides when it names a masked or causal LM head; otherwise a
    decoder flag means causal, and ``config.model_type`` in :data:`MASKED_LM_MODEL_TYPES`
    means masked.
    """
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForMaskedLM") for a in archs):
        return True
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return False
    if getattr(config, "is_decoder", False):
        return False
    return getattr(config, "model_type", None) in MASKED_LM_MODEL_TYPES
