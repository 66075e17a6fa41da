"""Speed and agreement of our IG engine against EasyEdit's KN implementation.

In one run and on the same prompts: EasyEdit's ``KnowledgeNeurons.get_scores`` (PyPI
``easyeditor==0.0.1.dev0``, through our compat layer) versus ``neuron_attributions`` in
``kn`` (zero-baseline) mode, m = 20, all layers, on a GPT-2-small-sized causal model and a
BERT-base-sized masked model (random weights: timing does not depend on them). To compare
like with like, our engine runs with EasyEdit's conventions: its hook point for GPT-2
(``mlp.c_fc`` output, before the GELU: ``neuron_site="ffn_pre_activation"``), its path
(``torch.linspace(0, 1, m)`` weighted 1/m: ``quadrature="linspace"``) and P(target).

Each engine runs in its own subprocess (fresh peak-RSS accounting), sequentially, with the
same thread count, makes one untimed warm-up call on the first prompt (``--no-warmup`` to
time it too), and the two alternate ``--repeats`` times (each prompt counts with its fastest
time per engine, so a burst of load on a shared machine hurts neither). Ends with one line:

    speedup_vs_easyedit_kn: causal=<x> masked=<y> max_rel_diff=<d> equal_accuracy_causal=<x> (gauss/<m> err <e> vs easyedit err <e>) equal_accuracy_masked=<y> (...)

``max_rel_diff``: max |ours − EasyEdit| / max |EasyEdit| of the attributions, both at m = 20
on EasyEdit's path (the same computation: float rounding only).

Equal accuracy. EasyEdit's path ``torch.linspace(0, 1, m)`` weighted 1/m is a biased Riemann
sum (it counts both ends, alpha = 0 and alpha = 1, with weight 1/m: an O(1/m) error), so the
engine can reach the same accuracy with fewer path points. Both are measured against one
high-precision reference per prompt in EasyEdit's convention (same neuron site: GPT-2
``ffn_pre_activation``, BERT ``ffn_hidden`` = its ``intermediate`` output; zero baseline;
F = P(target)): our engine with 256-point Gauss-Legendre, checked against 128 points (their
difference is printed and must be far below the errors compared; a warning says when it is
not). The error of a [L, W] attribution matrix ``a`` of one prompt is the relative L2 error
over all layers, ``||a − ref||_2 / ||ref||_2``; EasyEdit's error is that of its m = 20
attributions. Our rule at equal accuracy is the cheapest (fewest path points) Gauss-Legendre
rule of ``--eq-steps`` whose error is at most EasyEdit's on every prompt
(:func:`select_equal_accuracy`); it is then timed like the rest (its own subprocesses,
alternating with EasyEdit's, fastest per prompt) and ``equal_accuracy_<kind>`` is EasyEdit's time /
its time. The errors printed after the rule are the worst prompt's.

``--runs K`` repeats the timed comparison K times in one invocation (the reference is computed
once; the rule is chosen again from each run's EasyEdit scores, which are deterministic), prints each run's ratios and their min and
median, and the final line then carries the medians plus ``runs=K`` and the minima
(``min_causal=``, ``min_equal_accuracy_causal=``, ...): the check of "in every run".

``--captum`` compares with Captum instead (PyPI ``captum``, the ``bench`` extra; run the script
with an interpreter that has it): its ``LayerIntegratedGradients``, one layer at a time, on a
layer that is our neuron site (the FFN neuron vector at the target position: a small module
the site's hook passes that vector through, so Captum's layer hook replaces exactly it, and
the baseline input makes it the zero vector), with the same steps, rule (midpoint =
Captum's ``riemann_middle``, ``gauss`` = its ``gausslegendre``) and internal batch size, on
the same models and prompts as ours in ``kn`` mode at our default site. Ends with:

    speedup_vs_captum: causal=<x> masked=<y> max_rel_diff=<d>

``--gemma`` adds seconds per fact on the real Gemma-3-270M (all 18 layers, AMIG and KN, one
English and one Chinese shipped fact; midpoint m = 20, the default rule and the steep rule), and ``--gemma-naive`` the naive per-layer
loop (8 steps) on the same English fact for the ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's amig_plugin, installed or not
from amig_plugin.defaults import DEFAULT_IG_BATCH_SIZE, DEFAULT_QUADRATURE, DEFAULT_STEPS  # noqa: E402

CAUSAL = dict(vocab_size=50257, layers=12, width=768, heads=12, ffn=3072)  # GPT-2 small
MASKED = dict(vocab_size=28996, layers=12, width=768, heads=12, ffn=3072)  # bert-base-cased

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"]


BMLAMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bmlama17"


def benchmark_facts():
    """The English facts the benchmark draws its prompts from: BMLAMA-17 (the paper's kind of
    data; ../shared/data, when present: a sample spread over its relations), else the
    shipped facts."""
    from amig_plugin.data import load_bmlama, sample_facts, shipped_facts

    if (BMLAMA / "en.tsv").exists():
        return sample_facts(load_bmlama({"en": BMLAMA / "en.tsv"}), 400, seed=0), "BMLAMA-17 (en)"
    return shipped_facts(), "shipped facts (en)"


def _corpus() -> list[str]:
    facts, _ = benchmark_facts()
    return [fact.prompts["en"][0].replace("<mask>", fact.object["en"]) for fact in facts]


def build_tokenizer(kind: str):
    """A tokenizer trained in code on the shipped English facts (the hub is unreachable):
    byte-level BPE for the causal model, WordPiece with [CLS]/[SEP] for the masked one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "causal":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        tk.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=8000, special_tokens=SPECIALS,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                       unk_token="[UNK]", pad_token="[PAD]")
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=8000, special_tokens=SPECIALS))
    cls_id, sep_id = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def _deterministic_init(model, seed: int):
    """Every parameter set from one seeded generator: construction alone can leave some
    tensors uninitialised (different in each process)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.ones_like(p) if "LayerNorm.weight" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else torch.zeros_like(p))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def build_model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "causal":
        from transformers import GPT2Config, GPT2LMHeadModel

        c = CAUSAL
        cfg = GPT2Config(vocab_size=c["vocab_size"], n_layer=c["layers"], n_embd=c["width"], n_head=c["heads"],
                         n_inner=c["ffn"], n_positions=128)
        return _deterministic_init(GPT2LMHeadModel(cfg), seed)
    from transformers import BertConfig, BertForMaskedLM

    c = MASKED
    cfg = BertConfig(vocab_size=c["vocab_size"], num_hidden_layers=c["layers"], hidden_size=c["width"],
                     num_attention_heads=c["heads"], intermediate_size=c["ffn"], max_position_embeddings=128)
    return _deterministic_init(BertForMaskedLM(cfg), seed)


def benchmark_queries(kind: str, tok, n: int, min_tokens: int = 0) -> list[tuple[str, str]]:
    """n (prompt, target) pairs from the benchmark facts whose target is one token for this
    tokenizer (EasyEdit's KN treats a multi-token GPT target by greedy decoding) and whose
    prompt has at least ``min_tokens`` tokens (0: the natural length distribution)."""
    from amig_plugin.models import causal_prefix_and_target

    out = []
    for fact in benchmark_facts()[0]:
        prompt, target = fact.prompts["en"][0], fact.object["en"]
        if kind == "causal":
            prefix, tgt = causal_prefix_and_target(prompt, target)
            if len(tok(tgt, add_special_tokens=False)["input_ids"]) == 1 and len(tok(prefix)["input_ids"]) >= min_tokens:
                out.append((prefix, tgt))
        else:
            masked = prompt.replace("<mask>", tok.mask_token)
            if (tok.convert_tokens_to_ids(target) != tok.unk_token_id and len(tok.tokenize(target)) == 1
                    and len(tok(masked)["input_ids"]) >= min_tokens):
                out.append((masked, target))
        if len(out) == n:
            break
    return out


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB. The peak counts from the last
    :func:`_reset_peak_rss` where Linux allows it (else from the process start)."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def _reset_peak_rss() -> None:
    """Start the peak-RSS count afresh (building the random model peaks higher than the run)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


CAPTUM_RULE = {"midpoint": "riemann_middle", "left": "riemann_left", "right": "riemann_right", "gauss": "gausslegendre"}


def captum_kn(model, tok, steps: int, rule: str, batch_size: int):
    """attribute(prompt, target) -> [L, W]: Captum's LayerIntegratedGradients per layer, zero
    baseline at the neuron vector of the target position (KN), F = P(target), whole-model
    forwards (Captum knows nothing of prefix caches or layer skipping)."""
    from captum.attr import LayerIntegratedGradients

    from amig_plugin.models import get_family

    family = get_family(model)

    class Site(torch.nn.Module):
        """The neuron vector at the target position; baseline rows (flagged) give zeros."""

        def forward(self, x, is_baseline):
            return torch.where(is_baseline.view(-1, 1), torch.zeros_like(x), x)

    site = Site()

    def attribute(prompt: str, target: str) -> torch.Tensor:
        query = family.encode(tok, prompt, target)
        ids, tp = query.input_ids.unsqueeze(0), query.target_position
        positions, target_ids = query.score_positions, query.target_ids
        V = model.config.vocab_size
        out = []
        for layer in range(family.num_layers):
            module, side = family.neuron_hook_module(layer)

            def forward(signed_ids):  # baseline rows carry ids − V (negative)
                is_baseline = signed_ids[:, 0] < 0
                real = torch.where(signed_ids < 0, signed_ids + V, signed_ids)

                def patch(act):
                    act = act.clone()
                    act[:, tp] = site(act[:, tp], is_baseline)
                    return act

                handle = (module.register_forward_pre_hook(lambda _m, args: (patch(args[0]),) + tuple(args[1:]))
                          if side == "input" else module.register_forward_hook(lambda _m, _a, o: patch(o)))
                try:
                    logits = model(input_ids=real).logits[:, positions].float()
                finally:
                    handle.remove()
                logp = torch.log_softmax(logits, -1).gather(-1, target_ids.view(1, -1, 1).expand(logits.shape[0], -1, 1))
                return logp.sum((1, 2)).exp()

            lig = LayerIntegratedGradients(forward, site)
            attr = lig.attribute(ids, baselines=ids - V, n_steps=steps, method=rule, internal_batch_size=batch_size)
            out.append(attr[0].detach().float())
        return torch.stack(out)

    return attribute


def _run_engine(engine: str, kind: str, tok_dir: str, n_prompts: int, steps: int, batch_size: int, threads: int,
                min_tokens: int, warmup: bool, queue, quadrature: str = "linspace", site: str | None = None) -> None:
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = build_model(kind)
    queries = benchmark_queries(kind, tok, n_prompts, min_tokens)
    gc.collect()
    _reset_peak_rss()
    rss0, _ = _rss_mb()
    scores, times = [], []
    if engine == "easyedit":
        from amig_plugin.easyedit.compat import cuda_to_cpu, import_easyeditor

        import_easyeditor()
        from easyeditor.models.kn.knowledge_neurons.knowledge_neurons import KnowledgeNeurons

        with cuda_to_cpu():
            kn = KnowledgeNeurons(model, tok, model_type="gpt2" if kind == "causal" else "bert", device="cpu")
            if warmup:  # one untimed call: first-call costs (allocator, kernels) are not per-prompt work
                kn.get_scores(*queries[0], batch_size=batch_size, steps=steps, pbar=False)
            for prompt, target in queries:
                t0 = time.perf_counter()
                s = kn.get_scores(prompt, target, batch_size=batch_size, steps=steps, pbar=False)
                times.append(time.perf_counter() - t0)
                scores.append(s.detach().float().cpu())
    elif engine == "captum":
        attribute = captum_kn(model, tok, steps, CAPTUM_RULE[quadrature], batch_size)
        if warmup:
            attribute(*queries[0])
        for prompt, target in queries:
            t0 = time.perf_counter()
            s = attribute(prompt, target)
            times.append(time.perf_counter() - t0)
            scores.append(s)
    else:
        from amig_plugin.attribution import neuron_attributions

        if site is None:
            site = easyedit_site(kind) if quadrature == "linspace" else "ffn_hidden"
        settings = dict(method="kn", steps=steps, objective="prob", quadrature=quadrature, neuron_site=site,
                        ig_batch_size=batch_size)
        if warmup:
            neuron_attributions(model, tok, *queries[0], **settings)
        for prompt, target in queries:
            t0 = time.perf_counter()
            r = neuron_attributions(model, tok, prompt, target, **settings)
            times.append(time.perf_counter() - t0)
            scores.append(r.attributions)
    _, peak = _rss_mb()
    queue.put(dict(engine=engine, kind=kind, times=times, scores=[s.tolist() for s in scores],
                   queries=queries, peak_rss_mb=peak, extra_rss_mb=peak - rss0))


def run_isolated(*args, site: str | None = None) -> dict:
    *args, quadrature = args
    return _isolated(_run_engine, *args, quadrature=quadrature, site=site)


def _isolated(fn, *args, **kwargs) -> dict:
    """``fn(*args, queue, **kwargs)`` in a fresh spawned process; what it puts on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue), kwargs=kwargs)
    proc.start()
    result = queue.get()
    proc.join()
    return result


# ----------------------------------------------------------------------------------------
# equal accuracy: errors against a high-precision reference in EasyEdit's convention

#: Gauss-Legendre path points tried for our rule at equal accuracy (``--eq-steps``).
EQ_STEPS = (4, 6, 8, 12, 16, 24, 32)
#: The reference rule (Gauss-Legendre) and the coarser one it is checked against.
REFERENCE_STEPS, REFERENCE_CHECK_STEPS = 256, 128


def easyedit_site(kind: str) -> str:
    """EasyEdit KN's hook point as our neuron site: GPT-2 ``mlp.c_fc`` output (before the GELU),
    BERT ``intermediate`` output (after it)."""
    return "ffn_pre_activation" if kind == "causal" else "ffn_hidden"


def easyedit_convention(kind: str, steps: int, quadrature: str, batch_size: int = DEFAULT_IG_BATCH_SIZE) -> dict:
    """Keyword arguments of ``neuron_attributions`` for KN in EasyEdit's conventions (zero
    baseline, its site, F = P(target)) under our rule ``quadrature``/``steps``."""
    return dict(method="kn", steps=steps, objective="prob", quadrature=quadrature, neuron_site=easyedit_site(kind),
                ig_batch_size=batch_size)


def rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a − ref||_2 / ||ref||_2 over the whole [L, W] matrix (all layers), in float64."""
    a, ref = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    return float((a - ref).norm() / ref.norm().clamp_min(1e-300))


