"""Registering ``AMIG`` inside EasyEdit.

EasyEdit has no plugin mechanism: ``BaseEditor.__init__`` does
``self.apply_algo = ALG_DICT[hparams.alg_name]`` with the dict defined in
``easyeditor/util/alg_dict.py`` (PyPI 0.0.1.dev0 and GitHub main). :func:`register`
*mutates* that live dict (replacing it would not reach the editor modules, which
star-imported it). The other name-keyed places were checked (see
:func:`amig_plugin.easyedit.compat.registries`) and need nothing:

* ``ALG_MULTIMODAL_DICT`` / ``PER_ALG_DICT`` / ``ALG_TRAIN_DICT``: multimodal,
  personality and trainer methods; AMIG is none of these.
* GitHub main's ``CALLABLE_RESTORE_ALGS`` must *not* contain ``AMIG``: our
  ``weights_copy`` is a ``{name: tensor}`` dict, restored by main's default branch
  (``copy_to_param``); ``PEFT_RESTORE_ALGS``/``KEEP_EDITED_MODEL_ALGS`` likewise.
  :func:`register` checks that ``AMIG`` is in none of them.
* ``BatchEditor``/``SingletonEditor`` are hard-coded enums: ``batch_edit`` refuses AMIG
  (a single-edit method, like KN); ``edit_dataset`` uses ``hparams.batch_size`` (1).

``register()`` is idempotent: calling it again changes nothing. If another function is
already registered as ``AMIG`` it raises unless ``force=True``.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

__all__ = ["ALG_NAME", "register", "unregister", "is_registered"]

ALG_NAME = "AMIG"
_LOCK = threading.Lock()


def _apply():
    from .amig_main import apply_amig_to_model

    return apply_amig_to_model


def is_registered() -> bool:
    """Whether ``ALG_DICT['AMIG']`` is our apply function (imports easyeditor)."""
    from .compat import alg_dict

    return alg_dict().get(ALG_NAME) is _apply()


def register(force: bool = False) -> Dict[str, Any]:
    """Add ``AMIG`` to EasyEdit's live ``ALG_DICT``; idempotent.

    Returns ``{"alg_name": "AMIG", "flavour": ..., "registered_now": bool}``.
    """
    from .compat import alg_dict, easyedit_flavour, registries

    apply_fn = _apply()
    with _LOCK:
        table = alg_dict()
        current = table.get(ALG_NAME)
        if current is not None and current is not apply_fn and not force:
            raise RuntimeError(
                f"EasyEdit's ALG_DICT already maps {ALG_NAME!r} to {getattr(current, '__module__', '?')}."
                f"{getattr(current, '__qualname__', current)!r}; pass force=True to replace it"
            )
        registered_now = current is not apply_fn
        table[ALG_NAME] = apply_fn
        found = registries()
        for name in ("CALLABLE_RESTORE_ALGS", "PEFT_RESTORE_ALGS", "KEEP_EDITED_MODEL_ALGS"):
            algs = found.get(name)
            if algs is not None and ALG_NAME in algs:
                raise RuntimeError(
                    f"EasyEdit's {name} contains {ALG_NAME!r}: its weights_copy would not be restored "
                    "as a {name: tensor} dict; remove it from that set"
                )
    return {"alg_name": ALG_NAME, "flavour": easyedit_flavour(), "registered_now": registered_now}


def unregister() -> bool:
    """Remove ``AMIG`` from ``ALG_DICT`` if it is ours (for tests). Returns whether it was."""
    from .compat import alg_dict

    with _LOCK:
        table = alg_dict()
        if table.get(ALG_NAME) is _apply():
            del table[ALG_NAME]
            return True
    return False
