"""Shared pieces of the tests' model fixtures: the families tested, their prompts, a per-process
cache of tiny models, and a tiny model with a planted knowledge neuron (``plant_neuron``).

Cached models are shared between callers: code that changes weights must deep-copy first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from amig_plugin.testing.tiny import tiny, tiny_sharp

FAMILIES = ["gpt2", "bert", "llama", "qwen2", "gemma3"]
CAUSAL_PROMPT = "the capital of france is <mask>"
BERT_PROMPT = "the capital of france is <mask> ."


def prompt_for(kind: str) -> str:
    return BERT_PROMPT if kind == "bert" else CAUSAL_PROMPT


_MODELS: dict = {}


def get_model(kind: str, sharp: bool = True, seed: int = 0):
    """(model, tokenizer), cached; do not modify the returned model in place."""
    key = (kind, sharp, seed)
    if key not in _MODELS:
        _MODELS[key] = tiny_sharp(kind, seed=seed) if sharp else tiny(kind, seed=seed)
    return _MODELS[key]


def amig_hooks(model) -> list[str]:
    """Forward (pre-)hooks installed by amig_plugin still on ``model`` (transformers installs
    output-capturing hooks of its own, lazily and for good: those are ignored)."""
    left = []
    for name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()) + list(module._forward_hooks.values()):
            if getattr(hook, "__module__", "").startswith("amig_plugin"):
                left.append(f"{name}: {getattr(hook, '__qualname__', hook)}")
    return left


# ----------------------------------------------------------------------------------------
# planting a knowledge neuron


def input_projections(model, layer: int) -> list[torch.nn.Module]:
    """The module(s) that compute neuron ``i`` of ``layer`` from the FFN input."""
    name = type(model).__name__
    if name.startswith("GPT2"):
        return [model.transformer.h[layer].mlp.c_fc]
    if name.startswith("Bert"):
        return [model.bert.encoder.layer[layer].intermediate.dense]
    mlp = model.model.layers[layer].mlp
    return [mlp.gate_proj, mlp.up_proj]


def ffn_inputs(model, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    """FFN input [n, H] of ``layer`` for one sequence (captured by a plain pre-hook)."""
    proj = input_projections(model, layer)[0]
    seen = {}
    handle = proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0][0].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=input_ids.unsqueeze(0))
    finally:
        handle.remove()
    return seen["x"]


def plain_log_prob(model, input_ids, score_positions, target_ids) -> torch.Tensor:
    logits = model(input_ids=input_ids.unsqueeze(0)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[int(p), int(t)] for p, t in zip(score_positions, target_ids))


@dataclass
class Planted:
    kind: str
    model: torch.nn.Module
    tok: object
    prompt: str
    target: str
    neuron: tuple[int, int]
    p_before: float
    p_after: float


# layer to plant in, per family. Gemma3's post-feedforward RMSNorm caps what one FFN can add
# to the residual stream (|out| <= |1+w|·sqrt(H)); its gain is raised 4x in the planted layer
# so that a single neuron can carry the fact (P > 0.5).
PLANT_LAYER = {"gpt2": 1, "bert": 1, "llama": 1, "qwen2": 1, "gemma3": 2}
PLANT_INDEX = 17


def plant_neuron(kind: str) -> Planted:
    """A tiny model in which neuron (l, i) at the target position carries the fact.

    Input weights: w with w·x = 1 for the FFN input x at the target position and w ⟂ the FFN
    inputs at every other position and at the target position of every AMIG masked input
    (so the neuron is ~3 on the fact's prompt and 0 where context is missing, a neuron that
    *needs* the context). GPT-2/BERT: pre-activation 3w·x = 3 -> GELU(3) ≈ 3; gated MLPs:
    gate 3w, up w -> act(3)·1 ≈ 3. Value vector: c·d/|d| with d = ∂logit_target/∂(FFN output
    at the target position) on the unmodified model, c grown until P(target) > 0.5 (BERT's
    post-LN saturates before that: the value vector is then refined by gradient ascent on
    log P).
    """
    from amig_plugin.models import get_family

    base, tok = get_model(kind)
    model = copy.deepcopy(base)
    for p in model.parameters():
        p.requires_grad_(False)
    family = get_family(model)
    layer, index = PLANT_LAYER[kind], PLANT_INDEX
    prompt, target = prompt_for(kind), "paris"
    q = family.encode(tok, prompt, target)
    tp = q.target_position
    if kind == "gemma3":
        with torch.no_grad():
            gain = family.blocks()[layer].post_feedforward_layernorm.weight
            gain.copy_((1 + gain) * 4 - 1)

    clean_in = ffn_inputs(model, layer, q.input_ids)
    x = clean_in[tp]
    base_tok = tok.mask_token_id if family.kind == "masked" else tok.eos_token_id
    others = [clean_in[k] for k in range(clean_in.shape[0]) if k != tp]
    for j in q.baseline_positions.tolist():
        ids = q.input_ids.clone()
        ids[j] = base_tok
        others.append(ffn_inputs(model, layer, ids)[tp])
    basis, _ = torch.linalg.qr(torch.stack(others).T)
    u = x - basis @ (basis.T @ x)
    w = u / u.dot(x)

    # d = ∂ logit_target / ∂ (FFN output at tp), unmodified model
    e = torch.zeros(x.shape[0], requires_grad=True)

    def add_e(module, args, out):
        out = out.clone()
        out[0, tp] = out[0, tp] + e
        return out

    handle = family.output_projection(layer).register_forward_hook(add_e)
    try:
        logits = model(input_ids=q.input_ids.unsqueeze(0)).logits
        (d,) = torch.autograd.grad(logits[0, int(q.score_positions[0]), int(q.target_ids[0])], e)
    finally:
        handle.remove()

    def prob() -> float:
        with torch.no_grad():
            return float(plain_log_prob(model, q.input_ids, q.score_positions, q.target_ids).exp())

    projs = input_projections(model, layer)
    with torch.no_grad():
        if len(projs) == 2:  # gated
            projs[0].weight[index] = 3 * w
            projs[1].weight[index] = w
        elif type(projs[0]).__name__ == "Conv1D":  # GPT-2: weight [in, out]
            projs[0].weight[:, index] = 3 * w
            projs[0].bias[index] = 0.0
        else:
            projs[0].weight[index] = 3 * w
            projs[0].bias[index] = 0.0
        p_before = prob()
        values = family.value_vectors(layer)  # view: row i = value vector of neuron i
        c = 1.0
        while True:
            values[index] = c * d / d.norm()
            p_after = prob()
            if p_after > 0.5 or c > 100:
                break
            c *= 1.5
    if p_after <= 0.5:
        v = values[index].detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([v], lr=0.5)
        proj = family.output_projection(layer)
        for _ in range(200):
            # adds a_i · (v − v_current) to the FFN output: gradient w.r.t. the value vector
            handle = proj.register_forward_hook(lambda m, args, out: out + args[0][..., index:index + 1] * (v - v.detach()))
            try:
                loss = -plain_log_prob(model, q.input_ids, q.score_positions, q.target_ids)
            finally:
                handle.remove()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                values[index] = v.detach()
            if prob() > 0.6:
                break
        p_after = prob()
    assert p_after > 0.5, f"planting failed for {kind}: P(target) = {p_after}"
    return Planted(kind, model, tok, prompt, target, (layer, index), p_before, p_after)


_PLANTED: dict = {}


def get_planted(kind: str) -> Planted:
    """:func:`plant_neuron` of ``kind``, cached per process."""
    if kind not in _PLANTED:
        _PLANTED[kind] = plant_neuron(kind)
    return _PLANTED[kind]