def reference_attributions(model, tok, prompt: str, target: str, kind: str, steps: int = REFERENCE_STEPS,
                           batch_size: int = DEFAULT_IG_BATCH_SIZE) -> torch.Tensor:
    """[L, W] KN attributions in EasyEdit's convention under ``steps``-point Gauss-Legendre."""
    from amig_plugin.attribution import neuron_attributions

    return neuron_attributions(model, tok, prompt, target, **easyedit_convention(kind, steps, "gauss", batch_size)).attributions


def select_equal_accuracy(errors: Mapping[str, Sequence[float]], bound: Sequence[float],
                          cost: Mapping[str, float]) -> str | None:
    """The cheapest rule (least ``cost``, e.g. path points) whose error is at most ``bound``
    on every prompt: ``errors[rule][i] <= bound[i]`` for all i; ``None`` if no rule is."""
    ok = [rule for rule, errs in errors.items()
          if len(errs) == len(bound) and all(e <= b for e, b in zip(errs, bound))]
    return min(ok, key=lambda rule: (cost[rule], rule)) if ok else None


def _accuracy_pass(kind: str, tok_dir: str, n_prompts: int, threads: int, min_tokens: int, eq_steps: Sequence[int],
                   batch_size: int, queue) -> None:
    """Per prompt: the reference, its distance to the 128-point rule, and each Gauss-Legendre
    rule's error (same model, prompts and threads as the timed passes)."""
    from transformers import AutoTokenizer

    from amig_plugin.attribution import neuron_attributions

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = build_model(kind)
    queries = benchmark_queries(kind, tok, n_prompts, min_tokens)
    refs, check, errors = [], [], {f"gauss/{m}": [] for m in eq_steps}
    for prompt, target in queries:
        ref = reference_attributions(model, tok, prompt, target, kind, REFERENCE_STEPS, batch_size)
        coarse = reference_attributions(model, tok, prompt, target, kind, REFERENCE_CHECK_STEPS, batch_size)
        refs.append(ref.tolist())
        check.append(rel_l2(coarse, ref))
        for m in eq_steps:
            a = neuron_attributions(model, tok, prompt, target, **easyedit_convention(kind, m, "gauss", batch_size))
            errors[f"gauss/{m}"].append(rel_l2(a.attributions, ref))
    queue.put(dict(refs=refs, check=check, errors=errors, queries=queries))


