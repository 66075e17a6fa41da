"""Run by tests/test_easyedit_github_main.py in a subprocess whose import path starts with
EasyEdit's GitHub main snapshot: exercises the plugin against the real main and prints one
JSON object (the last line of stdout) for the test to check.

    python tests/easyedit_main_probe.py MODEL_DIR WORK_DIR

MODEL_DIR: a tiny byte-level GPT-2 saved by ``train_tiny_gpt2`` (its name contains "gpt", so
main's BaseEditor loads it by name); WORK_DIR: the working directory (EasyEdit's files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import textwrap

import torch

torch.set_num_threads(1)

MODEL_DIR, WORK_DIR = sys.argv[1], sys.argv[2]
os.chdir(WORK_DIR)
OUT: dict = {}


def checksum(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def changed(a: dict, b: dict) -> list:
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def restore(model, state: dict) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(state[k])


# -- 1. registration -------------------------------------------------------------------
import amig_plugin  # noqa: E402
from amig_plugin.easyedit import compat  # noqa: E402

first = amig_plugin.register()
second = amig_plugin.register()
import easyeditor  # noqa: E402  (the one register() imported)
from easyeditor import BaseEditor  # noqa: E402

table = compat.alg_dict()
OUT["register"] = {
    "easyeditor_file": easyeditor.__file__, "flavour": compat.easyedit_flavour(), "first": first,
    "second": second, "AMIG": getattr(table.get("AMIG"), "__name__", None),
    "LIKN": getattr(table.get("LIKN"), "__name__", None),
    "removed_placeholders": list(compat.removed_placeholders()),
    "removed_left": [n for n in compat.removed_placeholders() if n in sys.modules],
}
import transformers  # noqa: E402

OUT["register"]["attr_left"] = hasattr(transformers, "modeling_attn_mask_utils") and isinstance(
    transformers.__dict__.get("modeling_attn_mask_utils"), compat._PlaceholderModule)

from amig_plugin.easyedit.evaluate import summarize  # noqa: E402
from amig_plugin.easyedit.methods.amig import AMIGHyperParams  # noqa: E402
from amig_plugin.easyedit.methods.likn import LIKNHyperParams  # noqa: E402

utils = __import__("easyeditor.editors.utils", fromlist=["x"])


def main_means(metrics) -> dict:
    """GitHub main's own averages (the helpers of its summary_metrics)."""
    import numpy as np

    out = {}
    for phase in ("pre", "post"):
        for key in ("rewrite_acc", "rephrase_acc"):
            values = utils.collect_metric_values(metrics, phase, key)
            if values:
                out[f"{phase}.{key}"] = float(np.mean(values))
        for section in ("locality", "portability"):
            for lkey in utils.get_section_acc_keys(metrics, phase, section):
                vals = [float(np.mean(m[phase][section][lkey])) for m in metrics if lkey in m.get(phase, {}).get(section, {})]
                out[f"{phase}.{section}.{lkey}"] = float(np.mean(vals))
    return out


def our_means(metrics) -> dict:
    s = summarize(metrics)
    return {f"{phase}.{k}": v for phase in ("pre", "post") for k, v in s[phase].items()}


PROMPTS = ["The capital of France is", "The capital of Germany is"]
EDIT = dict(prompts=PROMPTS, ground_truth=["Paris", "Berlin"], target_new=["Rome", "Tokyo"],
            subject=["France", "Germany"], rephrase_prompts=["France's capital is", "Germany's capital is"],
            locality_inputs={"neighbour": {"prompt": ["The capital of Spain is", "The capital of Japan is"],
                                           "ground_truth": ["Madrid", "Tokyo"]}},
            portability_inputs={"city": {"prompt": ["Paris is a city in", "Berlin is a city in"],
                                         "ground_truth": ["France", "Germany"]}},
            verbose=False)

# -- 2. plain BaseEditor: main loads the model by name, device 0 falls back to CPU --------
err = io.StringIO()
amig_hp = AMIGHyperParams(alg_name="AMIG", model_name=MODEL_DIR, device=0, steps=6, ig_batch_size=64,
                          max_neurons=4)
