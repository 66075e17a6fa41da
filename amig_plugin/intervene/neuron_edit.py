"""Optimized knowledge-neuron edit (this package's extension, not a published rule).

Dai et al. (2022) edit a fact by adding ``λ·e(new) − e(old)`` (input word embeddings) to the
value vectors of its knowledge neurons (:func:`amig_plugin.intervene.edit_value_vectors`).
This module keeps the same *where* (only the value vectors of the localized neurons: row i
of the FFN output projection's ``[ffn, hidden]`` view, which is ``c_proj.weight[i, :]`` of a
GPT-2 ``Conv1D`` and ``down_proj.weight[:, i]`` of a ``Linear``) and replaces the *how* by an
optimization:

    min_Δ   NLL(target_new | prompts; V + Δ)  +  β · KL(p_V(· | u) ‖ p_{V+Δ}(· | u))
    s.t.    ‖Δ_i‖₂ ≤ ρ · mean_j ‖v_j‖₂   for every edited neuron i (its layer's mean norm)

NLL: teacher-forced, summed over the target's tokens, averaged over the prompts; KL: over
the next-token distributions at the scored positions of unrelated prompts u (locality).
Adam on Δ, projected onto the norm ball after every step; stops early once the mean NLL per
target token is below ``stop_nll`` and the mean KL below ``stop_kl``. The weights are written once at the end, through a
:class:`~amig_plugin.intervene.WeightBackup` whose ``restore()`` is bit-exact. While
optimizing, Δ is added by a forward hook (out += a[..., idx] @ Δ), so no weight is touched
before the final write and an exception leaves the model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import torch
from torch import nn

from ..attribution import frozen_eval
from ..errors import UsageError
from ..neurons import Neuron
from .activations import _multipliers
from .value_vectors import WeightBackup, _param_name
from ..models import ModelFamily, get_family
from ..models.logits import batched_logits_at

#: A locality item: a prompt alone (causal LMs: the next-token distribution after it) or
#: (prompt, answer): the distributions at the answer's teacher-forced positions.
LocalityItem = Union[str, tuple[str, str]]


@dataclass
class NeuronEditResult:
    """What :func:`optimize_value_vectors` did: the backup to undo it, and the trace."""

    backup: WeightBackup
    neurons: list[Neuron]
    steps: int
    nll: list[float] = field(default_factory=list)   # mean NLL per target token, per step
    kl: list[float] = field(default_factory=list)    # mean KL per locality site, per step
    delta_norms: dict[str, float] = field(default_factory=dict)  # "layer:index" -> ‖Δ_i‖

    def restore(self) -> None:
        """Put the original weights back, bit for bit."""
        self.backup.restore()


def _group(neurons: Sequence[Neuron]) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for layer, index in dict.fromkeys((int(l), int(i)) for l, i in neurons):
        by_layer.setdefault(layer, []).append(index)
    return by_layer


def _sites(family: ModelFamily, tokenizer, item: LocalityItem) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [n], positions [k]) whose next-token distributions the KL term keeps."""
    if isinstance(item, str):
        if family.kind == "masked":
            raise UsageError("a masked LM's locality item needs its answer: give (prompt, answer)")
        ids = torch.tensor(tokenizer(item)["input_ids"], dtype=torch.long)
        return ids, torch.tensor([len(ids) - 1])
    prompt, answer = item
    q = family.encode(tokenizer, prompt, answer)
    return q.input_ids, q.score_positions