def equal_accuracy(acc: dict, ee_scores: Sequence) -> dict:
    """EasyEdit's per-prompt errors against the reference and our cheapest rule at least as
    accurate on every prompt (``rule`` None if no rule of the set is)."""
    ee_err = [rel_l2(torch.tensor(s), torch.tensor(r)) for s, r in zip(ee_scores, acc["refs"])]
    cost = {rule: int(rule.split("/")[1]) for rule in acc["errors"]}
    rule = select_equal_accuracy(acc["errors"], ee_err, cost)
    return dict(rule=rule, ee_err=ee_err, err=acc["errors"][rule] if rule else None)


def make_tokenizer_dir(kind: str) -> str:
    """The benchmark tokenizer of ``kind``, trained once and saved: every process sees the same ids."""
    import tempfile

    tok_dir = tempfile.mkdtemp(prefix="amig-bench-tok-")
    build_tokenizer(kind).save_pretrained(tok_dir)
    return tok_dir


def accuracy(kind: str, tok_dir: str, n_prompts: int, threads: int, min_tokens: int = 0,
             eq_steps: Sequence[int] = EQ_STEPS, batch_size: int = DEFAULT_IG_BATCH_SIZE) -> dict:
    """The reference and our rules' errors (one untimed subprocess); see the module docstring."""
    acc = _isolated(_accuracy_pass, kind, tok_dir, n_prompts, threads, min_tokens, tuple(eq_steps), batch_size)
    print(f"[{kind}] reference: Gauss-Legendre {REFERENCE_STEPS} points in EasyEdit's convention (site "
          f"{easyedit_site(kind)}, zero baseline, P(target)); vs {REFERENCE_CHECK_STEPS} points: relative L2 "
          f"difference {max(acc['check']):.1e} (worst prompt)")
    print("  our errors (relative L2 over all layers, worst prompt): "
          + "  ".join(f"{rule} {max(errs):.1e}" for rule, errs in acc["errors"].items()))
    return acc


