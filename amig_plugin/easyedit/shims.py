"""Scoped fixes for EasyEdit (PyPI 0.0.1.dev0) code that assumes transformers 4.x.

* :func:`memit_tuple_block_outputs`: MEMIT's ``compute_z`` edits and reads the output of a
  whole decoder block as ``output[0]`` (transformers 4.x blocks returned tuples); in
  transformers 5.x a block returns the hidden-state tensor, so ``output[0]`` is the first
  batch row and the edit fails (``IndexError``) or silently reads the wrong tensor. While
  the context is active, ``compute_z`` sees a ``nethook`` whose ``TraceDict`` hands tensor
  outputs to its ``edit_output`` function as a 1-tuple and returns retained tensor outputs
  as 1-tuples; tuple outputs (transformers 4.x) pass through unchanged. Nothing else in
  easyeditor is affected, and the patch is undone on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from typing import Any, Iterator

import torch

__all__ = ["memit_tuple_block_outputs"]


class _TupleOutput:
    """A traced layer whose ``output`` is presented as a 1-tuple."""

    def __init__(self, trace: Any):
        self._trace = trace
        self.output = (trace.output,)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trace, name)


def _tuple_nethook(nethook: types.ModuleType) -> types.ModuleType:
    base = nethook.TraceDict
    invoke = nethook.invoke_with_optional_args

    class TraceDict(base):  # type: ignore[misc, valid-type]
        def __init__(self, module, layers=None, retain_output=True, retain_input=False, clone=False,
                     detach=False, retain_grad=False, edit_output=None, stop=False):
            wrapped = None
            if edit_output is not None:
                def wrapped(output, layer):
                    if isinstance(output, torch.Tensor):
                        result = invoke(edit_output, output=(output,), layer=layer)
                        return result[0] if isinstance(result, tuple) else result
                    return invoke(edit_output, output=output, layer=layer)
            super().__init__(module, layers, retain_output, retain_input, clone, detach, retain_grad,
                             wrapped, stop)

        def __getitem__(self, key):
            trace = super().__getitem__(key)
            if isinstance(getattr(trace, "output", None), torch.Tensor):
                return _TupleOutput(trace)
            return trace

    proxy = types.ModuleType(nethook.__name__)
    proxy.__dict__.update({k: v for k, v in vars(nethook).items() if not k.startswith("__")})
    proxy.TraceDict = TraceDict
    return proxy


@contextlib.contextmanager
def memit_tuple_block_outputs() -> Iterator[None]:
    """See the module docstring."""
    compute_z = importlib.import_module("easyeditor.models.memit.compute_z")
    original = compute_z.nethook
    compute_z.nethook = _tuple_nethook(original)
    try:
        yield
    finally:
        compute_z.nethook = original
