"""Scoped fixes for EasyEdit (PyPI 0.0.1.dev0) code that assumes transformers 4.x.

* :func:`memit_post_norm_targets`: MEMIT on decoders with a norm after the FFN (Gemma 2/3),
  selected by ``post_norm_targets: true`` in a MEMIT YAML (our adaptation; see the function),
  with ``z_space: down_proj`` to optimize MEMIT's z in the FFN-output space.
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
import copy
import importlib
import types
from typing import Any, Iterator

import torch

__all__ = ["memit_tuple_block_outputs", "memit_post_norm_targets", "check_memit_adaptation", "down_proj_targets",
           "rms_norm_preimage", "residual_of_ffn_output"]


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
    ref = copy.deepcopy(norm).double()
    rows = []
    for m, t in zip(outputs.detach().double().cpu(), targets.detach().double().cpu()):
        jac = torch.autograd.functional.jacobian(lambda x: ref(x[None])[0], m.to(next(ref.parameters()).device))
        rows.append(torch.linalg.pinv(jac.cpu(), rtol=1e-8) @ t)
    return torch.stack(rows).to(targets.dtype)


class _ZLayerTemplate(str):
    """A ``layer_module_tmp`` that names the FFN output (``mlp_module_tmp``) at the z layer and the
    block elsewhere: EasyEdit's ``compute_z`` adds its delta to ``layer_module_tmp.format(layer)``
    and reads its loss at ``layer_module_tmp.format(loss_layer)``, so with this template the delta
    lives in the FFN-output space (as ROME's) while the loss is read where MEMIT reads it."""

    def __new__(cls, block: str, mlp: str, z_layer: int):
        obj = super().__new__(cls, block)
        obj.mlp, obj.z_layer = mlp, z_layer
        return obj

    def format(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        layer = args[0] if args else None
        return self.mlp.format(layer) if layer == self.z_layer else str.format(self, *args, **kwargs)


#: Where MEMIT's target vector z is optimized: ``residual`` (EasyEdit: a delta added to the
#: block output) or ``down_proj`` (our adaptation: a delta added to the FFN output, as ROME does).
Z_SPACES = ("residual", "down_proj")


def rms_norm_preimage(norm: Any, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Δm`` per row with ``norm(m + Δm) = norm(m) + t`` for an RMSNorm with gain ``g``
    (``norm(x) = g ⊙ x / sqrt(mean(x²) + eps)``), not only to first order: ``norm`` is
    scale-invariant, so ``m + Δm = c·u`` with ``u = (norm(m) + t) / g``, exact where ``rms(u) = 1``
    (the reachable targets; others land on their radial projection), and ``c = ⟨u, m⟩ / ⟨u, u⟩``
    the least change along that ray. Coordinates whose gain is under 1e-6 of the largest keep
    ``m``'s direction. ``outputs``, ``targets``: ``[n, d]``; float64 inside."""
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    device = next(norm.parameters()).device
    m = outputs.detach().to(device, torch.float64)
    t = targets.detach().to(device, torch.float64)
    with torch.no_grad():
        ref = copy.deepcopy(norm).double()
        ones = torch.ones(1, m.shape[-1], dtype=torch.float64, device=device)
        gain = ref(ones)[0] * (1 + eps) ** 0.5
        rms = (m.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        current = ref(m)
        if not torch.allclose(current, gain * m / rms, rtol=1e-6, atol=1e-9 * float(current.abs().max())):
            raise ValueError(f"{type(norm).__name__} is not an RMSNorm with an elementwise gain; "
                             f"use z_space: residual for this model")
        live = gain.abs() > 1e-6 * gain.abs().max()
        u = torch.where(live, (current + t) / torch.where(live, gain, 1.0), m / rms)
        c = (u * m).sum(-1, keepdim=True) / u.pow(2).sum(-1, keepdim=True)
        c = torch.where(c > 0, c, rms / u.pow(2).mean(-1, keepdim=True).sqrt())
        return (c * u - m).to(targets.dtype).to(targets.device)


def residual_of_ffn_output(norm: Any, block_output: torch.Tensor, ffn_output: torch.Tensor,
                           new_ffn_output: torch.Tensor) -> torch.Tensor:
    """The block output at one position when its FFN output ``m`` becomes ``m'``, in a block that
    adds ``norm(m)`` to the residual: ``h + norm(m') - norm(m)`` (exact; all ``[d]``)."""
    with torch.no_grad():
        moved = norm(new_ffn_output.to(ffn_output.dtype)[None])[0] - norm(ffn_output[None])[0]
    return (block_output + moved).to(new_ffn_output.dtype)


def check_memit_adaptation(hparams: Any) -> bool:
    """Whether a MEMIT hparams object asks for :func:`memit_post_norm_targets`; a ``z_space`` that
    is unknown, or set without ``post_norm_targets: true``, is refused with the fix."""
    z_space = getattr(hparams, "z_space", "residual")
    if z_space not in Z_SPACES:
        raise ValueError(f"MEMIT z_space: {z_space!r} is not one of {', '.join(Z_SPACES)}; fix the MEMIT YAML")
    adapted = bool(getattr(hparams, "post_norm_targets", False))
    if z_space != "residual" and not adapted:
        raise ValueError(f"MEMIT z_space: {z_space!r} is part of the post-FFN-norm adaptation; add "
                         f"post_norm_targets: true to the MEMIT YAML or drop z_space")
    return adapted


@contextlib.contextmanager
def memit_post_norm_targets(model: Any, hparams: Any) -> Iterator[None]:
    """MEMIT writes into ``down_proj`` the residual-stream change ``z - h`` it wants, assuming
    the FFN output is added to the residual as is. Gemma-3 normalizes it first
    (``h += post_feedforward_layernorm(down_proj(...))``, a gain of ~200 on Gemma-3-270M), so
    the written change lands ~200x too small and the edit fails. Inside this context, the
    residual targets MEMIT computes for each layer are mapped through the inverse of that
    layer's norm Jacobian at the current FFN output (:func:`down_proj_targets`) before MEMIT
    solves for the weight update; everything else is EasyEdit's MEMIT (``compute_z``,
    covariance, spreading over layers, the closed-form update). Our adaptation, labelled as such.

    ``z_space: down_proj`` (also ours): EasyEdit's ``compute_z`` optimizes a delta added to the
    block output, whose norm on Gemma-3 is dominated by a few outlier dimensions (~1e3-1e5), so
    its clamp (``clamp_norm_factor`` x that norm) bounds nothing and z lands where no FFN can
    reach (the post-norm output of one FFN has a fixed rms). With ``down_proj`` the delta is
    added to the z layer's FFN output instead (clamped against that output's norm, as ROME), and
    z = h + norm(m + delta) - norm(m): the residual that this FFN output would give, exactly
    (``h``, ``m``: the block and FFN outputs at the subject's last token of the plain prompt)."""
    check_memit_adaptation(hparams)
    z_space = getattr(hparams, "z_space", "residual")
    main = importlib.import_module("easyeditor.models.memit.memit_main")
    originals = {name: getattr(main, name) for name in ("compute_z", "compute_ks", "get_module_input_output_at_words")}
    state: dict = {"zs": [], "layer": None}

    def at_subject(model_, tok, request, layer, template):
        out = originals["get_module_input_output_at_words"](model_, tok, layer, [request["prompt"]],
                                                            [request["subject"]], template, hparams.fact_token)
        return (out[1] if isinstance(out, tuple) else out)[0]

    def compute_z(model_, tok, request, hparams_, layer, *args, **kwargs):
        if z_space == "residual":
            z = originals["compute_z"](model_, tok, request, hparams_, layer, *args, **kwargs)
        else:
            proxy = copy.copy(hparams_)
            proxy.layer_module_tmp = _ZLayerTemplate(hparams_.layer_module_tmp, hparams_.mlp_module_tmp, layer)
            m_new = originals["compute_z"](model_, tok, request, proxy, layer, *args, **kwargs).detach()
            m = at_subject(model_, tok, request, layer, hparams_.mlp_module_tmp)
            h = at_subject(model_, tok, request, layer, hparams_.layer_module_tmp)
            norm = _post_norm(model_, hparams_.layer_module_tmp.format(layer))
            z = residual_of_ffn_output(norm, h, m, m_new)
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
        if z_space == "down_proj" and state["layer"] == layer:  # the z layer: z is reachable there, exactly
            delta = rms_norm_preimage(norm, ffn_out, zs - out)
        else:
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