def optimize_value_vectors(model, tokenizer, neurons: Sequence[Neuron], prompts: str | Sequence[str],
                           target_new: str, *, locality: Sequence[LocalityItem] = (), steps: int = 40,
                           lr: float = 0.1, kl_weight: float = 1.0, norm_bound: float = 4.0,
                           stop_nll: float = 0.05, stop_kl: float = 0.02,
                           backup: WeightBackup | None = None) -> NeuronEditResult:
    """Install ``target_new`` after ``prompts`` by changing only the value vectors of ``neurons``.

    ``lr``: Adam's step in units of the layer's RMS value-vector entry (Δ = s_l · z, z
    optimized), so one setting fits models of any scale. ``norm_bound`` ρ: ‖Δ_i‖ ≤ ρ·mean‖v_j‖.
    ``kl_weight`` β, ``locality``: see the module docstring. Returns a
    :class:`NeuronEditResult`; ``result.restore()`` undoes the edit bit for bit (pass an
    existing ``backup`` to accumulate several edits and restore them together).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise UsageError("give at least one prompt to edit")
    if not neurons:
        raise UsageError("no neurons to edit: the localization found none; lower tau or use top-k neurons")
    if steps < 1 or lr <= 0 or norm_bound <= 0 or kl_weight < 0:
        raise UsageError(f"need steps >= 1, lr > 0, norm_bound > 0, kl_weight >= 0; got "
                         f"steps={steps}, lr={lr}, norm_bound={norm_bound}, kl_weight={kl_weight}")
    family = get_family(model)
    _multipliers(family, neurons, 1.0)  # validates layers and indices
    by_layer = _group(neurons)
    queries = [family.encode(tokenizer, p, target_new) for p in prompts]
    n_target = sum(len(q.target_ids) for q in queries)
    result = NeuronEditResult(backup=backup or WeightBackup(family.model),
                              neurons=[(l, i) for l, idx in by_layer.items() for i in idx], steps=0)
    with frozen_eval(family.model):
        sites = [_sites(family, tokenizer, item) for item in locality]
        seqs = [(q.input_ids, q.score_positions) for q in queries] + list(sites)
        with torch.no_grad():
            ref = [torch.log_softmax(lg, -1) for lg in batched_logits_at(family.model, sites)] if sites else []
        scale, bound, z = {}, {}, {}
        for layer, idx in by_layer.items():
            values = family.value_vectors(layer).detach().float()
            scale[layer] = float(values.pow(2).mean().sqrt()) or 1.0
            bound[layer] = norm_bound * float(values.norm(dim=1).mean())
            z[layer] = torch.zeros(len(idx), values.shape[1], requires_grad=True, device=values.device)
        opt = torch.optim.Adam(list(z.values()), lr=lr)

        def hook(layer: int):
            idx = torch.tensor(by_layer[layer])

            def add_delta(module, args, out):
                act = args[0][..., idx.to(out.device)]
                return out + (act.float() @ (scale[layer] * z[layer])).to(out.dtype)
            return add_delta

        handles = [family.output_projection(l).register_forward_hook(hook(l)) for l in by_layer]
        try:
            for step in range(steps):
                with torch.enable_grad():
                    logits = batched_logits_at(family.model, seqs)
                    nll = sum(-torch.log_softmax(lg, -1).gather(1, q.target_ids.view(-1, 1).to(lg.device)).sum()
                              for q, lg in zip(queries, logits)) / n_target
                    kl = torch.zeros(())
                    if sites:
                        kl = sum(torch.nn.functional.kl_div(torch.log_softmax(lg, -1), r, log_target=True,
                                                            reduction="sum")
                                 for lg, r in zip(logits[len(queries):], ref)) / sum(len(p) for _, p in sites)
                    result.nll.append(float(nll.detach()))
                    result.kl.append(float(kl.detach()))
                    if result.nll[-1] < stop_nll and (not sites or result.kl[-1] < stop_kl):
                        break
                    opt.zero_grad()
                    (nll + kl_weight * kl).backward()
                opt.step()
                result.steps = step + 1
                with torch.no_grad():  # project: ‖s·z_i‖ ≤ bound
                    for layer, zl in z.items():
                        norms = (scale[layer] * zl).norm(dim=1, keepdim=True)
                        zl.mul_(torch.clamp(bound[layer] / norms.clamp_min(1e-12), max=1.0))
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad():
            for layer, idx in by_layer.items():
                proj = family.output_projection(layer)
                result.backup.save(_param_name(family.model, proj.weight), proj.weight)
                values = family.value_vectors(layer)
                delta = scale[layer] * z[layer].detach()
                for row, index in enumerate(idx):
                    values[index] += delta[row].to(values.device, values.dtype)
                    result.delta_norms[f"{layer}:{index}"] = float(delta[row].norm())
    return result
