"""``amig compare`` on MzsRE: language pairs joined from a folder, cross-lingual evaluation keys,
per-language tables (markdown, CSV, plots), LIKN per language pair, method labels (AMIG-OPT,
AMIG-KN, FT-M), and MEMIT's post-norm targets."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest
import torch

from test_easyedit_compare import _yamls, needs_easyeditor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EN = [("France", "Paris", "Rome"), ("Germany", "Berlin", "Tokyo")]
ZH = [("法国", "巴黎", "罗马"), ("德国", "柏林", "东京")]
CS = [("Francie", "Paříž", "Řím"), ("Německo", "Berlín", "Tokio")]


def _side(subject, new, lang):
    q = {"en": f"The capital of {subject} is", "zh": f"{subject}的首都是", "cz": f"Hlavní město {subject} je"}[lang]
    return {"subject": subject, "src": q, "rephrase": q + " called", "alt": new, "loc": f"loc {lang}",
            "loc_ans": "x", "portability": {"New Question": f"port {lang} {subject}", "New Answer": f"ans {lang}"}}


def mzsre_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    for code, rows in (("zh", ZH), ("cz", CS)):
        recs = [{"en": _side(s, n, "en"), code: _side(s2, n2, code)} for (s, _, n), (s2, _, n2) in zip(EN, rows)]
        (root / f"en-{code}.json").write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return root


def test_mzsre_folder_joins_the_requested_languages(tmp_path):
    from amig_plugin.data.edits import EditDataError, detect_format, load_requests

    folder = mzsre_folder(tmp_path / "mzsre")
    assert detect_format(folder) == "mzsre"
    reqs = load_requests(folder, langs=["en", "zh", "cs"])
    assert [r.prompt for r in reqs] == ["The capital of France is", "The capital of Germany is"]
    assert sorted(reqs[0].other_languages) == ["cs", "zh"]  # the file's cz is ISO cs
    assert reqs[1].other_languages["zh"].target_new == "东京" and reqs[0].ground_truth is None
    assert sorted(load_requests(folder, langs=["en", "zh"])[0].other_languages) == ["zh"]
    with pytest.raises(EditDataError, match=r"no MzsRE file for \['fr'\].*cs"):
        load_requests(folder, langs=["en", "fr"])


def test_evaluation_keys_per_language(tmp_path):
    from amig_plugin.data.edits import load_requests

    req = load_requests(mzsre_folder(tmp_path / "m"), langs=["en", "zh"])[0]
    d = req.to_easyedit(None, ["zh"])
    assert d["portability"]["zh_reliability"] == {"prompt": "法国的首都是", "ground_truth": "罗马"}
    assert d["portability"]["zh_generality"] == {"prompt": "法国的首都是 called", "ground_truth": "罗马"}
    assert d["portability"]["zh_portability"] == {"prompt": "port zh 法国", "ground_truth": "ans zh"}
    assert d["locality"]["zh_locality"] == {"prompt": "loc zh", "ground_truth": "x"}
    assert d["locality"]["neighborhood"]["prompt"] == "loc en" and "other_language" not in d["portability"]
    with pytest.raises(KeyError, match="no 'fr' side"):
        req.to_easyedit(None, ["fr"])


def test_likn_request_carries_the_pair(tmp_path):
    from amig_plugin.data.edits import load_requests
    from amig_plugin.easyedit.compare import likn_request

    req = load_requests(mzsre_folder(tmp_path / "m"), langs=["en", "zh", "cs"])[0]
    req = dataclasses.replace(req, ground_truth="Paris", other_languages={
        k: dataclasses.replace(v, ground_truth="巴黎" if k == "zh" else None) for k, v in req.other_languages.items()})
    d = likn_request(req, "zh")
    assert d["multilingual"] == {"zh": {"prompt": "法国的首都是", "ground_truth": "巴黎", "target_new": "罗马"}}
    assert d["lang"] == "en" and "zh_reliability" in d["portability"] and "cs_reliability" not in d["portability"]


def test_model_ground_truth_only_where_asked(tmp_path):
    from amig_plugin.data.edits import load_requests, with_model_ground_truth

    reqs = load_requests(mzsre_folder(tmp_path / "m"), langs=["en", "zh", "cs"])
    asked = []

    def predict(model, tok, prompt, n):
        asked.append(prompt)
        return "guess"

    out = with_model_ground_truth(reqs, None, None, predict=predict, languages=["zh"])
    assert out[0].ground_truth == "guess" and out[0].other_languages["zh"].ground_truth == "guess"
    assert out[0].other_languages["cs"].ground_truth is None and len(asked) == 4
    assert with_model_ground_truth(reqs, None, None, predict=predict, languages=())[0].other_languages["zh"].ground_truth is None
    lengths = []

    def words(text, add_special_tokens=False):
        return {"input_ids": text.split()}

    with_model_ground_truth(reqs[:1], None, words, languages=(), max_new_tokens=8,
                            predict=lambda m, t, p, n: lengths.append(n) or "x")
    assert lengths == [1]  # as long as the new target ("Rome"), not a sentence


def _metrics(rel, zh_rel, zh_loc):
    return {"pre": {"rewrite_acc": [0.0], "rephrase_acc": [0.0], "portability": {"zh_reliability_acc": [0.0]}},
            "post": {"rewrite_acc": [rel], "rephrase_acc": [rel], "locality": {"neighborhood_acc": [1.0],
                                                                              "zh_locality_acc": [zh_loc]},
                     "portability": {"zh_reliability_acc": [zh_rel], "one_hop_acc": [0.5]}}}


def test_language_tables_csv_and_plot(tmp_path):
    from amig_plugin.easyedit import crosslingual_report as R

    metrics = [_metrics(1.0, 0.0, 1.0), _metrics(1.0, 1.0, 0.5), _metrics(0.5, 0.0, 1.0), _metrics(1.0, 0.0, 0.5)] * 3
    methods = [{"method": "ROME", "metrics": {"en": metrics, "zh": metrics}, "seconds_per_edit": 30.0, "note": "n"},
               {"method": "LIKN", "metrics": {"zh": metrics[:2]}, "seconds_per_edit": 9.0, "note": ""}]
    en = R.language_summary(methods, "en")
    assert [r["method"] for r in en] == ["(unedited)", "ROME"]  # LIKN has no en metrics here
    assert en[1]["cells"]["reliability"]["mean"] == pytest.approx(0.875)
    assert en[1]["cells"]["portability"]["mean"] == pytest.approx(0.5) and en[0]["cells"]["reliability"]["mean"] == 0
    zh = R.language_summary(methods, "zh")
    assert [r["method"] for r in zh] == ["(unedited)", "ROME", "LIKN"]
    assert zh[1]["cells"]["reliability"]["mean"] == pytest.approx(0.25)
    assert zh[1]["cells"]["locality"]["mean"] == pytest.approx(0.75) and zh[2]["cells"]["reliability"]["n"] == 2
    low, high = zh[1]["cells"]["reliability"]["low"], zh[1]["cells"]["reliability"]["high"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    table = R.format_language_table(zh, "zh")
    assert "### zh (edit made in en, scored in zh" in table and "| ROME | 12 | 0.250 [" in table
    assert "| LIKN | 2 | 0.500 | " in table  # 2 requests: the mean alone, no interval
    rows = list(csv.DictReader(open(R.write_csv(en + zh, tmp_path / "t.csv"), encoding="utf-8")))
    assert len(rows) == 5 * 4 and {r["lang"] for r in rows} == {"en", "zh"}
    assert float(next(r for r in rows if r["lang"] == "zh" and r["method"] == "ROME" and r["metric"] == "reliability")["mean"]) == 0.25
    likn = next(r for r in rows if r["lang"] == "zh" and r["method"] == "LIKN" and r["metric"] == "reliability")
    assert (likn["mean"], likn["ci_low"], likn["ci_high"]) == ("0.5", "", "")  # no interval: blank, as in the paired CSV
    assert R.plot_language(zh, "zh", tmp_path / "zh.png").stat().st_size > 1000


def test_method_labels_choose_the_class_by_alg_name(tmp_path):
    from amig_plugin.easyedit.compare import load_method_hparams

    opt = load_method_hparams("AMIG-OPT", os.path.join(REPO, "hparams", "AMIG-OPT", "gemma-3-270m.yaml"))
    kn = load_method_hparams("AMIG-KN", os.path.join(REPO, "hparams", "AMIG-KN", "gemma-3-270m.yaml"))
    assert opt.rule() == "optimize" and opt.method == "amig" and kn.method == "kn" and kn.rule() == "dai"
    likn = load_method_hparams("LIKN", os.path.join(REPO, "hparams", "LIKN", "gemma-3-270m.yaml"))
    assert type(likn).__name__ == "LIKNHyperParams"
    bad = tmp_path / "x.yaml"
    bad.write_text("alg_name: AMIG\nmodel_name: x\n")
    with pytest.raises(ValueError, match="alg_name is 'AMIG', expected 'ROME'"):
        load_method_hparams("ROME", str(bad))
    bad.write_text("alg_name: SERAC\nmodel_name: x\n")
    with pytest.raises(ValueError, match="alg_name is 'SERAC'"):
        load_method_hparams("MINE", str(bad))


def test_ft_m_is_refused_where_easyedit_cannot_run_it(tmp_path):
    """PyPI 0.0.1.dev0's FT has no objective_optimization: FT-M's YAML must not silently run FT-L."""
    from amig_plugin.easyedit.compare import _easyedit_hparams

    @dataclasses.dataclass
    class OldFT:
        alg_name: str
        model_name: str

        @classmethod
        def construct_float_from_scientific_notation(cls, config):
            return config

    path = os.path.join(REPO, "hparams", "FT-M", "gemma-3-270m.yaml")
    with pytest.raises(ValueError, match="objective_optimization: 'target_new' needs an EasyEdit.*GitHub main"):
        _easyedit_hparams(OldFT, path)
    assert _easyedit_hparams(OldFT, os.path.join(REPO, "hparams", "FT-L", "gemma-3-270m.yaml")).alg_name == "FT"


def test_post_norm_targets_invert_the_norm_to_first_order():
    """Gemma-3's post-FFN RMSNorm: the down_proj change Δm = J⁺ t moves norm(m) by t (t in the
    range of J), where writing t itself (MEMIT's assumption) moves it by a tiny fraction."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    from amig_plugin.easyedit.shims import down_proj_targets

    torch.manual_seed(0)
    norm = Gemma3RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) * 20)
    m = torch.randn(3, 16, dtype=torch.float64) * 0.1
    jac = [torch.autograd.functional.jacobian(lambda x: norm(x[None])[0], row) for row in m]
    t = torch.stack([j @ torch.randn(16, dtype=torch.float64) for j in jac]) * 1e-5  # small, reachable changes
    delta = down_proj_targets(norm, m, t)
    with torch.no_grad():
        moved = norm(m + delta) - norm(m)
        naive = norm(m + t) - norm(m)
    assert (moved - t).norm() < 1e-3 * t.norm()
    assert (naive - t).norm() > 0.5 * t.norm()  # written as is, the change lands far off
    assert norm.weight.dtype == torch.float64  # the norm itself untouched


