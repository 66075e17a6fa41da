"""The IG engine against a naive reference, AMIG's masked baselines, completeness,
teacher-forced targets, planted neurons and bad inputs.

The reference here is deliberately slow and independent of the engine's batching, caching
and encoding: one whole-model forward + backward per (layer, α step), a forward pre-hook on
the neuron module that replaces the activation at the target position, inputs built by hand
from the tokenizer, baselines from hand-built masked inputs.
"""

from __future__ import annotations

import pytest
import torch

from amig_plugin.attribution import neuron_attributions, path_alphas, quadrature_rule
from amig_plugin.models import get_family
from conftest import amig_hooks, FAMILIES, get_model
from amig_plugin.testing import bos_word_tokenizer, tiny_sharp

LONG_CAUSAL = "the language spoken in the capital of france is <mask>"  # 9 tokens > Gemma3's window 4
BERT_2MASK = "the capital of france is <mask> ."
TARGET2 = "paris berlin"
RTOL = 1e-4
DIFFS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def plain_gauss_legendre_by_default(monkeypatch):
    """The engine is compared with the naive per-layer reference rule for rule; the default
    ``gauss-adaptive`` adds a refinement the reference does not have (it equals direct
    Gauss-Legendre runs layer by layer: tests/test_quadrature.py), so here the default is plain
    Gauss-Legendre at the same points."""
    from amig_plugin.attribution import ig

    monkeypatch.setitem(ig.attribute_query.__kwdefaults__, "quadrature", "gauss")


# ----------------------------------------------------------------------------------------
# the naive reference


class RefQuery:
    """Hand-built encoding (not family.encode)."""

    def __init__(self, kind: str, tok, prompt: str, target: str):
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        if kind == "bert":
            left, right = prompt.split("<mask>")
            l_ids = tok(left, add_special_tokens=False)["input_ids"]
            r_ids = tok(right, add_special_tokens=False)["input_ids"]
            ids = [tok.cls_token_id] + l_ids + [tok.mask_token_id] * len(t_ids) + r_ids + [tok.sep_token_id]
            self.tp = 1 + len(l_ids)
            self.ordinary = list(range(1, self.tp)) + list(range(self.tp + len(t_ids), len(ids) - 1))
            self.baseline_token = tok.mask_token_id
        else:
            prefix = prompt.split("<mask>")[0].rstrip()
            p_ids = tok(prefix, add_special_tokens=True)["input_ids"]
            ids = p_ids + t_ids[:-1]
            self.tp = len(p_ids) - 1
            self.ordinary = [k for k, t in enumerate(p_ids) if t != tok.bos_token_id]
            self.baseline_token = tok.eos_token_id
        self.ids = torch.tensor(ids)
        self.target_ids = list(t_ids)
        self.score_positions = list(range(self.tp, self.tp + len(t_ids)))


