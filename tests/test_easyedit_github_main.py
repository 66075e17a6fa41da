"""The plugin against EasyEdit's real GitHub main (the snapshot in ``../shared/vendor/
easyedit-main`` next to the repository), in a subprocess with that folder first on the import
path, so the PyPI ``easyeditor`` in the environment does not shadow it.

One subprocess (``tests/easyedit_main_probe.py``) runs everything on a tiny byte-level GPT-2
whose folder name contains "gpt" (main's ``BaseEditor`` loads it by name) and prints a JSON
report; the tests below check its parts: registration, AMIG and LIKN through main's
``BaseEditor`` with ``sequential_edit=False`` (every weight bit-identical afterwards) and
``True`` (edits accumulate), main's own ROME and FT through the compat runtime, our metric
averages against main's, the project's own editor, ``amig compare``, and the one-sentence
error for a model name main cannot load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# next to the repository, as CI has it; EASYEDIT_MAIN=<folder> points elsewhere
MAIN_SNAPSHOT = Path(os.environ.get("EASYEDIT_MAIN") or REPO / ".." / "shared" / "vendor" / "easyedit-main").resolve()
PROBE = REPO / "tests" / "easyedit_main_probe.py"

pytestmark = pytest.mark.skipif(
    not (MAIN_SNAPSHOT / "easyeditor" / "__init__.py").is_file(),
    reason=f"EasyEdit GitHub main snapshot not found: no easyeditor/ in {MAIN_SNAPSHOT} (../shared/vendor/easyedit-main "
           "next to the repository, or set EASYEDIT_MAIN)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from test_easyedit_amig import train_tiny_gpt2

    root = tmp_path_factory.mktemp("ee-main")
    model_dir = root / "tiny-gpt2"
    train_tiny_gpt2(str(model_dir), steps=150)
    work = root / "work"
    work.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(MAIN_SNAPSHOT), str(REPO)] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("OMP_NUM_THREADS", "1")
    out = subprocess.run([sys.executable, str(PROBE), str(model_dir), str(work)], env=env, cwd=str(work),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["_stderr"] = out.stderr
    data["_work"] = str(work)
    return data


def test_register_on_main(report):
    r = report["register"]
    assert Path(r["easyeditor_file"]).resolve() == MAIN_SNAPSHOT / "easyeditor" / "__init__.py"
    assert r["flavour"] == "github-main"
    assert r["first"]["algorithms"] == {"AMIG": True, "LIKN": True} and r["first"]["metrics"] == ["fact_check"]
    assert r["second"]["algorithms"] == {"AMIG": False, "LIKN": False}  # idempotent
    assert (r["AMIG"], r["LIKN"]) == ("apply_amig_to_model", "apply_likn_to_model")
    # transformers 5.x removed this module; main's UnKE imports it: served during the import only
    gone = importlib.util.find_spec("transformers.modeling_attn_mask_utils") is None
    assert ("transformers.modeling_attn_mask_utils" in r["removed_placeholders"]) is gone
    assert r["removed_left"] == [] and r["attr_left"] is False


def test_device_0_falls_back_to_cpu_with_one_line(report):
    fb = report["cpu_fallback"]
    assert fb["stderr"] == ["amig_plugin: AMIG hparams ask for device 0, but CUDA is not available here: "
                            "running on the CPU"]
    assert fb["device"] == "cpu" and fb["model_device"] == "cpu"


@pytest.mark.parametrize("method", ["AMIG", "ROME", "FT"])
def test_independent_edits_restore_every_weight(report, method):
    r = report[method]
    assert r["independent_after"] == r["c0"]  # sha256 over every parameter and buffer


@pytest.mark.parametrize("method", ["AMIG", "ROME", "FT"])
def test_our_averages_equal_mains(report, method):
    ours, mains = report[method]["ours_vs_main"]
    assert ours == pytest.approx(mains, abs=1e-12) and "post.rewrite_acc" in ours


def test_amig_edits_work_and_accumulate(report):
    r = report["AMIG"]
    assert r["pre_rewrite"] == [[0.0], [0.0]] and r["post_rewrite"] == [[1.0], [1.0]]
    assert len({r["c0"], r["seq_one"], r["seq_both"]}) == 3  # each sequential edit changed the model
    assert r["seq_first_changed"] == ["transformer.h.0.mlp.c_proj.weight"]
    assert r["first_edit_kept"]  # the rows edit 1 changed stay changed after edit 2
    assert r["restored"]
    assert r["summary"]["seconds_per_edit"] is None  # main's BaseEditor records no times


def test_likn_through_main(report):
    r = report["LIKN"]
    assert r["independent_after"] == r["c0"]
    assert r["edits"] and r["edits"][0] > 0  # a non-empty LIKN was edited
    assert r["weights_copy_keys"] == ["transformer.h.0.mlp.c_proj.weight"]
    assert r["seq_after"] != r["c0"] and r["restored"]


def test_mains_rome_and_ft_run_through_the_compat_runtime(report):
    assert report["ROME"]["apply"] == "easyeditor.models.rome.rome_main.apply_rome_to_model"
    assert report["FT"]["apply"] == "easyeditor.models.ft.ft_main.apply_ft_to_model"
    assert report["ROME"]["seq_changed"] == ["transformer.h.0.mlp.c_proj.weight"]
    assert report["FT"]["seq_changed"] == ["transformer.h.1.mlp.c_proj.weight"]
    assert report["ROME"]["seq_after"] != report["ROME"]["c0"]


def test_load_editor_and_edit_requests(report):
    r = report["load_editor"]
    assert r["independent_kwargs"] == {"sequential_edit": False} and r["restored"]
    assert r["summary"]["seconds_per_edit"] > 0  # AMIGEditor times the edits main does not
    assert r["summary"]["post"] == report["AMIG"]["summary"]["post"]  # same edits as through BaseEditor
    assert r["edit_requests_time"] > 0 and r["edit_requests_post"] in ([0.0], [1.0])


def test_amig_compare_on_main(report):
    c = report["compare"]
    assert c["rc"] == 0
    for method in ("AMIG", "ROME", "FT"):
        assert c["methods"][method]["error"] is None, c["methods"][method]
        assert f"| {method} | 2 |" in c["table"]
    assert "covariance (mom2) statistics from local corpus" in c["table"]


def test_unloadable_name_fails_with_one_sentence(report):
    name, message, mro = report["unsupported"]
    assert name == "UnsupportedEditorModel" and {"AmigError", "NotImplementedError"} <= set(mro)
    assert "'gemma-3-270m'" in message and "amig_plugin.easyedit.load_editor(hparams)" in message
    assert "\n" not in message and message.count(". ") == 0


def test_no_files_in_the_working_directory(report):
    assert report["logs_in_cwd"] is False


def test_one_forward_per_request_on_main(report):
    """Main's compute_edit_quality from one batched forward per request: the same metrics as
    one forward per prompt, in two forwards (main never truncates: the long prompt is batched
    too, in a chunk of its own, as padding the six short ones to its length would cost more)."""
    scored = report["batched_scoring"]
    assert scored["equal"], scored
    assert scored["forwards_per_prompt"] == 7 and scored["forwards_batched"] == 2, scored


def test_pre_edit_metrics_reused_on_main(report):
    """A request's pre-edit metrics handed to the next method through main's pre_edit: the same
    metrics, pre and post, with the unedited model not scored again."""
    pre = report["pre_edit"]
    assert pre["key"] and pre["equal"], pre
    with_all, reused = pre["forwards"]
    assert reused < with_all, pre