def fastest_per_prompt(passes: Sequence[dict]) -> dict:
    """One engine's timed passes (fresh processes, the same prompts in the same order) -> the
    first pass with ``times`` replaced by each prompt's fastest time over the passes and
    ``peak_rss_mb``/``extra_rss_mb`` by their largest. A burst of load on a shared machine
    slows a few prompts of one pass; the per-prompt minimum drops those, where the fastest
    whole pass keeps every burst it happened to contain."""
    if not passes:
        raise ValueError("no timed pass to take the fastest times from")
    first = passes[0]
    if any(p["queries"] != first["queries"] or len(p["times"]) != len(first["times"]) for p in passes):
        raise RuntimeError("the timed passes of one engine drew different prompts")
    out = dict(first)
    out["times"] = [min(p["times"][i] for p in passes) for i in range(len(first["times"]))]
    out["peak_rss_mb"] = max(p["peak_rss_mb"] for p in passes)
    out["extra_rss_mb"] = max(p["extra_rss_mb"] for p in passes)
    return out


def compare(kind: str, n_prompts: int, steps: int, threads: int, ee_batch: int, our_batch: int, repeats: int,
            min_tokens: int = 0, warmup: bool = True, other: str = "easyedit", quadrature: str = "linspace",
            tok_dir: str | None = None, acc: dict | None = None) -> dict:
    """Alternate EasyEdit and ours ``repeats`` times (fresh processes); keep each prompt's
    fastest time per engine (:func:`fastest_per_prompt`), so a burst of load on the shared
    machine hurts neither side. With ``acc`` (from
    :func:`accuracy`, EasyEdit mode): our cheapest rule at EasyEdit's accuracy is chosen from
    EasyEdit's first pass and timed in every round too (a third process per round)."""
    tok_dir = tok_dir or make_tokenizer_dir(kind)
    runs = {other: [], "ours": [], "eq": []}
    eq = None
    for _ in range(repeats):
        runs[other].append(run_isolated(other, kind, tok_dir, n_prompts, steps, ee_batch, threads, min_tokens,
                                        warmup, quadrature))
        runs["ours"].append(run_isolated("ours", kind, tok_dir, n_prompts, steps, our_batch, threads, min_tokens, warmup,
                                         quadrature))
        if acc is not None:
            if acc["queries"] != runs[other][0]["queries"]:
                raise RuntimeError("the accuracy pass and the timed passes drew different prompts")
            eq = eq or equal_accuracy(acc, runs[other][0]["scores"])
            if eq["rule"] is not None:
                m = int(eq["rule"].split("/")[1])
                runs["eq"].append(run_isolated("ours", kind, tok_dir, n_prompts, m, our_batch, threads, min_tokens,
                                               warmup, "gauss", site=easyedit_site(kind)))
    ee, ours = fastest_per_prompt(runs[other]), fastest_per_prompt(runs["ours"])
    rel = []
    for a, b in zip(ours["scores"], ee["scores"]):
        a, b = torch.tensor(a), torch.tensor(b)
        rel.append(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)))
    t_ee, t_ours = sum(ee["times"]), sum(ours["times"])
    print(f"[{kind}] {len(ours['times'])} prompts, m={steps}, all {MASKED['layers'] if kind == 'masked' else CAUSAL['layers']} layers, "
          f"{threads} threads, rule {quadrature}")
    print(f"  {other + (' KN' if other == 'easyedit' else ' LIG'):12s}: {t_ee / len(ee['times']):7.2f} s/prompt  peak RSS {ee['peak_rss_mb']:.0f} MB "
          f"(+{ee['extra_rss_mb']:.0f} MB over the loaded model)  batch_size={ee_batch if other == 'easyedit' else our_batch}")
    print(f"  amig-plugin : {t_ours / len(ours['times']):7.2f} s/prompt  peak RSS {ours['peak_rss_mb']:.0f} MB "
          f"(+{ours['extra_rss_mb']:.0f} MB over the loaded model)  ig_batch_size={our_batch}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    lengths = [len(tok(q[0])["input_ids"]) for q in ours["queries"]]
    print(f"  speedup {t_ee / t_ours:.1f}x (each prompt's fastest of {repeats} alternating passes per engine"
          f"{', after one untimed warm-up call each' if warmup else ''}; prompts of "
          f"{min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.1f})   "
          f"max relative difference of attributions {max(rel):.2e}")
    out = dict(speedup=t_ee / t_ours, max_rel_diff=max(rel), easyedit=ee, ours=ours)
    if eq is not None:
        out.update(eq_rule=eq["rule"], ee_err=max(eq["ee_err"]), eq_err=max(eq["err"]) if eq["err"] else None,
                   ref_check=max(acc["check"]), eq_speedup=None)
        print(f"  EasyEdit's error against the reference (relative L2, worst prompt): {max(eq['ee_err']):.2e}")
        if eq["rule"] is None:
            print(f"  no rule of {list(acc['errors'])} reaches EasyEdit's error on every prompt")
        else:
            best = fastest_per_prompt(runs["eq"])
            t_eq = sum(best["times"])
            out["eq_speedup"] = t_ee / t_eq
            print(f"  amig-plugin at equal accuracy, {eq['rule']} (error {max(eq['err']):.2e}): "
                  f"{t_eq / len(best['times']):7.2f} s/prompt  speedup {t_ee / t_eq:.1f}x")
        if max(acc["check"]) > 1e-2 * max(eq["ee_err"]):
            print(f"  WARNING: the reference moves by {max(acc['check']):.1e} between {REFERENCE_CHECK_STEPS} and "
                  f"{REFERENCE_STEPS} points, not far below EasyEdit's error: the equal-accuracy choice is not reliable")
    return out


def gemma_seconds_per_fact(threads: int, naive: bool, repeats: int = 3) -> None:
    """Seconds per fact on Gemma-3-270M: after one untimed warm-up call, the fastest of
    ``repeats`` calls per language, method and rule (one-shot timings of a shared machine
    swing by 50 %)."""
    from amig_plugin.attribution import attribute_query
    from amig_plugin.data import shipped_facts
    from amig_plugin.loading import load_model
    from amig_plugin.models import get_family

    torch.set_num_threads(threads)
    model, tok = load_model("gemma-3-270m")
    family = get_family(model)
    fact = shipped_facts()[0]
    warm = family.encode(tok, fact.prompts["en"][0], fact.object["en"])
    attribute_query(family, warm, tok, method="amig", steps=DEFAULT_STEPS, quadrature=DEFAULT_QUADRATURE)  # warm-up
    print(f"[gemma-3-270m] fastest of {repeats} calls each, after one untimed warm-up call, {threads} threads")
    for lang in ("en", "zh"):
        query = family.encode(tok, fact.prompts[lang][0], fact.object[lang])
        rules = [("midpoint", 20), ("gauss", 12), (DEFAULT_QUADRATURE, DEFAULT_STEPS), ("steep", 24), ("steep", 42)]
        for method in ("amig", "kn"):
            for rule, steps in dict.fromkeys(rules):
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    r = attribute_query(family, query, tok, method=method, steps=steps, quadrature=rule)
                    times.append(time.perf_counter() - t0)
                dt = min(times)
                print(f"[gemma-3-270m] {lang} {fact.prompts[lang][0]!r} -> {fact.object[lang]!r} ({len(query.input_ids)} "
                      f"tokens): {method} all {family.num_layers} layers, {rule}/{steps}: {dt:.2f} s/fact; "
                      f"{r.points_per_layer:.1f} points per layer; "
                      f"F(a)={r.score:.3g}, worst layer's relative completeness residual {r.relative_residual:.2g}"
                      f"{'' if r.converged else ' (UNCONVERGED)'}")
    if naive:
        query = family.encode(tok, fact.prompts["en"][0], fact.object["en"])
        t0 = time.perf_counter()
        for layer in range(family.num_layers):  # the naive loop: one layer at a time, whole prompt
            attribute_query(family, query, tok, method="kn", steps=8, layers=[layer], strategy="full", ig_batch_size=8)
        naive_dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        attribute_query(family, query, tok, method="kn", steps=8)
        fast_dt = time.perf_counter() - t0
        print(f"[gemma-3-270m] naive per-layer loop, 8 steps: {naive_dt:.1f} s; our engine, 8 steps: {fast_dt:.1f} s "
              f"({naive_dt / fast_dt:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 prompts per model, 1 alternating pass (the equal-accuracy reference, "
                    "256 + 128 Gauss-Legendre points per prompt, is most of its time; --no-equal-accuracy skips it)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per model (default 6, quick 2)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--easyedit-batch-size", type=int, default=20, help="EasyEdit's batch_size (must divide steps)")
    ap.add_argument("--ig-batch-size", type=int, default=DEFAULT_IG_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=None, help="alternating passes per engine, each prompt timed by its fastest (default 3, quick 1); with --gemma: calls per rule, "
                    "the fastest counts (default 3, quick 1)")
    ap.add_argument("--min-prompt-tokens", type=int, default=0,
                    help="only prompts of at least this many tokens (how the speedup grows with prompt length)")
    ap.add_argument("--kinds", default="causal,masked", help="which models: causal, masked or both")
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first call too (by default each engine makes one untimed call first)")
    ap.add_argument("--captum", action="store_true",
                    help="compare with Captum's LayerIntegratedGradients (midpoint rule, our internal batch size) "
                         "instead of EasyEdit's KN")
    ap.add_argument("--gemma", action="store_true", help="also time one real fact on Gemma-3-270M")
    ap.add_argument("--gemma-naive", action="store_true", help="with --gemma: also the naive per-layer loop (8 steps)")
    ap.add_argument("--gemma-only", action="store_true", help="only the Gemma-3-270M timing (implies --gemma)")
    ap.add_argument("--runs", type=int, default=1,
                    help="repeat the whole timed comparison K times (EasyEdit mode): each run's ratios, then min/median")
    ap.add_argument("--eq-steps", default=",".join(map(str, EQ_STEPS)),
                    help="Gauss-Legendre path points tried for our rule at EasyEdit's accuracy (comma-separated)")
    ap.add_argument("--no-equal-accuracy", action="store_true",
                    help="skip the reference and the equal-accuracy timing (EasyEdit mode)")
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error(f"--runs takes a positive integer, got {args.runs}")
    try:
        eq_steps = tuple(sorted({int(x) for x in args.eq_steps.split(",") if x.strip()}))
    except ValueError:
        ap.error(f"--eq-steps takes comma-separated integers >= 2, got {args.eq_steps!r}")
    if not eq_steps or min(eq_steps) < 2:
        ap.error(f"--eq-steps takes comma-separated integers >= 2, got {args.eq_steps!r}")
    gemma_repeats = args.repeats or (1 if args.quick else 3)
    if args.gemma_only:
        gemma_seconds_per_fact(args.threads, args.gemma_naive, gemma_repeats)
        return
    n = args.prompts or (2 if args.quick else 6)
    print(f"prompts from {benchmark_facts()[1]}; tokenizers trained in code on those sentences")
    results = {}
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"causal", "masked"}:
        ap.error(f"--kinds takes causal, masked or both, got {args.kinds!r}")
    other, rule = ("captum", "midpoint") if args.captum else ("easyedit", "linspace")
    tok_dirs = {kind: make_tokenizer_dir(kind) for kind in kinds}
    accs = {}
    if not args.captum and not args.no_equal_accuracy:
        for kind in kinds:
            accs[kind] = accuracy(kind, tok_dirs[kind], n, args.threads, args.min_prompt_tokens, eq_steps,
                                  args.ig_batch_size)
    all_runs = []
    for run in range(args.runs):
        if args.runs > 1:
            print(f"--- run {run + 1} of {args.runs}")
        results = {}
        for kind in kinds:
            results[kind] = compare(kind, n, args.steps, args.threads,
                                    args.ig_batch_size if args.captum else args.easyedit_batch_size, args.ig_batch_size,
                                    args.repeats or (1 if args.quick else 3), args.min_prompt_tokens, not args.no_warmup,
                                    other, rule, tok_dir=tok_dirs[kind], acc=accs.get(kind))
        all_runs.append(results)
        if args.runs > 1:
            print(f"run {run + 1}: {_ratios(results, kinds)}")
    if args.gemma:
        gemma_seconds_per_fact(args.threads, args.gemma_naive, gemma_repeats)
    if args.json:
        keep = ("speedup", "max_rel_diff", "eq_speedup", "eq_rule", "eq_err", "ee_err", "ref_check")
        with open(args.json, "w") as f:
            json.dump([{k: {kk: vv for kk, vv in v.items() if kk in keep} for k, v in r.items()} for r in all_runs], f)
    print(final_line(all_runs, kinds, "captum" if args.captum else "easyedit_kn"))


