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
time it too), and the two alternate ``--repeats`` times (each side's fastest pass counts, so
a burst of load on a shared machine hurts neither). Ends with one line:

    speedup_vs_easyedit_kn: causal=<x> masked=<y> max_rel_diff=<d>

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
import sys
import time
from pathlib import Path

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
                min_tokens: int, warmup: bool, queue, quadrature: str = "linspace") -> None:
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

        site = "ffn_pre_activation" if kind == "causal" and quadrature == "linspace" else "ffn_hidden"
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


def run_isolated(*args) -> dict:
    *args, quadrature = args
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_engine, args=(*args, queue, quadrature))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def compare(kind: str, n_prompts: int, steps: int, threads: int, ee_batch: int, our_batch: int, repeats: int,
            min_tokens: int = 0, warmup: bool = True, other: str = "easyedit", quadrature: str = "linspace") -> dict:
    """Alternate EasyEdit and ours ``repeats`` times (fresh processes); keep each one's fastest
    pass, so a burst of load on the shared machine hurts neither side."""
    import tempfile

    tok_dir = tempfile.mkdtemp(prefix="amig-bench-tok-")
    build_tokenizer(kind).save_pretrained(tok_dir)  # trained once: both engines see the same ids
    runs = {other: [], "ours": []}
    for _ in range(repeats):
        runs[other].append(run_isolated(other, kind, tok_dir, n_prompts, steps, ee_batch, threads, min_tokens,
                                        warmup, quadrature))
        runs["ours"].append(run_isolated("ours", kind, tok_dir, n_prompts, steps, our_batch, threads, min_tokens, warmup,
                                         quadrature))
    ee = min(runs[other], key=lambda r: sum(r["times"]))
    ours = min(runs["ours"], key=lambda r: sum(r["times"]))
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
    print(f"  speedup {t_ee / t_ours:.1f}x (fastest of {repeats} alternating passes each"
          f"{', after one untimed warm-up call each' if warmup else ''}; prompts of "
          f"{min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.1f})   "
          f"max relative difference of attributions {max(rel):.2e}")
    return dict(speedup=t_ee / t_ours, max_rel_diff=max(rel), easyedit=ee, ours=ours)


def gemma_seconds_per_fact(threads: int, naive: bool) -> None:
    from amig_plugin.attribution import attribute_query
    from amig_plugin.data import shipped_facts
    from amig_plugin.loading import load_model
    from amig_plugin.models import get_family

    torch.set_num_threads(threads)
    model, tok = load_model("gemma-3-270m")
    family = get_family(model)
    fact = shipped_facts()[0]
    for lang in ("en", "zh"):
        query = family.encode(tok, fact.prompts[lang][0], fact.object[lang])
        rules = [("midpoint", 20), (DEFAULT_QUADRATURE, DEFAULT_STEPS), ("steep", 24), ("steep", 42)]
        for method in ("amig", "kn"):
            for rule, steps in dict.fromkeys(rules):
                t0 = time.perf_counter()
                r = attribute_query(family, query, tok, method=method, steps=steps, quadrature=rule)
                dt = time.perf_counter() - t0
                print(f"[gemma-3-270m] {lang} {fact.prompts[lang][0]!r} -> {fact.object[lang]!r} ({len(query.input_ids)} "
                      f"tokens): {method} all {family.num_layers} layers, {rule}/{steps}: {dt:.1f} s/fact; "
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
    ap.add_argument("--quick", action="store_true", help="2 prompts per model (finishes within 5 minutes on 2 cores)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per model (default 6, quick 2)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--easyedit-batch-size", type=int, default=20, help="EasyEdit's batch_size (must divide steps)")
    ap.add_argument("--ig-batch-size", type=int, default=DEFAULT_IG_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=None, help="alternating passes per engine (default 2, quick 1)")
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
    ap.add_argument("--json", default=None, help="write all numbers here")
    args = ap.parse_args()
    if args.gemma_only:
        gemma_seconds_per_fact(args.threads, args.gemma_naive)
        return
    n = args.prompts or (2 if args.quick else 6)
    print(f"prompts from {benchmark_facts()[1]}; tokenizers trained in code on those sentences")
    results = {}
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"causal", "masked"}:
        ap.error(f"--kinds takes causal, masked or both, got {args.kinds!r}")
    other, rule = ("captum", "midpoint") if args.captum else ("easyedit", "linspace")
    for kind in kinds:
        results[kind] = compare(kind, n, args.steps, args.threads,
                                args.ig_batch_size if args.captum else args.easyedit_batch_size, args.ig_batch_size,
                                args.repeats or (1 if args.quick else 2), args.min_prompt_tokens, not args.no_warmup,
                                other, rule)
    if args.gemma:
        gemma_seconds_per_fact(args.threads, args.gemma_naive)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: {kk: vv for kk, vv in v.items() if kk in ("speedup", "max_rel_diff")} for k, v in results.items()}, f)
    d = max(r["max_rel_diff"] for r in results.values())
    speeds = " ".join(f"{k}={results[k]['speedup']:.1f}" for k in ("causal", "masked") if k in results)
    print(f"speedup_vs_{'captum' if args.captum else 'easyedit_kn'}: {speeds} max_rel_diff={d:.1e}")


if __name__ == "__main__":
    main()
