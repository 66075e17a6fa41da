"""``LIKN`` as an EasyEdit method: edit the knowledge neurons a fact's languages share.

* :mod:`.hparams`: :class:`LIKNHyperParams` (AMIG's keys plus ``languages``, ``signed``,
  ``empty_likn``, ``cache``);
* :mod:`.main`: :func:`request_languages` and :func:`apply_likn_to_model`;
* :mod:`.evaluate`: :func:`cross_lingual_quality`, :func:`edit_cross_lingual`,
  :func:`summarize_cross_lingual`.

None of them imports torch or ``easyeditor`` at import time.
"""

from .evaluate import cross_lingual_evaluation, cross_lingual_quality, edit_cross_lingual, summarize_cross_lingual
from .hparams import ALG_NAME, LIKN_KEYS, LIKNHyperParams
from .main import apply_likn_to_model, request_languages

__all__ = [
    "ALG_NAME",
    "LIKN_KEYS",
    "LIKNHyperParams",
    "apply_likn_to_model",
    "cross_lingual_evaluation",
    "cross_lingual_quality",
    "edit_cross_lingual",
    "request_languages",
    "summarize_cross_lingual",
]
