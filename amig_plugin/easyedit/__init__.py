"""EasyEdit integration of amig_plugin.

This subpackage is the only place in amig_plugin that imports ``easyeditor``
(EasyEdit, PyPI ``easyeditor``), and it does so only through
:func:`amig_plugin.easyedit.compat.import_easyeditor`, which makes
``easyeditor==0.0.1.dev0`` importable with modern torch/transformers (placeholders for
missing optional packages, shims for names transformers removed, import side effects
undone).  Nothing below this subpackage (models, attribution, neurons, ...) imports it.

``import amig_plugin.easyedit`` imports neither easyeditor nor torch: the names below
are loaded lazily on first access.

Modules (imports run one way: ``methods`` <- ``registration`` <- ``editor`` <- ``compare``,
with ``compat`` below ``registration`` and ``editor``; ``methods`` import neither):

* ``compat/``: makes ``easyeditor`` importable and runnable here (importer, runtime, registries);
* ``methods/``: our EasyEdit methods, one subpackage each (``amig/``, ``likn/``:
  ``hparams.py``, ``main.py``), and ``METHODS``, the one table of what is registered;
* ``registration``: ``register()``/``unregister()``, a loop over ``METHODS`` plus the
  ``fact_check`` metric and the ``BaseEditor`` hook (``editor_hook``: CPU fallback, a clear
  error for model names EasyEdit cannot load);
* ``editor``: ``AMIGEditor``/``load_editor``, EasyEdit's editor for any model our loader loads;
* ``masked_lm``, ``evaluate``, ``prompts``, ``shims``: cloze metrics for masked LMs, summaries
  and CJK-aware scoring, prompt shaping, MEMIT's transformers-5 shim;
* ``factcheck_metric``: the DKN fact-checker as an EasyEdit metric;
* ``compare``, ``stats``: ``amig compare`` (methods head to head) and ROME/MEMIT statistics;
* ``hparams``: the former path of ``AMIGHyperParams`` (re-export).

Quick reference (EasyEdit integration)::

    import amig_plugin
    amig_plugin.register()                      # AMIG + LIKN in ALG_DICT, fact_check metric, CPU fallback
    from amig_plugin.easyedit import AMIGHyperParams, load_editor, summarize
    hparams = AMIGHyperParams.from_hparams("hparams/AMIG/gemma-3-270m.yaml")
    editor = load_editor(hparams)               # or easyeditor.BaseEditor.from_hparams(hparams)
    metrics, model, weights = editor.edit(prompts=..., ground_truth=..., target_new=...)
    print(summarize(metrics))
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MissingOptionalDependency": "compat",
    "alg_dict": "compat",
    "cpu_fallback": "compat",
    "cuda_to_cpu": "compat",
    "easyedit_flavour": "compat",
    "easyedit_runtime": "compat",
    "easyeditor_available": "compat",
    "import_easyeditor": "compat",
    "placeholder_modules": "compat",
    "quiet_easyeditor_logging": "compat",
    "registries": "compat",
    "removed_placeholders": "compat",
    # the table of our methods (no easyeditor or torch import)
    "METHODS": "methods",
    "MethodSpec": "methods",
    # hyper-parameters (no easyeditor or torch import)
    "AMIGHyperParams": "methods.amig.hparams",
    "HParamsError": "methods.validation",
    "LIKNHyperParams": "methods.likn.hparams",
    # the apply functions and sequential-edit helpers (torch, no easyeditor import)
    "apply_amig_to_model": "methods.amig.main",
    "WeightsCopy": "methods.amig.main",
    "end_sequence": "methods.amig.main",
    "reapply_sequence": "methods.amig.main",
    "sequence_state": "methods.amig.main",
    "apply_likn_to_model": "methods.likn.main",
    "edit_cross_lingual": "methods.likn.evaluate",
    "summarize_cross_lingual": "methods.likn.evaluate",
    # registration in EasyEdit's ALG_DICT (imports easyeditor)
    "register": "registration",
    "unregister": "registration",
    "is_registered": "registration",
    "UnsupportedEditorModel": "editor_hook",
    # editor for any model our loader loads, masked-LM metrics
    "editor_class": "editor",
    "load_editor": "editor",
    "load_likn_editor": "editor",
    "independent_edit_kwargs": "editor",
    "compute_masked_lm_edit_quality": "masked_lm",
    "summarize": "evaluate",
}

__all__ = sorted(set(_LAZY) | {"AMIGEditor"})


def __getattr__(name: str) -> Any:
    if name == "AMIGEditor":  # a BaseEditor subclass: built on first access
        value = importlib.import_module(f"{__name__}.editor").editor_class()
        globals()[name] = value
        return value
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | {"AMIGEditor"})