def test_rms_norm_preimage_is_exact_where_first_order_is_not():
    """A large, reachable change of Gemma-3's post-FFN norm output (what z_space: down_proj asks
    of the z layer): the radial preimage lands on it; the first-order J⁺ t misses by far; a norm
    that is not an RMSNorm is refused by name."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    from amig_plugin.easyedit.shims import down_proj_targets, rms_norm_preimage

    torch.manual_seed(0)
    norm = Gemma3RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16) * 20)
    m = torch.randn(3, 16, dtype=torch.float64)
    m_new = m + m.norm(dim=1, keepdim=True) * torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        t = norm(m_new) - norm(m)
        exact = norm(m + rms_norm_preimage(norm, m, t)) - norm(m)
        first_order = norm(m + down_proj_targets(norm, m, t)) - norm(m)
    assert (exact - t).norm() < 1e-5 * t.norm()
    assert (first_order - t).norm() > 0.2 * t.norm()
    with pytest.raises(ValueError, match="LayerNorm is not an RMSNorm"):
        rms_norm_preimage(torch.nn.LayerNorm(16).double(), m, t)


def test_memit_adaptation_keys_are_checked():
    from types import SimpleNamespace

    from amig_plugin.easyedit.shims import check_memit_adaptation

    assert check_memit_adaptation(SimpleNamespace()) is False  # EasyEdit's MEMIT, unchanged
    assert check_memit_adaptation(SimpleNamespace(post_norm_targets=True, z_space="down_proj")) is True
    with pytest.raises(ValueError, match="z_space: 'down' is not one of residual, down_proj"):
        check_memit_adaptation(SimpleNamespace(post_norm_targets=True, z_space="down"))
    with pytest.raises(ValueError, match="add post_norm_targets: true"):
        check_memit_adaptation(SimpleNamespace(z_space="down_proj"))


def test_memit_z_in_ffn_output_space():
    """z_space: down_proj. The z layer's template names the FFN output there and the block
    elsewhere (where compute_z reads its loss), and z = h + norm(m') - norm(m) is exactly the
    block output a Gemma-3 block gives when its FFN output at that position is m'."""
    from amig_plugin.easyedit.shims import _ZLayerTemplate, residual_of_ffn_output
    from amig_plugin.testing.planted import get_model

    template = _ZLayerTemplate("model.layers.{}", "model.layers.{}.mlp", 1)
    assert template.format(1) == "model.layers.1.mlp" and template.format(0) == "model.layers.0"
    assert template == "model.layers.{}"  # what every other comparison sees

    model, tok = get_model("gemma3")
    block = model.model.layers[1]
    ids = tok("the capital of france is", return_tensors="pt")["input_ids"]
    pos = ids.shape[1] - 2
    seen = {}

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, output.detach().clone())

    handles = [block.mlp.register_forward_hook(keep("m")), block.register_forward_hook(
        lambda module, args, output: seen.__setitem__("h", (output[0] if isinstance(output, tuple) else output).detach()))]
    with torch.no_grad():
        model(ids)
    m, h = seen["m"][0, pos], seen["h"][0, pos]
    torch.manual_seed(0)
    m_new = m + 3 * m.norm() * torch.randn_like(m) / m.numel() ** 0.5  # far from linear
    for handle in handles:
        handle.remove()

    def replace(module, args, output):
        output = output.clone()
        output[0, pos] = m_new
        return output

    handles = [block.mlp.register_forward_hook(replace), block.register_forward_hook(
        lambda module, args, output: seen.__setitem__("h", (output[0] if isinstance(output, tuple) else output).detach()))]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    z = residual_of_ffn_output(block.post_feedforward_layernorm, h, m, m_new)
    torch.testing.assert_close(z, seen["h"][0, pos], rtol=1e-5, atol=1e-5)
    moved = seen["h"][0, pos] - h
    assert moved.norm() > 1e-3 * h.norm()  # the new FFN output did move the residual ...
    assert (m_new - m - moved).norm() > 0.5 * moved.norm()  # ... and not by m' - m (MEMIT's assumption)