def ref_score(model, ids, rq: RefQuery, objective: str) -> torch.Tensor:
    logits = model(input_ids=ids.unsqueeze(0)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    total = sum(logp[p, t] for p, t in zip(rq.score_positions, rq.target_ids))
    return total.exp() if objective == "prob" else total


def ref_capture(model, family, ids, layer, position) -> torch.Tensor:
    module, side = family.neuron_hook_module(layer)
    seen = {}
    if side == "input":
        handle = module.register_forward_pre_hook(lambda m, args: seen.__setitem__("a", args[0][0, position].detach().clone()))
    else:  # GPT-2's pre-activation site: the output of mlp.c_fc
        handle = module.register_forward_hook(lambda m, args, out: seen.__setitem__("a", out[0, position].detach().clone()))
    try:
        with torch.no_grad():
            model(input_ids=ids.unsqueeze(0))
    finally:
        handle.remove()
    return seen["a"]


def ref_patched_score(model, family, rq: RefQuery, layer, z, objective) -> torch.Tensor:
    module, side = family.neuron_hook_module(layer)

    def replaced(x):
        x = x.clone()
        x[0, rq.tp] = z
        return x

    if side == "input":
        handle = module.register_forward_pre_hook(lambda m, args: (replaced(args[0]),) + tuple(args[1:]))
    else:
        handle = module.register_forward_hook(lambda m, args, out: replaced(out))
    try:
        return ref_score(model, rq.ids, rq, objective)
    finally:
        handle.remove()


def ref_masked_baselines(model, family, rq: RefQuery, layer) -> torch.Tensor:
    """[n', W]: neuron vector at the target position of each input with token j replaced."""
    out = []
    for j in rq.ordinary:
        ids = rq.ids.clone()
        ids[j] = rq.baseline_token
        out.append(ref_capture(model, family, ids, layer, rq.tp))
    return torch.stack(out)


def ref_ig(model, tok, kind, prompt, target, *, method, objective, steps, layers=None,
           amig_mode="mean", quadrature="gauss", neuron_site="ffn_hidden"):
    """(attributions [L, W], activations, mean baselines, F(a), F(a') per layer)."""
    family = get_family(model, neuron_site=neuron_site)
    rq = RefQuery(kind, tok, prompt, target)
    layers = list(range(family.num_layers)) if layers is None else layers
    alphas, weights = (x.tolist() for x in quadrature_rule(steps, quadrature))
    attr, acts, bases, base_scores = [], [], [], []
    for layer in layers:
        a = ref_capture(model, family, rq.ids, layer, rq.tp)
        if method == "kn":
            per = [torch.zeros_like(a)]
        else:
            masked = ref_masked_baselines(model, family, rq, layer)
            per = [masked.mean(0)] if amig_mode == "mean" else list(masked)
        igs, fs = [], []
        for b in per:
            grad_sum = torch.zeros_like(a)
            for alpha, weight in zip(alphas, weights):
                z = (b + alpha * (a - b)).requires_grad_(True)
                with torch.enable_grad():
                    f = ref_patched_score(model, family, rq, layer, z, objective)
                    (g,) = torch.autograd.grad(f, z)
                grad_sum += weight * g
            igs.append((a - b) * grad_sum)
            with torch.no_grad():
                fs.append(float(ref_patched_score(model, family, rq, layer, b, objective)))
        attr.append(torch.stack(igs).mean(0))
        acts.append(a)
        bases.append(torch.stack(per).mean(0))
        base_scores.append(sum(fs) / len(fs))
    with torch.no_grad():
        clean = float(ref_score(model, rq.ids, rq, objective))
    return torch.stack(attr), torch.stack(acts), torch.stack(bases), clean, torch.tensor(base_scores)


def rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max())


def prompt_of(kind):
    return BERT_2MASK if kind == "bert" else LONG_CAUSAL


# ----------------------------------------------------------------------------------------
# 1. engine == naive reference


