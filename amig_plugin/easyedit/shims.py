"""Scoped fixes for EasyEdit (PyPI 0.0.1.dev0) code that assumes transformers 4.x.

* :func:`memit_post_norm_targets`: MEMIT on decoders with a norm after the FFN (Gemma 2/3),
  selected by ``post_norm_targets: true`` in a MEMIT YAML (our adaptation; see the function).
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

__all__ = ["memit_tuple_block_outputs", "memit_post_norm_targets", "down_proj_targets"]


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


# ----------------------------------------------------------------------------------------
# MEMIT through a post-FFN norm


def _post_norm(model: Any, layer_module: str) -> Any:
    module = dict(model.named_modules()).get(layer_module)
    norm = getattr(module, "post_feedforward_layernorm", None)
    if norm is None:
        raise ValueError(f"{layer_module} has no post_feedforward_layernorm: MEMIT's post-norm targets are for "
                         f"decoders that normalize the FFN output before the residual sum (Gemma 2/3); "
                         f"drop post_norm_targets from the MEMIT YAML")
    return norm


def down_proj_targets(norm: Any, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Δm`` per row such that ``norm(m + Δm) - norm(m) ≈ t`` to first order: the least-squares,
    minimum-norm solution ``Δm = J⁺ t`` with ``J = ∂norm/∂m`` at ``m`` (``outputs``, ``targets``:
    ``[n, d]``; float64 inside)."""
    import copy

    ref = copy.deepcopy(norm).double()
    rows = []
    for m, t in zip(outputs.detach().double().cpu(), targets.detach().double().cpu()):
        jac = torch.autograd.functional.jacobian(lambda x: ref(x[None])[0], m.to(next(ref.parameters()).device))
        rows.append(torch.linalg.pinv(jac.cpu(), rtol=1e-8) @ t)
    return torch.stack(rows).to(targets.dtype)


@contextlib.contextmanager
def memit_post_norm_targets(model: Any, hparams: Any) -> Iterator[None]:
    """MEMIT writes into ``down_proj`` the residual-stream change ``z - h`` it wants, assuming
    the FFN output is added to the residual as is. Gemma-3 normalizes it first
    (``h += post_feedforward_layernorm(down_proj(...))``, a gain of ~200 on Gemma-3-270M), so
    the written change lands ~200x too small and the edit fails. Inside this context, the
    residual targets MEMIT computes for each layer are mapped through the inverse of that
    layer's norm Jacobian at the current FFN output (:func:`down_proj_targets`) before MEMIT
    solves for the weight update; everything else is EasyEdit's MEMIT (``compute_z``,
    covariance, spreading over layers, the closed-form update). Our adaptation, labelled as such."""
    main = importlib.import_module("easyeditor.models.memit.memit_main")
    originals = {name: getattr(main, name) for name in ("compute_z", "compute_ks", "get_module_input_output_at_words")}
    state: dict = {"zs": [], "layer": None}

    def compute_z(*args, **kwargs):
        z = originals["compute_z"](*args, **kwargs)
        state["zs"].append(z.detach())
        return z

    def compute_ks(model_, tok, requests, hparams_, layer, *args, **kwargs):
        state["layer"] = layer
        return originals["compute_ks"](model_, tok, requests, hparams_, layer, *args, **kwargs)

    def module_io(model_, tok, layer, context_templates, words, module_template, fact_token_strategy, *args, **kwargs):
        out = originals["get_module_input_output_at_words"](model_, tok, layer, context_templates, words, module_template,
                                                            fact_token_strategy, *args, **kwargs)
        if (module_template != hparams.layer_module_tmp or state["layer"] is None
                or not isinstance(out, torch.Tensor) or len(state["zs"]) < out.shape[0]):
            return out
        zs = torch.stack(state["zs"][-out.shape[0]:]).to(out.device, out.dtype)  # [n, d]
        ffn_out = originals["get_module_input_output_at_words"](
            model_, tok, state["layer"], context_templates, words, hparams.rewrite_module_tmp, fact_token_strategy,
            *args, **kwargs)
        norm = _post_norm(model_, hparams.layer_module_tmp.format(state["layer"]))
        delta = down_proj_targets(norm, ffn_out, zs - out)
        return zs - delta  # MEMIT's targets = zs - this = the down_proj change

    for name, fn in (("compute_z", compute_z), ("compute_ks", compute_ks),
                     ("get_module_input_output_at_words", module_io)):
        setattr(main, name, fn)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(main, name, fn)