def test_stdlib_corpus_is_read_without_importing():
    from amig_plugin.easyedit.stats import CORPORA, local_corpus

    texts = local_corpus("stdlib")
    assert len(texts) > 2000 and all(isinstance(t, str) and 40 <= len(t) <= 400 for t in texts)
    assert "facts+pydoc+stdlib" in CORPORA and len(local_corpus("facts+pydoc+stdlib")) > len(texts)


def _two_lang_metrics(zh_rel, fr_rel, fr_has_key=True):
    post = {"rewrite_acc": [1.0], "portability": {"zh_reliability_acc": [zh_rel]}, "locality": {}}
    if fr_has_key:
        post["portability"]["fr_reliability_acc"] = [fr_rel]
    return {"pre": {"rewrite_acc": [0.0], "portability": {"zh_reliability_acc": [0.0], "fr_reliability_acc": [0.5]}},
            "post": post}


def test_pooled_languages_average_within_a_request_first():
    """Per request the mean over the other languages, then over requests; a language without
    the key is left out of that request's mean; the interval resamples requests."""
    from amig_plugin.easyedit import crosslingual_report as R

    metrics = [_two_lang_metrics(1.0, 0.0), _two_lang_metrics(1.0, 1.0), _two_lang_metrics(0.0, 0.0, fr_has_key=False)] * 4
    likn_zh = [_two_lang_metrics(1.0, 0.0)] * 12
    likn_fr = [_two_lang_metrics(0.0, 1.0)] * 12
    methods = [{"method": "ROME", "metrics": {"en": metrics, "zh": metrics, "fr": metrics}, "seconds_per_edit": 3.0},
               {"method": "LIKN", "metrics": {"en": likn_zh + likn_fr, "zh": likn_zh, "fr": likn_fr}},
               {"method": "KN", "metrics": {"en": metrics[:1], "zh": metrics[:1]}}]  # no fr: left out
    pooled = R.pooled_summary(methods, ["en", "zh", "fr"])
    assert [r["method"] for r in pooled] == ["(unedited)", "ROME", "LIKN"]
    rome = pooled[1]["cells"]["reliability"]
    assert rome["mean"] == pytest.approx((0.5 + 1.0 + 0.0) / 3) and rome["n"] == 12  # not (1+1+0+0+1)/5
    assert 0.0 <= rome["low"] <= rome["mean"] <= rome["high"] <= 1.0
    assert pooled[2]["cells"]["reliability"]["mean"] == pytest.approx(1.0)  # each pair's own language
    assert pooled[0]["cells"]["reliability"]["mean"] == pytest.approx(0.25)  # unedited: (0 + 0.5) / 2
    assert pooled[0]["cells"]["locality"]["mean"] == 1.0
    en = R.language_summary(methods, "en")
    table = R.format_overview_table(en, pooled, ["en", "zh", "fr"])
    assert "| en reliability |" in table and "other 2: reliability" in table and "other 2 = zh, fr" in table
    assert "| ROME | 12 | 1.000" in table and "| KN | 1 |" in table and table.rstrip().count("\n| KN") == 1