with contextlib.redirect_stderr(err), compat.quiet_easyeditor_logging():
    editor = BaseEditor.from_hparams(amig_hp)
OUT["cpu_fallback"] = {"stderr": [l for l in err.getvalue().splitlines() if "amig_plugin" in l],
                       "device": str(amig_hp.device), "model_device": str(next(editor.model.parameters()).device)}
model = editor.model
original = snapshot(model)
c0 = checksum(model)


def run(editor, **kw):
    with compat.quiet_easyeditor_logging():
        return editor.edit(**EDIT, **kw)


def amig_like(editor, name):
    res = {"c0": checksum(editor.model)}
    metrics, edited, wc = run(editor, sequential_edit=False)
    res["independent_after"] = checksum(editor.model)
    res["ours_vs_main"] = [our_means(metrics), main_means(metrics)]
    res["summary"] = summarize(metrics)
    res["post_rewrite"] = [m["post"]["rewrite_acc"] for m in metrics]
    res["pre_rewrite"] = [m["pre"]["rewrite_acc"] for m in metrics]
    # sequential: request 1 alone, then both from the start; edits accumulate
    before = snapshot(editor.model)
    with compat.quiet_easyeditor_logging():
        editor.edit(**{k: (v[:1] if isinstance(v, list) else v) for k, v in EDIT.items()
                       if k not in ("locality_inputs", "portability_inputs")}, sequential_edit=True)
    one = snapshot(editor.model)
    res["seq_one"] = checksum(editor.model)
    restore(editor.model, before)
    run(editor, sequential_edit=True)
    both = snapshot(editor.model)
    res["seq_both"] = checksum(editor.model)
    first_rows = changed(before, one)
    res["seq_first_changed"] = first_rows
    res["seq_both_changed"] = changed(before, both)
    # the rows edit 1 changed are still changed after edit 2 (accumulated, not reset)
    res["first_edit_kept"] = all(
        bool(((one[k] != before[k]) <= (both[k] != before[k])).all()) for k in first_rows)
    restore(editor.model, before)
    res["restored"] = checksum(editor.model) == res["c0"]
    return res


OUT["AMIG"] = amig_like(editor, "AMIG")

# -- 3. LIKN through BaseEditor.edit_requests (request dicts carry the other language;
#       main's edit(requests=...) passes ``requests`` twice and fails in main itself) ------
likn_hp = LIKNHyperParams(alg_name="LIKN", model_name=MODEL_DIR, device=0, steps=6, ig_batch_size=64,
                          tau=0.05, max_neurons=4, languages=["en", "fr"])
with compat.quiet_easyeditor_logging():
    likn_editor = BaseEditor.from_hparams(likn_hp)
restore(likn_editor.model, original)


def likn_requests(n):
    pairs = [("France", "Paris", "Rome"), ("Germany", "Berlin", "Tokyo")][:n]
    return [{"prompt": f"The capital of {c} is", "ground_truth": g, "target_new": t, "subject": c, "lang": "en",
             "locality": {}, "portability": {},
             "multilingual": {"fr": {"prompt": f"{g} is a city in", "ground_truth": c, "target_new": "Italy"}}}
            for c, g, t in pairs]


likn = {"c0": checksum(likn_editor.model)}
with compat.quiet_easyeditor_logging():
    metrics, _, wc = likn_editor.edit_requests(likn_requests(2), sequential_edit=False, verbose=False)
likn["independent_after"] = checksum(likn_editor.model)
likn["edits"] = [len(e.get("neurons") or []) for e in getattr(wc, "edits", [])]
likn["weights_copy_keys"] = sorted(wc)
with compat.quiet_easyeditor_logging():
    likn_editor.edit_requests(likn_requests(2), sequential_edit=True, verbose=False)
likn["seq_after"] = checksum(likn_editor.model)
restore(likn_editor.model, original)
likn["restored"] = checksum(likn_editor.model) == likn["c0"]
OUT["LIKN"] = likn

