"""AMIG inside EasyEdit: registration, hyper-parameters, the apply function under PyPI's
and GitHub main's calling conventions, exact restore, sequential edits.

A tiny GPT-2 (byte-level BPE, so EasyEdit's own loader and ``GPT2Tokenizer`` accept it)
is trained for a few hundred steps on capital-city facts, so that an edit has a
prediction to change. Tests that need easyeditor are skipped when it is missing.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from amig_plugin.easyedit.methods.amig import VALID_KEYS, AMIGHyperParams, HParamsError
from amig_plugin.testing import same_weights as same
from amig_plugin.testing import weights_copy as state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_EASYEDITOR = importlib.util.find_spec("easyeditor") is not None
needs_easyeditor = pytest.mark.skipif(not HAS_EASYEDITOR, reason="easyeditor is not installed (pip install --no-deps easyeditor==0.0.1.dev0)")

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("China", "Beijing")]
SENTENCES = [s for c, p in CAPITALS for s in (f"The capital of {c} is {p}.", f"{c}'s capital is {p}.", f"{p} is a city in {c}.")]


def train_tiny_gpt2(directory: str, steps: int = 300, seed: int = 0):
    """Byte-level BPE + 2-layer GPT-2 trained on SENTENCES; saved to ``directory`` (whose
    name must contain 'gpt' for EasyEdit's loader). Returns (model, tokenizer)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest
    try:
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(SENTENCES * 3, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
        os.makedirs(directory, exist_ok=True)
        bpe.save_model(directory)
        tok = GPT2Tokenizer.from_pretrained(directory)
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        torch.manual_seed(seed)
        config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_inner=128, vocab_size=len(tok), n_positions=128,
                            bos_token_id=eos, eos_token_id=eos, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
        enc = [tok("<|endoftext|>" + s)["input_ids"] for s in SENTENCES]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), eos)
        att = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e)
            att[i, : len(e)] = 1
        labels = ids.masked_fill(att == 0, -100)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        model.save_pretrained(directory)
        tok.save_pretrained(directory)
    finally:
        torch.set_num_threads(threads)
    return model, tok


def next_token(model, tok, prompt: str) -> str:
    with torch.no_grad():
        logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1]
    return tok.decode(int(logits.argmax()))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("ee") / "tiny-gpt2")
    train_tiny_gpt2(directory)
    return directory


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    from transformers import GPT2LMHeadModel, GPT2Tokenizer

    return GPT2LMHeadModel.from_pretrained(gpt2_dir).eval(), GPT2Tokenizer.from_pretrained(gpt2_dir)


def make_hparams(model_name, **kw) -> AMIGHyperParams:
    base = dict(alg_name="AMIG", model_name=model_name, device=0, steps=8, ig_batch_size=64)
    base.update(kw)
    return AMIGHyperParams(**base)


def request(country="France", capital="Paris", new="Rome", **extra):
    r = {"prompt": f"The capital of {country} is", "ground_truth": capital, "target_new": new,
         "subject": country, "portability": {}, "locality": {}}
    r.update(extra)
    return r


# --------------------------------------------------------------------------------------
# hyper-parameters


def test_shipped_yamls_are_valid_and_real_ig():
    folder = os.path.join(REPO, "hparams", "AMIG")
    names = sorted(os.listdir(folder))
    for model in ("bert-base-multilingual-cased", "mGPT", "gpt2", "bert-base-cased", "gemma-3-270m", "Qwen2.5-7B"):
        assert f"{model}.yaml" in names, names
    for name in names:
        h = AMIGHyperParams.from_hparams(os.path.join(folder, name))
        assert h.alg_name == "AMIG" and h.steps >= 2 and h.batch_size == 1
        assert h.quadrature != "linspace" or h.steps > 2
    # EasyEdit's convention: the suffix may be left out
    assert AMIGHyperParams.from_hparams(os.path.join(folder, "gpt2")).model_name == "gpt2"


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "h.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_misspelled_key_is_named_with_suggestion_and_valid_keys(tmp_path):
    path = _write(tmp_path, """
        alg_name: AMIG
        model_name: gpt2
        lamda_new: 4.0
    """)
    with pytest.raises(HParamsError) as err:
        AMIGHyperParams.from_hparams(path)
    msg = str(err.value)
    assert "'lamda_new'" in msg and "did you mean 'lambda_new'" in msg
    assert all(k in msg for k in VALID_KEYS)
    assert path in msg