def _en_zh(rel, zh_rel, loc=1.0):
    return {"pre": {"rewrite_acc": [0.0]},
            "post": {"rewrite_acc": [rel], "locality": {"neighborhood_acc": [loc]},
                     "portability": {"zh_reliability_acc": [zh_rel]}}}


def test_paired_differences_against_the_reference():
    """Each method minus the reference per request: a constant shift has a zero-width paired
    interval even where the unpaired intervals overlap; LIKN enters with its mean over a
    request's per-language edits; a method on fewer requests pairs on those; a method not
    scored in every other language has no pooled cell; no reference, no rows."""
    from amig_plugin.easyedit import crosslingual_report as R

    ref_rel = [0.0, 0.5, 1.0, 0.25, 0.75, 0.5] * 2
    rome = [_en_zh(v, v / 2) for v in ref_rel]
    shifted = [_en_zh(min(1.0, v + 0.1) if v < 1.0 else 1.0, v / 2, loc=0.5) for v in ref_rel]
    likn_zh = [_en_zh(1.0, 1.0)] * 12  # request r's edit for zh ...
    likn_fr = [_en_zh(0.0, 0.0)] * 12  # ... and for fr: en reliability 0.5 per request
    methods = [{"method": "ROME", "metrics": {"en": rome, "zh": rome, "fr": rome}},
               {"method": "OPT", "metrics": {"en": shifted, "zh": shifted, "fr": shifted}},
               {"method": "LIKN", "metrics": {"en": likn_zh + likn_fr, "zh": likn_zh, "fr": likn_fr}},
               {"method": "KN", "metrics": {"en": rome[:1], "zh": rome[:1]}}]
    rows = {r["method"]: r for r in R.paired_summary(methods, ["en", "zh", "fr"])}
    assert set(rows) == {"OPT", "LIKN", "KN"}
    opt = rows["OPT"]["cells"]
    expected = sum(min(1.0, v + 0.1) - v for v in ref_rel) / 12
    assert opt[("en", "reliability")]["mean"] == pytest.approx(expected) and opt[("en", "reliability")]["n"] == 12
    assert opt[("en", "locality")]["mean"] == pytest.approx(-0.5)
    assert opt[("en", "locality")]["low"] == pytest.approx(-0.5) and opt[("en", "locality")]["high"] == pytest.approx(-0.5)
    unpaired = R.language_summary(methods[:2], "en")  # the unpaired intervals overlap
    assert unpaired[2]["cells"]["reliability"]["low"] < unpaired[1]["cells"]["reliability"]["high"]
    assert opt[("en", "reliability")]["low"] > 0  # the paired one excludes 0
    # pooled zh (the only other language with the key): the same values, difference 0
    assert opt[("other", "reliability")]["mean"] == pytest.approx(0.0)
    likn = rows["LIKN"]["cells"]
    assert likn[("en", "reliability")]["mean"] == pytest.approx(0.5 - sum(ref_rel) / 12)
    kn = rows["KN"]["cells"]
    assert kn[("en", "reliability")]["n"] == 1 and kn[("en", "reliability")]["low"] != kn[("en", "reliability")]["low"]
    assert kn[("other", "reliability")]["mean"] is None  # not scored in fr
    table = R.format_paired_table(list(rows.values()), ["en", "zh", "fr"])
    assert "### Paired against ROME" in table and "| en: reliability |" in table and "other 2: locality" in table
    assert "| OPT | 12 | +0.083 [+0.06, +0.10]" in table
    assert "| KN | 1 | +0.000 |" in table
    assert R.paired_summary(methods[1:], ["en", "zh", "fr"]) == []