# -- 4. main's own ROME and FT on the same model, through the compat runtime ----------
GPT2 = dict(rewrite_module_tmp="transformer.h.{}.mlp.c_proj", layer_module_tmp="transformer.h.{}",
            mlp_module_tmp="transformer.h.{}.mlp", attn_module_tmp="transformer.h.{}.attn",
            ln_f_module="transformer.ln_f", lm_head_module="transformer.wte")
rome_yaml = os.path.join(WORK_DIR, "rome.yaml")
with open(rome_yaml, "w") as f:
    f.write(textwrap.dedent(f"""\
        alg_name: ROME
        model_name: {MODEL_DIR}
        stats_dir: ./data/stats
        device: 0
        layers: [0]
        fact_token: subject_last
        v_num_grad_steps: 4
        v_lr: 5e-1
        v_loss_layer: 1
        v_weight_decay: 0.5
        clamp_norm_factor: 4
        kl_factor: 0.0625
        mom2_adjustment: false
        context_template_length_params: [[5, 5]]
        mom2_dataset: wikipedia
        mom2_n_samples: 100
        mom2_dtype: float32
        """) + "".join(f"{k}: '{v}'\n" for k, v in GPT2.items()))
ft_yaml = os.path.join(WORK_DIR, "ft.yaml")
with open(ft_yaml, "w") as f:
    f.write(textwrap.dedent(f"""\
        alg_name: FT
        model_name: {MODEL_DIR}
        device: 0
        layers: [1]
        num_steps: 3
        batch_size: 1
        lr: 5e-4
        weight_decay: 0
        kl_factor: 0
        norm_constraint: 5e-4
        """) + "".join(f"{k}: '{v}'\n" for k, v in GPT2.items()).replace(
            "transformer.h.{}.mlp.c_proj'", "transformer.h.{}.mlp.c_proj.weight'"))
from amig_plugin.easyedit.compare import load_method_hparams  # noqa: E402

from amig_plugin.easyedit import load_editor  # noqa: E402

for method, path in (("ROME", rome_yaml), ("FT", ft_yaml)):
    hp = load_method_hparams(method, path)
    ed = load_editor(hp, model=model, tokenizer=editor.tok)  # main's BaseEditor, in the compat runtime
    restore(model, original)
    with compat.easyedit_runtime():
        res = {"c0": checksum(model), "apply": f"{ed.apply_algo.__module__}.{ed.apply_algo.__name__}"}
        metrics, _, _ = ed.edit(**EDIT, sequential_edit=False)
        res["independent_after"] = checksum(model)
        res["post_rewrite"] = [float(sum(m["post"]["rewrite_acc"]) / len(m["post"]["rewrite_acc"])) for m in metrics]
        res["ours_vs_main"] = [our_means(metrics), main_means(metrics)]
        ed.edit(**EDIT, sequential_edit=True)
        res["seq_changed"] = changed(original, snapshot(model))
        res["seq_after"] = checksum(model)
        restore(model, original)
    OUT[method] = res

# -- 5. the project's own editor: load_editor, edit_requests, times --------------------
from amig_plugin.easyedit.editor import independent_edit_kwargs  # noqa: E402

own = load_editor(AMIGHyperParams(alg_name="AMIG", model_name=MODEL_DIR, device=0, steps=6, ig_batch_size=64,
                                  max_neurons=4), model=model, tokenizer=editor.tok)
c = checksum(model)
metrics, _, _ = own.edit(**EDIT, **independent_edit_kwargs())
reqs = [{"prompt": "The capital of Italy is", "ground_truth": "Rome", "target_new": "Paris", "subject": "Italy",
         "locality": {}, "portability": {}}]
metrics2, _, _ = own.edit_requests(reqs, sequential_edit=False, verbose=False)
OUT["load_editor"] = {"independent_kwargs": independent_edit_kwargs(), "restored": checksum(model) == c,
                      "summary": summarize(metrics), "edit_requests_time": metrics2[0].get("time"),
                      "edit_requests_post": metrics2[0]["post"]["rewrite_acc"]}

