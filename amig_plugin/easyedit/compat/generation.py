"""EasyEdit's ``generate_fast`` on transformers that renamed ``past_key_values`` to ``cache``.

``easyeditor/util/generate.py:generate_fast`` (PyPI 0.0.1.dev0 and GitHub main; ROME, MEMIT
and their relatives call it after every edit, and the evaluation for fluency) runs
``model(input_ids=..., attention_mask=..., past_key_values=cache, use_cache=True)`` and reads
``model_out.past_key_values``. transformers 5.2x warns on that keyword at every generated
token and removes it in 5.40. Within :func:`cache_keyword_generation`, every easyeditor
module's ``generate_fast`` receives the model wrapped in :class:`CacheKeywordModel`, which
passes the cache under the keyword the model's forward takes and hands the returned cache back
as ``past_key_values``. On transformers that still take ``past_key_values`` the model is passed
unwrapped: nothing changes there.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Any, Callable, Iterator, Optional, Sequence

from torch import nn

from ...models.kv_cache import cache_keyword, returned_cache
from .importer import _easyeditor_modules
from .placeholders import _PACKAGE, _in_package

__all__ = ["CacheKeywordModel", "cache_keyword_generation"]


class _OutputWithPastKeyValues:
    """A model output whose cache is also readable as ``past_key_values``."""

    def __init__(self, output: Any, cache: Any):
        self._output = output
        self.past_key_values = cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._output, name)

    def __getitem__(self, key: Any) -> Any:
        return self._output[key]


class CacheKeywordModel:
    """``model`` with its call taking ``past_key_values=`` on any transformers release: the
    cache goes to the forward as ``cache`` where the forward takes that keyword, and the
    output's cache is readable as ``past_key_values``. Every other attribute is the model's.
    ``keyword``: the forward's cache keyword when the caller has read it already."""

    def __init__(self, model: nn.Module, keyword: Optional[str] = None):
        self._model = model
        self._keyword = keyword or cache_keyword(model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "past_key_values" not in kwargs or self._keyword == "past_key_values":
            return self._model(*args, **kwargs)
        kwargs[self._keyword] = kwargs.pop("past_key_values")
        output = self._model(*args, **kwargs)
        return _OutputWithPastKeyValues(output, returned_cache(output))


def _shimmed(generate_fast: Callable) -> Callable:
    @functools.wraps(generate_fast)
    def run(model: Any, *args: Any, **kwargs: Any) -> Any:
        keyword = cache_keyword(model) if isinstance(model, nn.Module) else "past_key_values"
        if keyword != "past_key_values":
            model = CacheKeywordModel(model, keyword)
        return generate_fast(model, *args, **kwargs)

    run.__amig_cache_shim__ = generate_fast  # type: ignore[attr-defined]
    return run


@contextlib.contextmanager
def cache_keyword_generation(modules: Optional[Sequence[tuple[str, types.ModuleType]]] = None) -> Iterator[int]:
    """Within the block, every easyeditor module's ``generate_fast`` (the function defined in
    easyeditor, wherever it was imported to) passes its model through
    :class:`CacheKeywordModel`. ``modules``: ``(name, module)`` pairs to patch (default: every
    imported easyeditor module). Yields how many module globals were patched; restores them
    on exit. Process-wide, like the other runtime patches."""
    patched: list = []
    try:
        for _name, module in (_easyeditor_modules() if modules is None else modules):
            function = vars(module).get("generate_fast")
            if (isinstance(function, types.FunctionType)
                    and _in_package(getattr(function, "__module__", "") or "", _PACKAGE)
                    and not hasattr(function, "__amig_cache_shim__")):
                patched.append((module, function))
                setattr(module, "generate_fast", _shimmed(function))
        yield len(patched)
    finally:
        for module, function in reversed(patched):
            setattr(module, "generate_fast", function)