def test_paired_outputs_of_a_compare(tmp_path):
    """The paired table goes into the markdown after the pooled one, with its CSV and plot;
    an English-only run gets a paired table without language prefixes."""
    from amig_plugin.commands.compare import _language_outputs, _paired_reference

    methods = [{"method": "ROME", "metrics": {"en": [_en_zh(v, v) for v in (0.0, 1.0, 0.5) * 4]}},
               {"method": "FT", "metrics": {"en": [_en_zh(1.0, 1.0)] * 12}}]
    tables, paired = _language_outputs(methods, ["en"], "en", tmp_path / "res.json", "ROME")
    assert paired in tables and tables.index(paired) < tables.index("### en (")
    assert "| method | pairs | reliability | generality | locality | portability |" in paired
    assert "| FT | 12 | +0.500 [" in paired
    rows = list(csv.DictReader(open(tmp_path / "res-paired.csv", encoding="utf-8")))
    assert {(r["scope"], r["method"], r["metric"]) for r in rows} >= {("en", "FT", "reliability")}
    assert float(next(r for r in rows if r["metric"] == "reliability")["mean_difference"]) == pytest.approx(0.5)
    assert (tmp_path / "res-paired.png").stat().st_size > 1000
    assert _language_outputs(methods, ["en"], "en", tmp_path / "b.json", None)[1] == ""

    class Args:
        paired_against = None
    assert _paired_reference(Args, ["AMIG", "ROME"]) == "ROME" and _paired_reference(Args, ["AMIG"]) is None
    Args.paired_against = "none"
    assert _paired_reference(Args, ["AMIG", "ROME"]) is None
    Args.paired_against = "memit"
    with pytest.raises(ValueError, match="--paired-against MEMIT: MEMIT is not among --methods AMIG,ROME"):
        _paired_reference(Args, ["AMIG", "ROME"])


