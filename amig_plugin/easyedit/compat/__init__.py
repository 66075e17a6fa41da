"""Compatibility layer: run EasyEdit (``easyeditor``, PyPI 0.0.1.dev0 or GitHub main) with
modern torch/transformers. The only code that imports ``easyeditor``; everything else in
:mod:`amig_plugin.easyedit` goes through :func:`import_easyeditor`. How it works, step by
step: "How the compatibility layer works" in ``docs/easyedit.md``.

Modules:

* :mod:`.placeholders`: stand-in modules for missing optional packages
  (:class:`MissingOptionalDependency` when one is used);
* :mod:`.importer`: :func:`import_easyeditor` (placeholders, transformers shims, import side
  effects undone), :func:`easyeditor_available`, :func:`placeholder_modules`,
  :func:`removed_placeholders`;
* :mod:`.runtime`: :func:`easyedit_flavour`, :func:`cuda_to_cpu`, :func:`cpu_fallback`,
  :func:`quiet_easyeditor_logging`, :func:`easyedit_runtime`;
* :mod:`.generation`: :func:`cache_keyword_generation` (EasyEdit's ``generate_fast`` on
  transformers that renamed ``past_key_values`` to ``cache``), :class:`CacheKeywordModel`;
* :mod:`.registries`: :func:`alg_dict` (the live ``ALG_DICT``) and :func:`registries`.
"""

from .importer import (  # noqa: F401  (private names: used by the tests)
    _find_pruneable_heads_and_indices,
    _guarded_import,
    _transformers_shims,
    easyeditor_available,
    import_easyeditor,
    placeholder_modules,
    removed_placeholders,
)
from .generation import CacheKeywordModel, cache_keyword_generation
from .placeholders import ESSENTIAL, PIP_NAMES, MissingOptionalDependency, _PlaceholderModule  # noqa: F401
from .registries import alg_dict, registries
from .runtime import (  # noqa: F401
    FLAVOUR_MAIN,
    FLAVOUR_PYPI,
    _redirected_function,
    cpu_fallback,
    cuda_to_cpu,
    easyedit_flavour,
    easyedit_runtime,
    quiet_easyeditor_logging,
)

__all__ = [
    "CacheKeywordModel",
    "MissingOptionalDependency",
    "cache_keyword_generation",
    "PIP_NAMES",
    "alg_dict",
    "cpu_fallback",
    "cuda_to_cpu",
    "easyedit_flavour",
    "easyedit_runtime",
    "easyeditor_available",
    "import_easyeditor",
    "placeholder_modules",
    "quiet_easyeditor_logging",
    "registries",
    "removed_placeholders",
]
