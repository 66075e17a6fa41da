"""``amig compare``: requests from facts, local covariance statistics for ROME/MEMIT in
EasyEdit's cache format, and the whole command on a tiny trained GPT-2."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap

import pytest

from amig_plugin.data import shipped_facts
from amig_plugin.easyedit.compare import build_requests, edit_arguments, format_table
from amig_plugin.easyedit.prompts import has_cjk

HAS_EASYEDITOR = importlib.util.find_spec("easyeditor") is not None
needs_easyeditor = pytest.mark.skipif(not HAS_EASYEDITOR, reason="easyeditor is not installed")


def test_requests_from_shipped_facts():
    facts = {f.id: f for f in shipped_facts()}
    requests = build_requests(list(facts.values()), 20)
    assert len(requests) == 20 and len({r["fact_id"] for r in requests}) == 20
    assert len({facts[r["fact_id"]].relation for r in requests}) >= 5  # spread over relations
    for r in requests:
        fact = facts[r["fact_id"]]
        assert r["subject"] in r["prompt"] and "<mask>" not in r["prompt"] and not r["prompt"].endswith(" ")
        assert r["ground_truth"] == fact.object["en"] and r["target_new"] != r["ground_truth"]
        assert r["target_new"] in fact.candidates["en"]
        assert r["rephrase_prompt"] != r["prompt"]
        nb = r["locality"]["neighborhood"]
        assert nb["ground_truth"] != r["ground_truth"] or nb["prompt"] != r["prompt"]
        other = r["portability"]["other_language"]
        assert has_cjk(other["prompt"])
        assert other["ground_truth"] != fact.object["zh"]
        assert fact.candidates["zh"][fact.candidates["en"].index(r["target_new"])] == other["ground_truth"]
    assert build_requests(list(facts.values()), 20) == requests  # deterministic
    masked = build_requests(list(facts.values()), 3, masked=True)
    assert all("<mask>" in r["prompt"] for r in masked)
    kwargs = edit_arguments(requests)
    assert set(kwargs["portability_inputs"]) == {"other_language"} and len(kwargs["prompts"]) == 20
    with pytest.raises(ValueError, match="usable facts"):
        build_requests(list(facts.values())[:3], 5)


def test_format_table_handles_failures():
    summary = {"requests": 2, "seconds_per_edit": 1.5, "pre": {"rewrite_acc": 0.0},
               "post": {"rewrite_acc": 1.0, "rephrase_acc": 0.5, "locality.neighborhood_acc": 0.9,
                        "portability.other_language_acc": 0.25}}
    table = format_table([{"method": "AMIG", "summary": summary, "note": "n"}, {"method": "ROME", "error": "boom"}])
    assert "| AMIG | 2 | 1.000 | 0.500 | 0.900 | 0.250 | 1.5 | n |" in table
    assert "| ROME | - |" in table and "failed: boom" in table and "(unedited)" in table


def _yamls(folder, stem: str) -> None:
    gpt2 = dict(rewrite="transformer.h.{}.mlp.c_proj", layer="transformer.h.{}", mlp="transformer.h.{}.mlp",
                attn="transformer.h.{}.attn", ln_f="transformer.ln_f", head="transformer.wte")
    files = {
        "AMIG": "alg_name: AMIG\nmodel_name: x\nsteps: 4\n",
        "KN": "alg_name: KN\nmodel_name: x\ndevice: 0\nlr_scale: 1.0\nn_toks: 10\nrefine: false\nbatch_size: 1\n"
              "steps: 2\nadaptive_threshold: 0.2\np: 0.4\n",
        "FT": f"alg_name: FT\nmodel_name: x\ndevice: 0\nlayers: [1]\nnum_steps: 3\nbatch_size: 1\nlr: 5e-4\n"
              f"weight_decay: 0\nkl_factor: 0\nnorm_constraint: 5e-4\nrewrite_module_tmp: '{gpt2['rewrite']}.weight'\n"
              f"layer_module_tmp: '{gpt2['layer']}'\nmlp_module_tmp: '{gpt2['mlp']}'\nattn_module_tmp: '{gpt2['attn']}'\n"
              f"ln_f_module: '{gpt2['ln_f']}'\nlm_head_module: '{gpt2['head']}'\n",
    }
    common = textwrap.dedent(f"""\
        model_name: x
        stats_dir: ./data/stats
        device: 0
        fact_token: subject_last
        v_num_grad_steps: 3
        v_lr: 5e-1
        v_loss_layer: 1
        v_weight_decay: 0.5
        clamp_norm_factor: 4
        kl_factor: 0.0625
        mom2_adjustment: true
        rewrite_module_tmp: '{gpt2['rewrite']}'
        layer_module_tmp: '{gpt2['layer']}'
        mlp_module_tmp: '{gpt2['mlp']}'
        attn_module_tmp: '{gpt2['attn']}'
        ln_f_module: '{gpt2['ln_f']}'
        lm_head_module: '{gpt2['head']}'
        mom2_dataset: wikipedia
        mom2_n_samples: 100
        mom2_dtype: float32
        """)
    files["ROME"] = "alg_name: ROME\nlayers: [0]\ncontext_template_length_params: [[5, 5]]\n" + common
    files["MEMIT"] = ("alg_name: MEMIT\nlayers: [0, 1]\nlayer_selection: all\nmom2_update_weight: 100\nbatch_size: 1\n"
                      + common.replace("clamp_norm_factor: 4", "clamp_norm_factor: 0.75"))
    files["FT-L"] = files["FT"]  # the default label; "FT" (the algorithm's name) works as a label too
    for method, text in files.items():
        (folder / method).mkdir(parents=True, exist_ok=True)
        (folder / method / f"{stem}.yaml").write_text(text)


@needs_easyeditor
def test_compare_command_on_tiny_gpt2(tmp_path, monkeypatch, capsys):
    """The whole command: five methods from their YAMLs, covariance statistics computed
    from the local corpus into EasyEdit's cache layout and loaded by EasyEdit itself,
    one table, results saved and reused."""
    from amig_plugin.cli import main
    from test_easyedit_amig import train_tiny_gpt2

    model_dir = tmp_path / "tiny-gpt2"
    train_tiny_gpt2(str(model_dir), steps=60)
    hdir = tmp_path / "hp"
    _yamls(hdir, "tiny-gpt2")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res.json"
    stats = tmp_path / "stats"
    argv = ["compare", "--model", str(model_dir), "--n", "2", "--hparams-dir", str(hdir), "--out", str(out),
            "--stats-dir", str(stats), "--mom2-tokens", "300", "--set", "AMIG.max_neurons=5"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for method in ("AMIG", "KN", "ROME", "MEMIT", "FT-L"):
        assert f"| {method} | 2 |" in text, text
    assert "(unedited)" in text and "covariance (mom2) statistics from local corpus 'facts+pydoc'" in text
    npz = sorted(p.name for p in stats.rglob("*.npz"))
    assert npz == ["transformer.h.0.mlp.c_proj_float32_mom2_%d.npz" % int(npz[0].rsplit("_", 1)[1][:-4]),
                   "transformer.h.1.mlp.c_proj_float32_mom2_%d.npz" % int(npz[0].rsplit("_", 1)[1][:-4])]
    saved = json.loads(out.read_text())
    assert set(saved["methods"]) == {"AMIG", "KN", "ROME", "MEMIT", "FT-L"}
    # the token cap names the statistics: another --mom2-tokens never reuses these
    assert saved["methods"]["ROME"]["settings"]["mom2_dataset"] == "amig-local-facts-pydoc-300tok"
    # where the statistics lie is no setting: records name no folder of this machine
    assert "stats_dir" not in saved["methods"]["ROME"]["settings"]
    records = "".join(p.read_text() for p in out.with_suffix(".records").glob("rank*.jsonl"))
    assert '"ROME"' in records and str(stats) not in records
    amig = saved["methods"]["AMIG"]
    assert len(amig["amig_edits"]) == 2 and all(1 <= len(e["neurons"]) <= 5 for e in amig["amig_edits"])
    assert os.listdir(tmp_path / "hp")  # and no ./logs: EasyEdit's files were kept out of the cwd
    assert not (tmp_path / "logs").exists()
    # a second run reuses every saved method
    assert main(argv + ["--methods", "AMIG,FT-L"]) == 0
    err = capsys.readouterr().err
    assert "AMIG: reusing saved results" in err and "FT-L: reusing saved results" in err


@needs_easyeditor
def test_cjk_aware_prediction_acc(tmp_path):
    """Prompts ending in CJK text are scored as prompt + target (no space); others are
    passed to EasyEdit's own function unchanged; EasyEdit's result shapes are kept."""
    import importlib

    from amig_plugin.easyedit.compat import cuda_to_cpu, import_easyeditor
    from amig_plugin.easyedit.evaluate import cjk_aware_prediction_acc, teacher_forced_predictions
    from test_easyedit_amig import train_tiny_gpt2

    import_easyeditor()
    original = importlib.import_module("easyeditor.evaluate.evaluate_utils").test_prediction_acc
    model, tok = train_tiny_gpt2(str(tmp_path / "tiny-gpt2"), steps=30)
    tok.pad_token = tok.eos_token  # as EasyEdit's loader sets it

    class H:
        max_length = 40

    wrapped = cjk_aware_prediction_acc(original)
    with cuda_to_cpu(True):  # EasyEdit moves inputs to f"cuda:{device}"; the model stays on CPU
        _check(wrapped, original, model, tok, H, teacher_forced_predictions)


def _check(wrapped, original, model, tok, H, teacher_forced_predictions):
    en = wrapped(model, tok, H, "The capital of France is", "Paris", 0)
    assert en == original(model, tok, H, "The capital of France is", "Paris", 0)
    preds, gold = teacher_forced_predictions(model, tok, "法国的首都是", "巴黎")
    assert len(gold) == len(tok("巴黎")["input_ids"])
    zh = wrapped(model, tok, H, "法国的首都是", "巴黎", 0)
    assert zh == [sum(int(a == b) for a, b in zip(preds, gold)) / len(gold)]
    assert wrapped(model, tok, H, "法国的首都是", "巴黎", 0, locality=True) == [preds]
    mixed = wrapped(model, tok, H, ["法国的首都是", "The capital of France is"], ["巴黎", "Paris"], 0)
    assert mixed == [zh[0], en[0]]
