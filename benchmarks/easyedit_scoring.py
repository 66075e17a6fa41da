"""Seconds per request for EasyEdit's metrics: one forward per prompt vs one batched forward.

EasyEdit's ``compute_edit_quality`` teacher-forces every prompt of a request in its own
forward (rewrite, rephrase, and each locality and portability key: 24 forwards for an MzsRE
request scored in 6 languages). :mod:`amig_plugin.easyedit.teacher_forcing` runs them as one
right-padded batch with the LM head on the target positions only. Both runs here use
EasyEdit's own ``compute_edit_quality`` (the installed ``easyeditor``: put GitHub main first
on the import path to measure it) with the same CJK rule; they must give the same metrics.

Requests: MzsRE (``--data``, English requests with their ``--langs`` versions as portability
and locality keys, the model's greedy answer as ground truth), built as ``amig compare``
builds them. Alternating passes; the fastest of ``--repeats`` per variant is reported. Ends
with one line:

    easyedit_scoring: requests=<n> prompts_per_request=<p> per_prompt=<s> s/request batched=<s> s/request speedup=<x> equal=<k>/<n>
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mzsre"


def _requests(model, tok, data: str, langs: list, n: int, seed: int) -> list:
    from amig_plugin.data.edits import load_requests, with_model_ground_truth
    from amig_plugin.easyedit.compare import edit_arguments

    utils = importlib.import_module("easyeditor.editors.utils")
    loaded = with_model_ground_truth(load_requests(data, None, lang=langs[0], seed=seed, limit=n, langs=langs),
                                     model, tok)
    out = []
    for request in loaded:
        if not request.ground_truth:
            continue
        kwargs = edit_arguments([request.to_easyedit(None, langs[1:])])
        out += utils._prepare_requests(**kwargs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or folder (default: the embedded Gemma-3-270M)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="MzsRE folder (en-xx.json files)")
    ap.add_argument("--langs", default="en,zh,fr,es,ru,th")
    ap.add_argument("--n", type=int, default=8, help="requests (default 8)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"error: MzsRE folder not found: {args.data} (give --data)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    from amig_plugin.easyedit.compat import cuda_to_cpu, easyedit_flavour, import_easyeditor
    from amig_plugin.easyedit.teacher_forcing import prediction_acc, prefetching_edit_quality, record_pairs
    from amig_plugin.loading import DEFAULT_MODEL, load_model

    import_easyeditor()
    model, tok = load_model(args.model or DEFAULT_MODEL)
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    requests = _requests(model, tok, args.data, langs, args.n, args.seed)
    evaluate = importlib.import_module("easyeditor.evaluate.evaluate")
    plain_compute = evaluate.compute_edit_quality
    batched_compute = prefetching_edit_quality(plain_compute)

    class HParams:  # what compute_edit_quality reads
        alg_name = "ROME"
        max_length = 40

    variants = {"per_prompt": plain_compute, "batched": batched_compute}
    seconds = {name: [] for name in variants}
    results = {}
    plain_acc = evaluate.test_prediction_acc
    evaluate.test_prediction_acc = prediction_acc(plain_acc)
    try:
        with cuda_to_cpu(True), torch.no_grad():
            for _ in range(args.repeats):
                for name, compute in variants.items():
                    start = time.perf_counter()
                    results[name] = [compute(model, "gemma", HParams, tok, copy.deepcopy(r), 0) for r in requests]
                    seconds[name].append((time.perf_counter() - start) / len(requests))
    finally:
        evaluate.test_prediction_acc = plain_acc

    def text(metrics):
        return json.dumps(metrics, sort_keys=True, default=str)

    equal = sum(text(a) == text(b) for a, b in zip(results["per_prompt"], results["batched"]))
    prompts = sum(len(record_pairs(r)) for r in requests) / max(len(requests), 1)
    best = {name: min(v) for name, v in seconds.items()}
    print(f"{len(requests)} MzsRE requests scored in {','.join(langs)}; easyeditor {easyedit_flavour()}; "
          f"{args.threads} threads; fastest of {args.repeats} alternating passes", file=sys.stderr)
    line = (f"easyedit_scoring: requests={len(requests)} prompts_per_request={prompts:.1f} "
            f"per_prompt={best['per_prompt']:.2f} s/request batched={best['batched']:.2f} s/request "
            f"speedup={best['per_prompt'] / best['batched']:.1f}x equal={equal}/{len(requests)}")
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": seconds, "equal": equal, "requests": len(requests),
                                               "langs": langs, "line": line}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