def test_missing_required_key(tmp_path):
    with pytest.raises(HParamsError, match=r"missing required key\(s\) \['model_name'\]"):
        AMIGHyperParams.from_hparams(_write(tmp_path, "alg_name: AMIG\n"))


@pytest.mark.parametrize("extra, fragment", [
    ("steps: 1", "steps: must be an integer >= 2"),
    ("edit_mode: replace", "edit_mode: must be one of"),
    ("method: rome", "method: must be one of"),
    ("tau: 1.5", "tau: must be null"),
    ("batch_size: 4", "batch_size: must be 1"),
    ("max_neurons: 0", "max_neurons"),
    ("sequential: maybe", "sequential: must be true or false"),
    ("lambda_new: '1e1'", None),  # EasyEdit's scientific-notation rule: accepted as 10.0
])
def test_bad_values(tmp_path, extra, fragment):
    path = _write(tmp_path, f"alg_name: AMIG\nmodel_name: gpt2\n{extra}\n")
    if fragment is None:
        assert AMIGHyperParams.from_hparams(path).lambda_new == 10.0
        return
    with pytest.raises(HParamsError, match=fragment):
        AMIGHyperParams.from_hparams(path)


def test_wrong_alg_empty_and_missing_files(tmp_path):
    with pytest.raises(HParamsError, match="alg_name: must be 'AMIG'"):
        AMIGHyperParams.from_hparams(_write(tmp_path, "alg_name: ROME\nmodel_name: gpt2\n"))
    with pytest.raises(HParamsError, match="empty"):
        AMIGHyperParams.from_hparams(_write(tmp_path, "\n"))
    with pytest.raises(HParamsError, match="mapping"):
        AMIGHyperParams.from_hparams(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(HParamsError, match="no such hparams file"):
        AMIGHyperParams.from_hparams(str(tmp_path / "nope.yaml"))
    with pytest.raises(HParamsError, match="steps"):
        AMIGHyperParams(alg_name="AMIG", model_name="gpt2", steps=1)


def test_tau_per_language():
    h = make_hparams("gpt2")
    assert (h.tau_for("en"), h.tau_for("zh"), h.tau_for("de")) == (0.3, 0.2, 0.2)
    assert make_hparams("gpt2", tau=0.5).tau_for("zh") == 0.5


# --------------------------------------------------------------------------------------
# registration and dispatch


def test_import_and_register_are_lazy(tmp_path):
    code = """
        import sys, json
        import amig_plugin, amig_plugin.easyedit
        from amig_plugin.easyedit import AMIGHyperParams
        print(json.dumps({"easyeditor": "easyeditor" in sys.modules, "torch": "torch" in sys.modules}))
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '{"easyeditor": false, "torch": false}'


@needs_easyeditor
def test_register_twice_is_harmless():
    import amig_plugin
    from amig_plugin.easyedit import compat
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model
    from amig_plugin.easyedit.registration import register

    first = amig_plugin.register()
    table = compat.alg_dict()
    before = dict(table)
    second = register()
    assert second["registered_now"] is False and first["alg_name"] == "AMIG"
    assert table["AMIG"] is apply_amig_to_model
    assert dict(table) == before  # nothing else changed
    assert table is importlib.import_module("easyeditor.editors.editor").ALG_DICT  # mutated, not replaced
    table["AMIG"] = print
    try:
        with pytest.raises(RuntimeError, match="force=True"):
            register()
        assert register(force=True)["registered_now"] is True
    finally:
        table["AMIG"] = apply_amig_to_model


@needs_easyeditor
def test_base_editor_dispatches_edits_and_restores(gpt2_dir, tmp_path, monkeypatch):
    """PyPI's BaseEditor, loading the model itself: AMIG is our function, the edit changes
    the prediction, EasyEdit's reset restores every weight bit for bit, no files written."""
    import amig_plugin
    from amig_plugin.easyedit import compat
    from amig_plugin.easyedit.methods.amig.main import WeightsCopy, apply_amig_to_model

    amig_plugin.register()
    BaseEditor = importlib.import_module("easyeditor.editors.editor").BaseEditor
    monkeypatch.chdir(tmp_path)
    hparams = make_hparams(gpt2_dir)
    with compat.easyedit_runtime():
        editor = BaseEditor.from_hparams(hparams)
        assert editor.apply_algo is apply_amig_to_model
        original = state(editor.model)
        assert next_token(editor.model, editor.tok, "The capital of France is") == " Paris"
        metrics, edited, weights_copy = editor.edit(
            prompts=["The capital of France is", "The capital of Germany is"],
            ground_truth=["Paris", "Berlin"], target_new=["Rome", "Tokyo"],
            rephrase_prompts=["France's capital is", "Germany's capital is"],
            locality_inputs={"neighbour": {"prompt": ["The capital of Spain is", "The capital of Egypt is"],
                                           "ground_truth": ["Madrid", "Cairo"]}},
            subject=["France", "Germany"], verbose=False,
        )
    assert os.listdir(tmp_path) == []
    assert isinstance(weights_copy, WeightsCopy) and weights_copy and all(k.endswith("c_proj.weight") for k in weights_copy)
    assert [m["pre"]["rewrite_acc"] for m in metrics] == [[0.0], [0.0]]
    assert [m["post"]["rewrite_acc"] for m in metrics] == [[1.0], [1.0]]
    assert all("neighbour_acc" in m["post"]["locality"] for m in metrics)
    assert same(original, state(editor.model))  # reset after each edit, bit for bit
    edit = weights_copy.edits[0]
    assert edit["lang"] == "en" and edit["tau"] == 0.3 and 1 <= len(edit["neurons"]) <= 20
    assert abs(edit["completeness_residual"]) < 0.05


# --------------------------------------------------------------------------------------
# the apply function called as GitHub main calls it


def _main_restore(model, weights_copy) -> None:
    """GitHub main's ``restore_after_edit`` for an algorithm outside CALLABLE_RESTORE_ALGS,
    PEFT_RESTORE_ALGS and KEEP_EDITED_MODEL_ALGS: ``copy_to_param`` per item."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in weights_copy.items():
            params[key].copy_(torch.as_tensor(value).to(device=params[key].device, dtype=params[key].dtype))


def test_apply_with_github_main_keywords_and_restore(gpt2):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model

    model = copy.deepcopy(gpt2[0])
    tok = gpt2[1]
    original = state(model)
    hparams = make_hparams("tiny-gpt2")
    # editor.edit_requests -> edit_func (sequential_edit=False): keywords exactly as main passes them
    edited, weights_copy = apply_amig_to_model(model, tok, [request()], hparams, copy=False,
                                               return_orig_weights=True, keep_original_weight=False, train_ds=None)
    assert edited is model and isinstance(weights_copy, dict) and len(weights_copy) > 0
    assert next_token(model, tok, "The capital of France is") == " Rome"
    _main_restore(model, weights_copy)
    assert same(original, state(model))
    assert next_token(model, tok, "The capital of France is") == " Paris"

    # sequential_edit=True: main never restores; each call returns the originals of what it changed
    _, first = apply_amig_to_model(model, tok, [request()], hparams, copy=False,
                                   return_orig_weights=True, keep_original_weight=False, train_ds=None)
    _, second = apply_amig_to_model(model, tok, [request("Germany", "Berlin", "Tokyo", subject="Germany")], hparams,
                                    copy=False, return_orig_weights=True, keep_original_weight=False, train_ds=None)
    assert first and second and not same(original, state(model))
    _main_restore(model, second)
    _main_restore(model, first)
    assert same(original, state(model))

    # batch_edit: several requests in one call, no keep_original_weight / train_ds
    _, both = apply_amig_to_model(model, tok, [request(), request("Germany", "Berlin", "Tokyo")], hparams,
                                  copy=False, return_orig_weights=True)
    assert len(both.edits) == 2
    _main_restore(model, both)
    assert same(original, state(model))


def test_copy_true_leaves_the_model_alone(gpt2):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model

    model, tok = gpt2
    original = state(model)
    edited, weights_copy = apply_amig_to_model(model, tok, [request()], make_hparams("x"), copy=True)
    assert edited is not model and same(original, state(model))
    assert next_token(edited, tok, "The capital of France is") == " Rome"
    _main_restore(edited, weights_copy)
    assert same(original, state(edited))


def test_erase_mode_and_kn_method(gpt2):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model
    from amig_plugin.models import get_family

    model = copy.deepcopy(gpt2[0])
    tok = gpt2[1]

    def p_paris() -> float:
        with torch.no_grad():
            logits = model(**tok("The capital of France is", return_tensors="pt")).logits[0, -1]
        return float(logits.softmax(-1)[tok(" Paris")["input_ids"][0]])

    before = p_paris()
    _, wc = apply_amig_to_model(model, tok, [request(target_new=None)], make_hparams("x", edit_mode="erase", method="kn"))
    assert wc.edits[0]["method"] == "kn"
    family = get_family(model)
    for layer, index in wc.edits[0]["neurons"]:
        assert torch.count_nonzero(family.value_vectors(layer)[index]) == 0
    assert p_paris() < before
    _main_restore(model, wc)
    assert abs(p_paris() - before) == 0.0


def test_missing_ground_truth_and_multi_token_target(gpt2):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model

    model = copy.deepcopy(gpt2[0])
    tok = gpt2[1]
    for missing in (None, "<|endoftext|>"):  # main's and PyPI's defaults
        with pytest.raises(ValueError, match="pass ground_truth"):
            apply_amig_to_model(model, tok, [request(capital=missing)], make_hparams("x"))
    target = "Rome Tokyo"  # two words -> several BPE tokens
    assert len(tok(" " + target)["input_ids"]) > 1
    original = state(model)
    _, wc = apply_amig_to_model(model, tok, [request(new=target)], make_hparams("x"))
    assert wc.edits[0]["neurons"]
    _main_restore(model, wc)
    assert same(original, state(model))


@needs_easyeditor
def test_sequential_hparam_accumulates_under_pypi_resets(gpt2_dir, tmp_path, monkeypatch):
    """``sequential: true`` on PyPI (which resets after every request): request 2 is edited
    and evaluated on top of request 1's edit; after edit() the model is pristine again and
    reapply_sequence() brings back both edits."""
    from amig_plugin.easyedit import end_sequence, load_editor, reapply_sequence, sequence_state

    monkeypatch.chdir(tmp_path)
    editor = load_editor(make_hparams(gpt2_dir, sequential=True))
    original = state(editor.model)
    metrics, _, weights_copy = editor.edit(
        prompts=["The capital of France is", "The capital of Germany is"], ground_truth=["Paris", "Berlin"],
        target_new=["Rome", "Tokyo"],
        portability_inputs={"first_edit": {"prompt": ["The capital of France is"] * 2, "ground_truth": ["Rome"] * 2}},
        verbose=False,
    )
    # the second request was evaluated with the first edit still in place
    assert metrics[1]["post"]["portability"]["first_edit_acc"] == [1.0]
    assert same(original, state(editor.model))  # PyPI reset to the pristine weights
    assert all(torch.equal(v, original[k]) for k, v in weights_copy.items())
    assert len(sequence_state(editor.model).edits) == 2
    # the same two edits done by hand, one after the other without a reset in between
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model

    manual = copy.deepcopy(editor.model)
    for r in (request(), request("Germany", "Berlin", "Tokyo")):
        apply_amig_to_model(manual, editor.tok, [r], make_hparams(gpt2_dir))
    assert reapply_sequence(editor.model)
    assert same(state(manual), state(editor.model))
    assert next_token(editor.model, editor.tok, "The capital of France is") == " Rome"
    end_sequence(editor.model, restore=True)
    assert same(original, state(editor.model)) and sequence_state(editor.model) is None


def test_from_json_and_to_dict_round_trip(tmp_path):
    import json

    h = make_hparams("gpt2", tau=0.25, layers=[0, 1])
    path = tmp_path / "h.json"
    path.write_text(json.dumps(h.to_dict()))
    assert AMIGHyperParams.from_json(path) == h == AMIGHyperParams.from_hparams(str(path))
    path.write_text(json.dumps({**h.to_dict(), "stepz": 3}))
    with pytest.raises(HParamsError, match="did you mean 'steps'"):
        AMIGHyperParams.from_json(path)