def test_crosslingual_compare_on_tiny_gpt2(tmp_path, monkeypatch, capsys):
    """MzsRE folder, --langs en,zh,cs: AMIG edits once per request and is scored in every
    language; LIKN edits once per (request, language); per-language tables, CSV and plots;
    --limit restricts one method; the statistics name carries the token cap."""
    from amig_plugin.cli import main
    from test_easyedit_amig import train_tiny_gpt2

    model_dir = tmp_path / "tiny-gpt2"
    train_tiny_gpt2(str(model_dir), steps=40)
    hdir = tmp_path / "hp"
    _yamls(hdir, "tiny-gpt2")
    (hdir / "LIKN").mkdir()
    (hdir / "LIKN" / "tiny-gpt2.yaml").write_text("alg_name: LIKN\nmodel_name: x\nsteps: 4\nmax_neurons: 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))  # the ground truths' cache
    out = tmp_path / "res.json"
    folder = mzsre_folder(tmp_path / "mzsre")
    argv = ["compare", "--model", str(model_dir), "--data", str(folder), "--langs", "en,zh,cs", "--n", "2",
            "--methods", "AMIG,LIKN,FT", "--limit", "LIKN=1", "--hparams-dir", str(hdir), "--json", str(out),
            "--set", "AMIG.max_neurons=3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for lang in ("en", "zh", "cs"):
        assert f"### {lang} (" in text and (tmp_path / f"res-{lang}.png").is_file()
    assert "### en and the other 2 languages pooled" in text and (tmp_path / "res-other.png").is_file()
    assert "| AMIG | 2 |" in text and "| LIKN | 1 |" in text and "| FT | 2 |" in text
    records = [json.loads(l) for f in out.with_suffix(".records").glob("rank*.jsonl") for l in f.read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["AMIG"] * 2 + ["FT"] * 2 + ["LIKN"] * 2  # LIKN: 1 request x 2 pairs
    rows = list(csv.DictReader(open(out.with_suffix(".csv"), encoding="utf-8")))
    assert {(r["lang"], r["method"]) for r in rows} >= {("zh", "AMIG"), ("cs", "LIKN"), ("en", "(unedited)"),
                                                         ("other", "AMIG"), ("other", "LIKN")}
    assert list((tmp_path / "cache" / "ground-truth").glob("*.jsonl"))
    assert main(argv) == 0 and "answers from the cache" in capsys.readouterr().err  # a rerun predicts nothing
    assert main(argv[:-2] + ["--limit", "FT=0"]) == 2 and "--limit 'FT=0'" in capsys.readouterr().err


def test_method_note_flags_unconverged_attributions():
    from amig_plugin.easyedit.compare import method_note
    from amig_plugin.easyedit.methods.amig.hparams import AMIGHyperParams

    h = AMIGHyperParams.from_hparams(os.path.join(REPO, "hparams", "AMIG-KN", "gemma-3-270m.yaml"))
    recs = [{"amig_edit": {"neurons": [(1, 2)] * n, "completeness_residual": r}} for n, r in ((3, 0.01), (5, -0.08))]
    note = method_note("AMIG", h, recs)
    assert "4.0 neurons/edit" in note and "max completeness residual 0.08" in note
    assert "UNCONVERGED: 1 of 2 edits above 0.05" in note
    assert "UNCONVERGED" not in method_note("AMIG", h, recs[:1])


def test_the_run_line_names_what_portability_is_scored_on():
    from amig_plugin.commands.compare import _portability_note

    assert _portability_note([{"portability": {}}, {}], "zh") == "no portability pairs"
    assert _portability_note([{"portability": {"one_hop": {}}}, {"portability": {"other_language": {}}}], "zh") == \
        "portability: one_hop, zh prompt"


@needs_easyeditor
def test_memit_z_space_down_proj_through_easyedits_compute_z(monkeypatch):
    """z_space: down_proj through EasyEdit's own compute_z on a tiny Gemma-3: the delta sits on
    the z layer's FFN output (clamped against that output), the loss is read at the block of
    v_loss_layer, and the z handed to MEMIT is the block output this FFN output gives."""
    import importlib

    from amig_plugin.easyedit.compat import cuda_to_cpu, import_easyeditor
    from amig_plugin.easyedit.shims import memit_post_norm_targets, memit_tuple_block_outputs
    from amig_plugin.testing import tiny

    import_easyeditor()
    main = importlib.import_module("easyeditor.models.memit.memit_main")
    hparams_class = importlib.import_module("easyeditor.models.memit.memit_hparams").MEMITHyperParams
    seen = {}
    original = main.compute_z

    def spy(model, tok, request, hparams, layer, *args, **kwargs):
        seen["modules"] = (hparams.layer_module_tmp.format(layer), hparams.layer_module_tmp.format(hparams.v_loss_layer))
        seen["m_new"] = original(model, tok, request, hparams, layer, *args, **kwargs)
        return seen["m_new"]

    monkeypatch.setattr(main, "compute_z", spy)
    model, tok = tiny("gemma3", seed=0, layers=3, width=32, ffn=64)
    hp = hparams_class(
        layers=[1], layer_selection="all", fact_token="subject_last", v_num_grad_steps=5, v_lr=0.5, v_loss_layer=2,
        v_weight_decay=0.5, clamp_norm_factor=0.5, kl_factor=0.0625, mom2_adjustment=True, mom2_update_weight=200,
        rewrite_module_tmp="model.layers.{}.mlp.down_proj", layer_module_tmp="model.layers.{}",
        mlp_module_tmp="model.layers.{}.mlp", attn_module_tmp="model.layers.{}.self_attn", ln_f_module="model.norm",
        lm_head_module="model.embed_tokens", mom2_dataset="x", mom2_n_samples=10, mom2_dtype="float32",
        alg_name="MEMIT", device=0, model_name="x", stats_dir=".")
    hp.post_norm_targets, hp.z_space = True, "down_proj"
    request = {"prompt": "the capital of {} is", "subject": "france", "target_new": "rome"}
    with cuda_to_cpu(True), memit_tuple_block_outputs(), memit_post_norm_targets(model, hp):
        z = main.compute_z(model, tok, request, hp, 1, [["{}"]])
    assert seen["modules"] == ("model.layers.1.mlp", "model.layers.2")

    ids = tok("the capital of france", return_tensors="pt")["input_ids"]
    pos, block, out = ids.shape[1] - 1, model.model.layers[1], {}
    keep_block = block.register_forward_hook(
        lambda module, args, output: out.__setitem__("h", (output[0] if isinstance(output, tuple) else output).detach()))
    keep_mlp = block.mlp.register_forward_hook(lambda module, args, output: out.__setitem__("m", output.detach().clone()))
    with torch.no_grad():
        model(ids)
    keep_mlp.remove()
    m = out["m"][0, pos]
    assert (seen["m_new"] - m).norm() <= 0.5 * m.norm() * (1 + 1e-5)  # clamped in the FFN-output space
    assert (seen["m_new"] - m).norm() > 0  # and it moved

    def install(module, args, output):
        output = output.clone()
        output[0, pos] = seen["m_new"]
        return output

    swap = block.mlp.register_forward_hook(install)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        swap.remove()
        keep_block.remove()
    torch.testing.assert_close(z, out["h"][0, pos], rtol=1e-4, atol=1e-4)


def test_no_interval_below_the_minimum_number_of_requests():
    """A percentile bootstrap of a handful of requests covers far less than 95 %: below
    MIN_REQUESTS_FOR_INTERVAL the cells (language, pooled and paired) carry the mean alone."""
    from amig_plugin.easyedit import crosslingual_report as R

    k = R.MIN_REQUESTS_FOR_INTERVAL
    assert k == 10
    values = [0.0, 1.0, 0.5, 1.0, 0.0, 0.25, 0.75, 1.0, 0.5, 0.0]
    rome = [_en_zh(v, v) for v in values]
    few = [_en_zh(min(1.0, v + 0.5), v) for v in values[:k - 1]]
    methods = [{"method": "ROME", "metrics": {"en": rome, "zh": rome}},
               {"method": "KN", "metrics": {"en": few, "zh": few}}]
    en = {r["method"]: r["cells"]["reliability"] for r in R.language_summary(methods, "en")}
    assert en["ROME"]["n"] == k and en["ROME"]["low"] < en["ROME"]["mean"] < en["ROME"]["high"]
    assert en["KN"]["n"] == k - 1 and en["KN"]["low"] != en["KN"]["low"] and en["KN"]["high"] != en["KN"]["high"]
    pooled = {r["method"]: r["cells"]["reliability"] for r in R.pooled_summary(methods, ["en", "zh"])}
    assert pooled["ROME"]["low"] == pooled["ROME"]["low"] and pooled["KN"]["low"] != pooled["KN"]["low"]
    kn = R.paired_summary(methods, ["en", "zh"])[0]["cells"][("en", "reliability")]
    assert kn["n"] == k - 1 and kn["mean"] > 0 and kn["low"] != kn["low"]
    table = R.format_language_table(R.language_summary(methods, "en"), "en")
    assert f"| KN | {k - 1} | {en['KN']['mean']:.3f} | " in table and "none below 10 requests" in table


def test_paired_plot_leaves_out_a_column_without_values(tmp_path):
    """A file without portability (ZsRE) gets no empty portability panel: 3 panels of 3 in at
    120 dpi are 1080 px wide, 4 are 1440."""
    import struct

    from amig_plugin.easyedit import crosslingual_report as R

    def row(portability):
        cells = {("en", c): {"mean": -0.2, "low": -0.3, "high": -0.1, "n": 12} for c in R.COLUMNS}
        cells[("en", "portability")] = ({"mean": portability, "low": -0.1, "high": 0.1, "n": 12} if portability is not None
                                        else {"mean": None, "low": None, "high": None, "n": 0})
        return {"method": "OPT", "reference": "ROME", "cells": cells}

    def width(path):
        return struct.unpack(">I", path.read_bytes()[16:20])[0]  # PNG IHDR width

    assert width(R.plot_paired([row(None)], ["en"], tmp_path / "three.png")) == 1080
    assert width(R.plot_paired([row(0.0)], ["en"], tmp_path / "four.png")) == 1440


def test_language_plot_leaves_out_a_column_without_values(tmp_path):
    """The per-language bars: no empty portability group on a file without it (the figure is
    2.2 + 1.6 per column + 1.5 (legend) inches wide at 120 dpi), and a method with too few
    requests for an interval is drawn without one."""
    import struct

    from amig_plugin.easyedit import crosslingual_report as R

    def rows(portability):
        out = []
        for method, low in (("ROME", 0.8), ("KN", float("nan"))):
            cells = {c: {"mean": 0.9, "low": low, "high": 0.95, "n": 12} for c in R.COLUMNS}
            cells["portability"] = {"mean": portability, "low": None, "high": None, "n": 12}
            out.append({"method": method, "cells": cells})
        return out

    def width(path):
        return struct.unpack(">I", path.read_bytes()[16:20])[0]  # PNG IHDR width

    assert width(R.plot_language(rows(None), "en", tmp_path / "three.png")) == round((2.2 + 1.6 * 3 + 1.5) * 120)
    assert width(R.plot_language(rows(0.5), "en", tmp_path / "four.png")) == round((2.2 + 1.6 * 4 + 1.5) * 120)
