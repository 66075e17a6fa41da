"""Seconds per fact for degenerate-pair detection: batched vs one by one, same facts.

For each fact: its top-k AMIG neurons (k = 20, localized through the shared cache, the
localization is NOT timed), then the 1 + k + k(k−1)/2 = 211 suppressed forwards three ways:

* ``batched``    :func:`amig_plugin.dkn.detect_degenerate` (rows batched, the clean
                 key/value cache of the prompt reused: each row recomputes the target column);
* ``one_by_one`` :func:`amig_plugin.dkn.detect_degenerate_loop`, one whole-model forward per
                 suppression (the paper's loop);
* ``engine_b1``  the batched code with batch size 1 (the key/value-cache reuse without the
                 batching), to show where the time goes.

All three must give the same pairs. Ends with one line:

    dkn_detection: facts=<n> k=<k> forwards_per_fact=<f> batched=<s> s/fact one_by_one=<s> s/fact speedup=<x> pairs_equal=<bool>

Default: the embedded Gemma-3-270M on BMLAMA facts (``--data``); ``--tiny`` runs a tiny GPT-2
built in code (no model download, for a quick check of the harness).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bmlama17"


def _tiny():
    from amig_plugin.testing import tiny_sharp

    return tiny_sharp("gpt2", layers=4, width=64, ffn=256)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or folder (default: the embedded Gemma-3-270M)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="BMLAMA folder, .jsonl fact file or 'shipped'")
    ap.add_argument("--lang", default="en,zh", help="languages (comma list); facts are split evenly over them")
    ap.add_argument("--facts", type=int, default=6, help="facts in all (default 6)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a tiny GPT-2 built in code instead of Gemma")
    ap.add_argument("--no-b1", action="store_true", help="skip the batch-size-1 variant")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from amig_plugin.commands.dkn import load_pool
    from amig_plugin.data import sample_facts
    from amig_plugin.dkn import detect_degenerate, detect_degenerate_loop, top_neurons_for
    from amig_plugin.localization import localize_fact

    langs = [l.strip() for l in args.lang.split(",") if l.strip()]
    if args.tiny:
        model, tok = _tiny()
        cases = []
        g = torch.Generator().manual_seed(0)
        for i in range(args.facts):
            idx = torch.randperm(4 * 256, generator=g)[: args.k].tolist()
            cases.append((f"tiny-{i}", "en", ["the capital of france is <mask>"], "paris", [(j // 256, j % 256) for j in idx]))
        model_name = "tiny-gpt2 (4 layers, ffn 256)"
    else:
        from amig_plugin.loading import load_model

        model, tok = load_model(args.model) if args.model else load_model()
        model_name = args.model or "gemma-3-270m (embedded)"
        pool = load_pool(args.data, langs)
        facts = sample_facts(pool, args.facts, seed=0)
        cases = []
        for i, fact in enumerate(facts):
            lang = langs[i % len(langs)]
            kn = localize_fact(model, tok, fact, lang, cache=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                neurons, _ = top_neurons_for(kn, args.k)
            cases.append((fact.id, lang, list(fact.prompts[lang]), fact.target(lang), neurons))

    rows = []
    # warm-up (allocator, first-call overheads) on the first case, not timed
    fid, lang, prompts, target, neurons = cases[0]
    detect_degenerate(model, tok, prompts, target, neurons[:4], batch_size=args.batch_size)
    detect_degenerate_loop(model, tok, prompts, target, neurons[:4])
    for fid, lang, prompts, target, neurons in cases:
        t0 = time.perf_counter()
        b = detect_degenerate(model, tok, prompts, target, neurons, batch_size=args.batch_size)
        tb = time.perf_counter() - t0
        t0 = time.perf_counter()
        o = detect_degenerate_loop(model, tok, prompts, target, neurons)
        to = time.perf_counter() - t0
        t1 = float("nan")
        if not args.no_b1:
            t0 = time.perf_counter()
            one = detect_degenerate(model, tok, prompts, target, neurons, batch_size=1)
            t1 = time.perf_counter() - t0
            assert one.pairs == b.pairs
        max_rel = max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip([b.p0] + b.p_single + b.p_pair,
                                                                     [o.p0] + o.p_single + o.p_pair))
        rows.append(dict(fact=fid, lang=lang, target=target, k=len(neurons), forwards=b.forwards, batched_s=tb,
                         one_by_one_s=to, engine_b1_s=t1, pairs_batched=len(b.pairs), pairs_loop=len(o.pairs),
                         pairs_equal=b.pairs == o.pairs, max_rel_diff=max_rel, p0=b.p0))
        print(f"{fid} [{lang}] {target!r}: batched {tb:.2f} s, one-by-one {to:.2f} s, engine b=1 {t1:.2f} s; "
              f"pairs {len(b.pairs)} vs {len(o.pairs)}, max rel diff {max_rel:.1e}", flush=True)

    n = len(rows)
    tb = sum(r["batched_s"] for r in rows) / n
    to = sum(r["one_by_one_s"] for r in rows) / n
    t1 = sum(r["engine_b1_s"] for r in rows) / n
    equal = all(r["pairs_equal"] for r in rows)
    summary = dict(model=model_name, facts=n, k=args.k, threads=args.threads, batch_size=args.batch_size,
                   batched_s_per_fact=tb, one_by_one_s_per_fact=to, engine_b1_s_per_fact=t1, speedup=to / tb,
                   pairs_equal=equal, rows=rows)
    print(f"\nmodel: {model_name}; {args.threads} threads; engine with batch size 1: {t1:.2f} s/fact")
    print(f"dkn_detection: facts={n} k={args.k} forwards_per_fact={rows[0]['forwards']} batched={tb:.2f} s/fact "
          f"one_by_one={to:.2f} s/fact speedup={to / tb:.1f}x pairs_equal={equal}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