def _ratios(results: dict, kinds: Sequence[str]) -> str:
    parts = [f"{k}={results[k]['speedup']:.1f}" for k in kinds]
    parts += [f"equal_accuracy_{k}={results[k]['eq_speedup']:.1f}" for k in kinds if results[k].get("eq_speedup")]
    return " ".join(parts)


def final_line(all_runs: Sequence[dict], kinds: Sequence[str], name: str) -> str:
    """``speedup_vs_<name>: causal=<x> masked=<y> max_rel_diff=<d>`` then, in EasyEdit mode,
    ``equal_accuracy_<kind>=<x> (<rule> err <e> vs easyedit err <e>)``; over several runs the
    ratios are medians, followed by ``runs=K`` and each ratio's minimum."""
    med = lambda key, kind: statistics.median(r[kind][key] for r in all_runs)  # noqa: E731
    ok = lambda key, kind: all(r[kind].get(key) is not None for r in all_runs)  # noqa: E731
    d = max(r[k]["max_rel_diff"] for r in all_runs for k in kinds)
    fields = [f"{k}={med('speedup', k):.1f}" for k in ("causal", "masked") if k in kinds] + [f"max_rel_diff={d:.1e}"]
    for k in ("causal", "masked"):
        if k not in kinds or "eq_rule" not in all_runs[0][k]:
            continue
        last = all_runs[0][k]
        if not ok("eq_speedup", k):
            fields.append(f"equal_accuracy_{k}=none (no rule reaches easyedit err {last['ee_err']:.1e})")
        else:
            fields.append(f"equal_accuracy_{k}={med('eq_speedup', k):.1f} ({last['eq_rule']} err {last['eq_err']:.1e} "
                          f"vs easyedit err {last['ee_err']:.1e})")
    if len(all_runs) > 1:
        fields.append(f"runs={len(all_runs)}")
        for k in ("causal", "masked"):
            if k in kinds:
                fields.append(f"min_{k}={min(r[k]['speedup'] for r in all_runs):.1f}")
                if ok("eq_speedup", k) and "eq_rule" in all_runs[0][k]:
                    fields.append(f"min_equal_accuracy_{k}={min(r[k]['eq_speedup'] for r in all_runs):.1f}")
    return f"speedup_vs_{name}: " + " ".join(fields)


if __name__ == "__main__":
    main()