def test_path_alphas_grid():
    """The reference shares the engine's α grid, so the grid itself is pinned here."""
    torch.testing.assert_close(path_alphas(4, "midpoint"), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(path_alphas(4, "left"), torch.tensor([0.0, 0.25, 0.5, 0.75]))
    torch.testing.assert_close(path_alphas(4, "right"), torch.tensor([0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(path_alphas(1, "midpoint"), torch.tensor([0.5]))


@pytest.mark.parametrize("objective", ["prob", "logprob"])
@pytest.mark.parametrize("method", ["kn", "amig"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_engine_matches_naive_reference(kind, method, objective):
    model, tok = get_model(kind)
    prompt = prompt_of(kind)
    R, acts, bases, clean, base_scores = ref_ig(model, tok, kind, prompt, TARGET2, method=method,
                                                objective=objective, steps=5)
    assert R.abs().max() > 0
    strategies = ("auto", "full") if kind == "bert" else ("auto", "cache", "layer_skip", "full")
    for strategy in strategies:
        res = neuron_attributions(model, tok, prompt, TARGET2, method=method, objective=objective, steps=5,
                                  ig_batch_size=7, strategy=strategy)  # 3 layers x 5 steps: batches mix layers
        assert res.layers == [0, 1, 2]
        assert res.target_ids == RefQuery(kind, tok, prompt, TARGET2).target_ids and len(res.target_ids) == 2
        d = rel_diff(res.attributions, R)
        DIFFS[f"{kind}/{method}/{objective}/{strategy}"] = d
        print(f"REFDIFF {kind} {method} {objective} {strategy} {d:.2e}")
        assert d < RTOL, f"{strategy}: max rel diff {d:.3g}"
        torch.testing.assert_close(res.activations, acts, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res.baselines, bases, rtol=1e-5, atol=1e-6)
        assert res.score == pytest.approx(clean, rel=1e-5, abs=1e-9)
        torch.testing.assert_close(res.baseline_scores, base_scores, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("quadrature", ["linspace", "right", "left"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_engine_matches_reference_with_endpoint_steps(kind, quadrature):
    """Rules with α = 1 (linspace, right) take every layer's clean-point gradient from one
    clean row with an offset at each layer, and rules with α = 0 (linspace, left) read F(a')
    from that path point instead of an extra row: both must equal the plain per-layer sum
    (a wrong clean row, e.g. replacing instead of offsetting the layers above, would cut the
    gradient paths through the layers above and fail here)."""
    model, tok = get_model(kind)
    prompt = prompt_of(kind)
    strategies = ("auto", "full") if kind == "bert" else ("auto", "cache", "layer_skip", "full")
    for method, amig_mode in (("kn", "mean"), ("amig", "mean"), ("amig", "per_position")):
        R, _, _, clean, base_scores = ref_ig(model, tok, kind, prompt, TARGET2, method=method, objective="prob",
                                             steps=4, quadrature=quadrature, amig_mode=amig_mode)
        for strategy in strategies:
            for batch in (5, 64):  # the clean row rides in the first batch: one of several, and the only one
                res = neuron_attributions(model, tok, prompt, TARGET2, method=method, steps=4, quadrature=quadrature,
                                          amig_mode=amig_mode, ig_batch_size=batch, strategy=strategy)
                d = rel_diff(res.attributions, R)
                assert d < RTOL, f"{method}/{amig_mode} {strategy} batch {batch}: max rel diff {d:.3g}"
                assert res.score == pytest.approx(clean, rel=1e-5, abs=1e-9)
                torch.testing.assert_close(res.baseline_scores, base_scores, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("kind", FAMILIES)
def test_per_position_amig_matches_reference(kind):
    """amig_mode='per_position' = mean over j of the IG from each masked baseline a'_j."""
    model, tok = get_model(kind)
    prompt = "the capital of france is <mask>" if kind != "bert" else BERT_2MASK
    R, _, bases, clean, base_scores = ref_ig(model, tok, kind, prompt, TARGET2, method="amig",
                                             objective="prob", steps=4, amig_mode="per_position")
    res = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=4, ig_batch_size=7,
                              amig_mode="per_position")
    d = rel_diff(res.attributions, R)
    print(f"REFDIFF {kind} amig-per_position prob auto {d:.2e}")
    assert d < RTOL
    torch.testing.assert_close(res.baselines, bases, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.baseline_scores, base_scores, rtol=1e-4, atol=1e-9)
    assert res.amig_mode == "per_position"
    # and the mode is not a no-op: the mean-baseline IG is a different estimator
    mean_mode = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=4)
    assert rel_diff(mean_mode.attributions, R) > 10 * RTOL


@pytest.mark.parametrize("kind,prompt,layers", [
    ("gpt2", "france <mask>", None),          # 1-token prefix: target position 0 (no cache to reuse)
    ("gpt2", LONG_CAUSAL, [2, 0]),             # unsorted layer subset
    ("bert", "<mask> is the capital of france", [2, 0]),  # mask first, unsorted subset
    ("gemma3", LONG_CAUSAL, [1]),
])
def test_engine_matches_reference_edge_cases(kind, prompt, layers):
    model, tok = get_model(kind)
    for method in ("kn", "amig"):
        R, *_ = ref_ig(model, tok, kind, prompt, TARGET2, method=method, objective="prob", steps=3, layers=layers)
        res = neuron_attributions(model, tok, prompt, TARGET2, method=method, steps=3, ig_batch_size=4, layers=layers)
        assert res.layers == (layers or [0, 1, 2])
        assert rel_diff(res.attributions, R) < RTOL


def test_engine_matches_reference_with_bos_tokenizer():
    model, _ = get_model("llama")
    tok = bos_word_tokenizer()
    for method in ("kn", "amig"):
        R, _, bases, *_ = ref_ig(model, tok, "llama", LONG_CAUSAL, TARGET2, method=method, objective="logprob", steps=3)
        res = neuron_attributions(model, tok, LONG_CAUSAL, TARGET2, method=method, objective="logprob", steps=3,
                                  ig_batch_size=5)
        assert rel_diff(res.attributions, R) < RTOL
        torch.testing.assert_close(res.baselines, bases, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------
# 2. AMIG's masked baselines


@pytest.mark.parametrize("kind", FAMILIES + ["llama-bos"])
def test_amig_baseline_is_mean_over_masked_inputs(kind):
    base_kind = kind.split("-")[0]
    model, tok = get_model(base_kind)
    if kind.endswith("bos"):
        tok = bos_word_tokenizer()
    prompt = prompt_of(base_kind)
    rq = RefQuery(base_kind, tok, prompt, TARGET2)
    family = get_family(model)
    expected = torch.stack([ref_masked_baselines(model, family, rq, layer).mean(0) for layer in range(3)])
    res = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=1)
    torch.testing.assert_close(res.baselines, expected, rtol=1e-5, atol=1e-6)
    # the baseline is a real move away from the clean activation
    assert (res.baselines - res.activations).abs().max() > 1e-2
    n_ordinary = len(prompt.replace("<mask>", "").split())
    assert res.num_baseline_inputs == len(rq.ordinary) == n_ordinary
    kn = neuron_attributions(model, tok, prompt, TARGET2, method="kn", steps=1)
    assert torch.equal(kn.baselines, torch.zeros_like(kn.baselines))
    assert kn.num_baseline_inputs == 0


@pytest.mark.parametrize("kind,prompt", [
    ("bert", "the capital of <mask> is paris ."),   # masks in the middle, right context, [CLS]/[SEP]
    ("llama-bos", LONG_CAUSAL),                      # BOS must stay
    ("gpt2", LONG_CAUSAL),
])
def test_amig_replaces_each_ordinary_token_once_and_nothing_else(kind, prompt):
    """Watch every input the engine feeds the model: each masked input differs from the
    clean one at exactly one ordinary prompt token, replaced by [MASK] / EOS; every ordinary
    token is replaced exactly once; [CLS], [SEP], BOS and the target's [MASK] slots never."""
    base_kind = kind.split("-")[0]
    model, tok = get_model(base_kind)
    if kind.endswith("bos"):
        tok = bos_word_tokenizer()
    rq = RefQuery(base_kind, tok, prompt, TARGET2)
    family = get_family(model)
    seen: list[torch.Tensor] = []
    handle = family.input_embeddings().register_forward_pre_hook(lambda m, args: seen.extend(args[0].detach().clone()))
    try:
        res = neuron_attributions(model, tok, prompt, TARGET2, method="amig", steps=2)
    finally:
        handle.remove()
    clean = rq.ids[: rq.tp + 1] if base_kind != "bert" else rq.ids
    replaced = []
    for row in seen:
        if row.shape[0] < clean.shape[0]:
            continue  # cached suffix/prefix passes of the IG runner
        row = row[: clean.shape[0]]
        diff = torch.nonzero(row != clean).flatten().tolist()
        if not diff:
            continue
        assert len(diff) == 1, f"masked input changes {len(diff)} tokens"
        assert int(row[diff[0]]) == rq.baseline_token
        replaced.append(diff[0])
    assert sorted(replaced) == rq.ordinary
    specials = {tok.cls_token_id, tok.sep_token_id, tok.bos_token_id, tok.mask_token_id}
    assert not any(int(rq.ids[j]) in specials for j in replaced)
    assert res.num_baseline_inputs == len(rq.ordinary)


def test_amig_masks_unknown_words_in_causal_prompts_too():
    prompt = "the capital of narnia is <mask>"  # 'narnia' -> [UNK]
    model, tok = get_model("gpt2")
    assert tok.unk_token_id in tok(prompt.replace(" <mask>", ""))["input_ids"]
    res = neuron_attributions(model, tok, prompt, "paris", method="amig", steps=1)
    bert, btok = get_model("bert")
    bres = neuron_attributions(bert, btok, prompt, "paris", method="amig", steps=1)
    assert bres.num_baseline_inputs == 5  # the masked-LM family masks all 5 prompt words
    assert res.num_baseline_inputs == 5


# ----------------------------------------------------------------------------------------
# 3. completeness

COMPLETENESS_PROMPT = {"gpt2": "the capital of france is <mask>", "llama": "the capital of france is <mask>",
                       "bert": "france capital <mask>"}


@pytest.mark.parametrize("method", ["kn", "amig"])
@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_completeness_residual(kind, method):
    model, tok = get_model(kind)
    prompt = COMPLETENESS_PROMPT[kind]
    coarse = neuron_attributions(model, tok, prompt, "paris", method=method, steps=4, quadrature="midpoint")
    fine = neuron_attributions(model, tok, prompt, "paris", method=method, steps=64, quadrature="midpoint")
    print(f"RESIDUAL {kind} {method} steps4 {coarse.relative_residual:.2e} steps64 {fine.relative_residual:.2e}")
    # the residual is what it says: sum IG - (F(a) - F(a'))
    torch.testing.assert_close(fine.completeness_residual,
                               fine.attributions.sum(-1) - (fine.score - fine.baseline_scores))
    assert (fine.score - fine.baseline_scores).abs().max() > 1e-4  # a non-trivial F difference
    assert fine.relative_residual < 1e-2
    assert coarse.relative_residual > 5 * fine.relative_residual


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_completeness_per_position_amig(kind):
    """Per-position AMIG is complete against mean_j F(a'_j)."""
    model, tok = get_model(kind)
    prompt = COMPLETENESS_PROMPT[kind]
    coarse = neuron_attributions(model, tok, prompt, "paris", method="amig", amig_mode="per_position", steps=4, quadrature="midpoint")
    fine = neuron_attributions(model, tok, prompt, "paris", method="amig", amig_mode="per_position", steps=64, quadrature="midpoint")
    print(f"RESIDUAL {kind} amig-per_position steps4 {coarse.relative_residual:.2e} steps64 {fine.relative_residual:.2e}")
    assert fine.relative_residual < 1e-2
    assert coarse.relative_residual > 5 * fine.relative_residual


def test_gemma3_zero_baseline_breaks_completeness_amig_does_not():
    """Gemma3's post-feedforward RMSNorm makes F scale-invariant in the neuron vector except
    at 0: along the zero-baseline path F is flat and jumps at α≈0, so Σ IG ≈ 0 while
    F(a) − F(0) is not. AMIG's baseline path does not pass through 0."""
    model, tok = get_model("gemma3")
    prompt = "the capital of france is <mask>"
    kn = neuron_attributions(model, tok, prompt, "paris", method="kn", steps=64, quadrature="midpoint")
    amig = neuron_attributions(model, tok, prompt, "paris", method="amig", steps=64, quadrature="midpoint")
    print(f"RESIDUAL gemma3 kn steps64 {kn.relative_residual:.3f} amig steps64 {amig.relative_residual:.2e}")
    assert kn.relative_residual > 0.5
    assert amig.relative_residual < 1e-2
    # the explanation, checked directly: F(s·a) == F(a) for s far from 0, F(0) differs
    family = get_family(model)
    rq = RefQuery("gemma3", tok, prompt, "paris")
    layer = 1
    a = ref_capture(model, family, rq.ids, layer, rq.tp)
    with torch.no_grad():
        f = {s: float(ref_patched_score(model, family, rq, layer, s * a, "prob")) for s in (0.0, 0.05, 0.5, 1.0, 3.0)}
    for s in (0.05, 0.5, 3.0):
        assert f[s] == pytest.approx(f[1.0], rel=1e-4)
    assert abs(f[0.0] - f[1.0]) > 1e-2 * f[1.0]
    assert float(kn.score - kn.baseline_scores[layer]) == pytest.approx(f[1.0] - f[0.0], rel=1e-4)


# ----------------------------------------------------------------------------------------
# 4. planted knowledge neuron


@pytest.mark.parametrize("method", ["kn", "amig"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_planted_neuron_ranks_first(kind, method, planted):
    p = planted(kind)
    assert p.p_before < 0.1 < 0.5 < p.p_after
    res = neuron_attributions(p.model, p.tok, p.prompt, p.target, method=method, steps=20)
    A = res.attributions
    flat = int(A.flatten().argmax())
    top = (res.layers[flat // A.shape[1]], flat % A.shape[1])
    assert top == p.neuron, f"{kind}/{method}: top neuron {top}, planted {p.neuron}"
    layer, index = p.neuron
    second = torch.topk(A.flatten(), 2).values[1]
    assert A[layer, index] > 1.2 * second
    if method == "amig":  # the planted neuron needs the whole context: its masked baseline is ~0
        assert res.activations[layer, index] > 2.5
        assert res.baselines[layer, index].abs() < 0.05


# ----------------------------------------------------------------------------------------
# 5. multi-token targets are teacher-forced


def _next_token_probs(model, ids):
    with torch.no_grad():
        return torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "gemma3"])
def test_causal_multi_token_target_is_teacher_forced(kind):
    model, tok = get_model(kind)
    prefix = tok("the capital of france is", add_special_tokens=True)["input_ids"]
    paris = tok.convert_tokens_to_ids("paris")
    p1 = _next_token_probs(model, prefix)
    p2 = _next_token_probs(model, prefix + [paris])
    second = next(w for w in ("berlin", "tokyo", "rome") if int(p2.argmax()) != tok.convert_tokens_to_ids(w))
    second_id = tok.convert_tokens_to_ids(second)
    assert int(p2.argmax()) != second_id  # greedy continuation would not produce the gold token
    expected = float(p1[paris] * p2[second_id])
    for objective, want in (("prob", expected), ("logprob", float(torch.log(p1[paris]) + torch.log(p2[second_id])))):
        res = neuron_attributions(model, tok, "the capital of france is <mask>", f"paris {second}", method="kn",
                                  steps=1, layers=[0], objective=objective)
        assert res.target_ids == [paris, second_id]
        assert res.score == pytest.approx(want, rel=1e-5)
    greedy = float(p1[paris] * p2.max())
    assert abs(greedy - expected) > 1e-3 * expected


def test_masked_multi_token_target_is_product_over_masks():
    model, tok = get_model("bert")
    words = "[CLS] the capital of france is [MASK] [MASK] . [SEP]".split()
    ids = torch.tensor([tok.convert_tokens_to_ids(w) for w in words])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids[None]).logits[0].float(), -1)
    paris, berlin = tok.convert_tokens_to_ids("paris"), tok.convert_tokens_to_ids("berlin")
    expected = float(probs[6, paris] * probs[7, berlin])
    res = neuron_attributions(model, tok, BERT_2MASK, "paris berlin", method="kn", steps=1, layers=[0])
    assert res.score == pytest.approx(expected, rel=1e-5)
    res = neuron_attributions(model, tok, BERT_2MASK, "paris berlin", method="kn", steps=1, layers=[0],
                              objective="logprob")
    assert res.score == pytest.approx(float(torch.log(probs[6, paris]) + torch.log(probs[7, berlin])), rel=1e-5)
    # the tokenizer's own mask token written once in the prompt works the same way (one slot per target token)
    res = neuron_attributions(model, tok, "the capital of france is [MASK] .", "paris berlin", method="kn", steps=1,
                              layers=[0])
    assert res.score == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------
# the model is left as it was


def test_attribution_leaves_model_untouched():
    model, tok = tiny_sharp("gpt2")
    model.train()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    ids = tok("the capital of france is", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.train()
    neuron_attributions(model, tok, LONG_CAUSAL, TARGET2, method="amig", steps=2)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert amig_hooks(model) == []
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


# ----------------------------------------------------------------------------------------
# 8. bad inputs


def test_unknown_method_objective_steps(gpt2):
    model, tok = gpt2
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", method="foo")
    with pytest.raises(ValueError, match="unknown objective 'bar'"):
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", objective="bar")
    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=steps)
    with pytest.raises(ValueError, match="unknown amig_mode"):
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", amig_mode="median")
    with pytest.raises(ValueError, match="unknown strategy"):
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", strategy="fast")


def test_layer_out_of_range(gpt2):
    model, tok = gpt2
    for layers in ([3], [0, 7], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=1, layers=layers)
    with pytest.raises(ValueError, match="layers is empty"):
        neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=1, layers=[])


def test_numpy_and_torch_integer_layers(gpt2):
    import numpy as np

    model, tok = gpt2
    ref = neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=1, layers=[0, 1])
    for layers in (np.array([0, 1]), torch.tensor([0, 1])):
        res = neuron_attributions(model, tok, LONG_CAUSAL, "paris", steps=1, layers=layers)
        assert res.layers == [0, 1]
        assert torch.equal(res.attributions, ref.attributions)


@pytest.mark.parametrize("batch", [1, 5, 1000])
def test_result_does_not_depend_on_batching(batch):
    """Endpoint rows ride in the last gradient batch; any batch size gives the same IG."""
    model, tok = get_model("gpt2")
    ref = neuron_attributions(model, tok, "the capital of france is <mask>", "paris", method="amig", steps=4,
                              ig_batch_size=64)
    got = neuron_attributions(model, tok, "the capital of france is <mask>", "paris", method="amig", steps=4,
                              ig_batch_size=batch)
    assert torch.allclose(got.attributions, ref.attributions, rtol=1e-5, atol=1e-7)
    assert torch.allclose(got.baseline_scores, ref.baseline_scores, rtol=1e-5, atol=1e-8)
    assert got.score == pytest.approx(ref.score, rel=1e-6)


# ----------------------------------------------------------------------------------------
# layer skipping: rows join at their layer's neuron site; fused activations


CAUSAL_FAMILIES = [k for k in FAMILIES if k != "bert"]


@pytest.mark.parametrize("quadrature", ["linspace", "midpoint"])
def test_gpt2_pre_activation_site_matches_reference(quadrature):
    """The EasyEdit-KN comparison site (mlp.c_fc's output, before the GELU): rows joining
    there still run the GELU and c_proj of their block."""
    model, tok = get_model("gpt2")
    prompt = prompt_of("gpt2")
    for method in ("kn", "amig"):
        R, acts, _, clean, base_scores = ref_ig(model, tok, "gpt2", prompt, TARGET2, method=method, objective="prob",
                                                steps=4, quadrature=quadrature, neuron_site="ffn_pre_activation")
        for strategy in ("auto", "cache", "full"):
            res = neuron_attributions(model, tok, prompt, TARGET2, method=method, steps=4, quadrature=quadrature,
                                      neuron_site="ffn_pre_activation", strategy=strategy, ig_batch_size=5)
            d = rel_diff(res.attributions, R)
            assert d < RTOL, f"{method} {strategy}: max rel diff {d:.3g}"
            torch.testing.assert_close(res.activations, acts, rtol=1e-5, atol=1e-6)
            assert res.score == pytest.approx(clean, rel=1e-5, abs=1e-9)
            torch.testing.assert_close(res.baseline_scores, base_scores, rtol=1e-4, atol=1e-9)
    assert not amig_hooks(model)


@pytest.mark.parametrize("kind", CAUSAL_FAMILIES)
def test_layer_skip_rows_join_at_the_neuron_site(kind):
    """Every supported decoder's blocks match their FFN join on the clean pass, so IG rows
    skip the attention of their own block (the fast path is not silently lost)."""
    from amig_plugin.attribution import make_runner

    model, tok = get_model(kind)
    family = get_family(model)
    runner = make_runner(family, family.encode(tok, prompt_of(kind), TARGET2), "prob", "layer_skip", need_clean=True)
    assert runner.joins is not None and len(runner.joins) == family.num_layers
    assert not amig_hooks(model)


def test_a_block_that_does_not_match_its_join_runs_whole(monkeypatch):
    """A join that misdescribes the block (here: Gemma-3's post-FFN norm left out) is caught
    on the clean pass; the rows then run whole blocks and the result is still exact."""
    import dataclasses

    from amig_plugin.attribution import make_runner

    model, tok = get_model("gemma3")
    family = get_family(model)
    real = family.ffn_join
    monkeypatch.setattr(family, "ffn_join", lambda k: dataclasses.replace(real(k), tail=lambda x: x))
    prompt = prompt_of("gemma3")
    runner = make_runner(family, family.encode(tok, prompt, TARGET2), "prob", "layer_skip", need_clean=True)
    assert runner.joins is None
    R, _, _, clean, _ = ref_ig(model, tok, "gemma3", prompt, TARGET2, method="kn", objective="prob", steps=4,
                               quadrature="linspace")
    res = neuron_attributions(family, tok, prompt, TARGET2, method="kn", steps=4, quadrature="linspace",
                              strategy="layer_skip")
    assert rel_diff(res.attributions, R) < RTOL
    assert not amig_hooks(model)


def test_fused_gelu_equals_gpt2s_own_and_is_undone():
    """GPT-2's gelu_new runs as one fused kernel inside the engine: the same numbers to float
    rounding, the module's hooks still run, and the module is restored (also on errors)."""
    model, _ = get_model("gpt2")
    family = get_family(model)
    act = model.transformer.h[0].mlp.act
    assert type(act).__name__ == "NewGELUActivation"
    x = torch.linspace(-8, 8, 2001)
    seen = []
    handle = act.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        plain = act(x)
        with family.fused_activations():
            assert "forward" in vars(act)
            fused = act(x)
        after = act(x)
        with pytest.raises(RuntimeError, match="boom"):
            with family.fused_activations():
                raise RuntimeError("boom")
    finally:
        handle.remove()
    assert len(seen) == 3
    torch.testing.assert_close(fused, plain, rtol=2e-6, atol=1e-6)  # |x| up to 8
    assert torch.equal(after, plain) and "forward" not in vars(act)


def test_prefix_cache_strategies_on_edge_inputs():
    """A one-token prompt (no BOS: empty prefix) runs whole with the prefix-cache strategies
    too (Gemma-3's sliding-window cache cannot be built from nothing); asking for a causal
    strategy on a masked LM is refused by name."""
    for kind in ("gpt2", "gemma3"):
        model, tok = get_model(kind)
        ref = neuron_attributions(model, tok, "paris", "berlin", method="kn", steps=4, strategy="full")
        assert get_family(model).encode(tok, "paris", "berlin").target_position == 0
        for strategy in ("cache", "layer_skip"):
            got = neuron_attributions(model, tok, "paris", "berlin", method="kn", steps=4, strategy=strategy)
            assert rel_diff(got.attributions, ref.attributions) < RTOL
    model, tok = get_model("bert")
    with pytest.raises(ValueError, match="causal LM's prefix cache"):
        neuron_attributions(model, tok, "paris is <mask> .", "berlin", method="kn", steps=2, strategy="cache")


def test_sliding_window_cache_is_cut_only_while_the_window_has_dropped_nothing(monkeypatch):
    """Gemma-3's local layers keep a sliding window: a prompt shorter than the window has its
    prefix cache cut from the clean pass (no second pass over the prefix), with the same
    attributions as the whole-model strategy; a longer one, whose window has dropped
    positions, recomputes the prefix (a cut would be wrong). Older transformers (no per-layer
    cache objects) always recompute it: only the equality is checked there."""
    import transformers.cache_utils

    from amig_plugin.attribution import prefix_cache

    layered = hasattr(transformers.cache_utils, "DynamicSlidingWindowLayer")

    model, tok = get_model("gemma3")  # sliding_window = 4: it keeps the last 3 positions
    recomputed = []
    original = prefix_cache._CachedCausalRunner._prefix_cache

    def counting(self):
        recomputed.append(self.query.target_position)
        return original(self)

    monkeypatch.setattr(prefix_cache._CachedCausalRunner, "_prefix_cache", counting)
    for prompt, expect_recompute in (("the capital <mask>", False), (LONG_CAUSAL, True)):
        recomputed.clear()
        ref = neuron_attributions(model, tok, prompt, "paris", method="amig", steps=4, strategy="full")
        for strategy in ("cache", "layer_skip"):
            got = neuron_attributions(model, tok, prompt, "paris", method="amig", steps=4, strategy=strategy)
            assert rel_diff(got.attributions, ref.attributions) < RTOL, (prompt, strategy)
            assert rel_diff(got.baselines, ref.baselines) < RTOL
        assert bool(recomputed) == (expect_recompute or not layered), (prompt, recomputed)