# -- 6. a name main cannot load: one sentence naming load_editor --------------------------
try:
    with compat.quiet_easyeditor_logging():
        BaseEditor.from_hparams(AMIGHyperParams(alg_name="AMIG", model_name="gemma-3-270m", device="cpu"))
    OUT["unsupported"] = None
except Exception as exc:  # noqa: BLE001
    OUT["unsupported"] = [type(exc).__name__, str(exc), [c.__name__ for c in type(exc).__mro__]]

# -- 7. `amig compare` (AMIG, ROME with local covariance statistics, FT) -------------------
from amig_plugin.cli import main as amig_main  # noqa: E402
from test_easyedit_compare import _yamls  # noqa: E402

import pathlib  # noqa: E402

_yamls(pathlib.Path(WORK_DIR) / "hp", os.path.basename(MODEL_DIR))
results = os.path.join(WORK_DIR, "compare.json")
captured = io.StringIO()
with contextlib.redirect_stdout(captured):
    rc = amig_main(["compare", "--model", MODEL_DIR, "--n", "2", "--methods", "AMIG,ROME,FT", "--hparams-dir",
                    os.path.join(WORK_DIR, "hp"), "--out", results, "--stats-dir", os.path.join(WORK_DIR, "stats"),
                    "--mom2-tokens", "300", "--set", "AMIG.max_neurons=5"])
saved = json.load(open(results))
OUT["compare"] = {"rc": rc, "table": captured.getvalue(),
                  "methods": {m: {"error": r.get("error"), "summary": r.get("summary")} for m, r in saved["methods"].items()}}

# -- 8. main's compute_edit_quality: one batched forward per request, the same metrics ---------
import importlib  # noqa: E402

from amig_plugin.easyedit.teacher_forcing import prediction_acc, prefetching_edit_quality  # noqa: E402
from test_teacher_forcing import RECORD, H  # noqa: E402

evaluate_mod = importlib.import_module("easyeditor.evaluate.evaluate")
plain_acc, forwards = evaluate_mod.test_prediction_acc, [0]
handle = model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
evaluate_mod.test_prediction_acc = prediction_acc(plain_acc)
try:
    with compat.cuda_to_cpu(True), torch.no_grad():
        one_by_one = evaluate_mod.compute_edit_quality(model, "tiny-gpt2", H, editor.tok, dict(RECORD), 0)
        per_prompt, forwards[0] = forwards[0], 0
        batched = prefetching_edit_quality(evaluate_mod.compute_edit_quality)(model, "tiny-gpt2", H, editor.tok,
                                                                             dict(RECORD), 0)
finally:
    evaluate_mod.test_prediction_acc = plain_acc
    handle.remove()
OUT["batched_scoring"] = {"equal": json.dumps(batched, sort_keys=True, default=str)
                          == json.dumps(one_by_one, sort_keys=True, default=str),
                          "forwards_per_prompt": per_prompt, "forwards_batched": forwards[0]}

# -- 9. the pre-edit metrics of a request scored once and handed to the next method ------------
from amig_plugin.easyedit.compare import pre_edit_key, run_method  # noqa: E402

request = dict(RECORD, subject="France")
counted = [0]
handle = model.register_forward_pre_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))
try:
    fresh = run_method(own, [request], seed=0)
    with_all_forwards, counted[0] = counted[0], 0
    reused = run_method(own, [request], seed=0, pre=[{"pre": fresh[0]["pre"]}])
finally:
    handle.remove()
drop = ("time", "requested_rewrite", "case_id")
OUT["pre_edit"] = {"key": pre_edit_key(request, own.hparams) is not None,
                   "equal": json.dumps({k: v for k, v in fresh[0].items() if k not in drop}, sort_keys=True, default=str)
                   == json.dumps({k: v for k, v in reused[0].items() if k not in drop}, sort_keys=True, default=str),
                   "forwards": [with_all_forwards, counted[0]]}

OUT["logs_in_cwd"] = os.path.exists(os.path.join(WORK_DIR, "logs"))
print(json.dumps(OUT, default=str))
