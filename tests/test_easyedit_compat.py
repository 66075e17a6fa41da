"""Tests of amig_plugin.easyedit.compat: easyeditor==0.0.1.dev0 on modern torch/transformers.

Tests that need easyeditor are skipped, with a message, when it is not installed.
Process-level effects of the first import (logging, files, sys.modules) are checked
in a fresh subprocess, because another test may already have imported easyeditor.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from amig_plugin.easyedit import compat

HAS_EASYEDITOR = importlib.util.find_spec("easyeditor") is not None
needs_easyeditor = pytest.mark.skipif(
    not HAS_EASYEDITOR,
    reason="easyeditor is not installed (pip install --no-deps easyeditor==0.0.1.dev0)",
)
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: cuda_to_cpu is a no-op")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTENCES = [
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "The capital of Germany is Berlin.",
    "Paris is a city in France.",
    "Rome is a city in Italy.",
    "Berlin is a city in Germany.",
] * 4


def _run_python(code: str, cwd: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# tiny models, offline tokenizers
# --------------------------------------------------------------------------------------


def _save_tiny_gpt2(directory: str) -> None:
    """Byte-level BPE trained on a few sentences + random GPT-2, saved as GPT-2 files."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"])
    os.makedirs(directory, exist_ok=True)
    bpe.save_model(directory)  # vocab.json + merges.txt
    vocab_size = bpe.get_vocab_size()
    eos = bpe.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=vocab_size, n_positions=64,
        bos_token_id=eos, eos_token_id=eos, initializer_range=0.3,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("models") / "tiny-gpt2")  # 'gpt2' in the name
    _save_tiny_gpt2(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel, GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained(tiny_gpt2_dir)
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    return model, tok


@pytest.fixture(scope="module")
def tiny_bert():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import BertProcessing
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for s in SENTENCES for w in s.replace(".", " .").split()})
    vocab = {w: i for i, w in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
        # EasyEdit's KN reads encoded_input["token_type_ids"] for BERT
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.3,
    )
    return BertForMaskedLM(config).eval(), tok


def _reference_ig(model, module_of_layer, inputs: dict, pos: int, target_id: int, steps: int, n_layers: int):
    """Independent zero-baseline IG with EasyEdit's conventions: the hooked module's
    output at ``pos`` is replaced by alpha * a, alpha = linspace(0, 1, steps), F = softmax
    probability of ``target_id`` at ``pos``; score = a * sum_k dF/dz(alpha_k) / steps."""
    rows = []
    for layer in range(n_layers):
        module = module_of_layer(layer)
        captured = {}
        handle = module.register_forward_hook(
            lambda m, i, o: captured.__setitem__("a", o[0, pos].detach().clone())
        )
        with torch.no_grad():
            model(**inputs)
        handle.remove()
        a = captured["a"]
        alphas = torch.linspace(0, 1, steps)
        z = (alphas[:, None] * a[None, :]).requires_grad_(True)

        def patch(m, i, o, z=z):
            o = o.clone()
            o[:, pos] = z
            return o

        handle = module.register_forward_hook(patch)
        batch = {k: v.repeat(steps, 1) for k, v in inputs.items()}
        logits = model(**batch).logits
        handle.remove()
        prob = logits[:, pos].float().softmax(-1)[:, target_id]
        (grad,) = torch.autograd.grad(prob.sum(), z)
        rows.append(a * grad.sum(0) / steps)
    return torch.stack(rows)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    assert torch.allclose(actual.detach(), expected, rtol=1e-3, atol=1e-4 * scale), (
        (actual - expected).abs().max().item(), scale,
    )


# --------------------------------------------------------------------------------------
# package layout / import
# --------------------------------------------------------------------------------------


def test_subpackage_import_is_lazy(tmp_path):
    out = _run_python(
        """
        import json, sys
        import amig_plugin.easyedit as ae
        lazy = 'easyeditor' not in sys.modules and 'amig_plugin.easyedit.compat' not in sys.modules
        f = ae.cuda_to_cpu
        print(json.dumps({"lazy": lazy, "after": 'easyeditor' in sys.modules, "callable": callable(f)}))
        """,
        str(tmp_path),
    )
    assert out == {"lazy": True, "after": False, "callable": True}


@needs_easyeditor
def test_first_import_leaves_process_clean(tmp_path):
    out = _run_python(
        """
        import json, logging, os, random, sys, warnings
        import numpy as np, torch
        root = logging.getLogger()
        before = (list(root.handlers), root.level)
        rng = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist())
        from amig_plugin.easyedit import compat
        ee = compat.import_easyeditor()
        import transformers.modeling_utils as mu
        import easyeditor.trainer.blip2_models.Qformer as qformer
        placeholders = compat.placeholder_modules()
        missing_after = [n for n in placeholders if n in sys.modules]
        real_import = {}
        for top in sorted({p.split('.')[0] for p in placeholders}):
            try:
                __import__(top)
                real_import[top] = "imported"
            except ModuleNotFoundError:
                real_import[top] = "ModuleNotFoundError"
        print(json.dumps({
            "module": ee.__name__,
            "root_same": (list(root.handlers), root.level) == before,
            "rng_same": rng == (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()),
            "logs": os.path.exists("logs") or os.path.exists("run.log"),
            "placeholders": list(placeholders),
            "left_in_sys_modules": missing_after,
            "finder_left": any(type(f).__name__ == "_PlaceholderFinder" for f in sys.meta_path),
            "shims_left": [n for n in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices",
                                       "prune_linear_layer") if n in vars(mu)],
            "qformer_has": all(callable(getattr(qformer, n)) for n in (
                "apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer")),
            "real_import": real_import,
            "same_again": compat.import_easyeditor() is ee,
        }))
        """,
        str(tmp_path),
    )
    assert out["module"] == "easyeditor"
    assert out["root_same"], "logging.basicConfig side effect not undone"
    assert out["rng_same"]
    assert not out["logs"] and os.listdir(tmp_path) == []
    assert out["left_in_sys_modules"] == [] and not out["finder_left"]
    assert out["qformer_has"]
    assert out["same_again"]
    # every placeholder is a package that is really missing here
    for top, how in out["real_import"].items():
        assert importlib.util.find_spec(top) is None, top
        assert how == "ModuleNotFoundError"
    # what the transformers shims added was taken away again (unless transformers has them)
    import transformers.modeling_utils as mu

    native = [n for n in out["shims_left"] if n in vars(mu)]
    assert out["shims_left"] == native


@needs_easyeditor
def test_placeholder_raises_clear_import_error():
    ee = compat.import_easyeditor()
    lora_main = importlib.import_module("easyeditor.models.lora.lora_main")
    if importlib.util.find_spec("peft") is not None:
        pytest.skip("peft is installed: no placeholder to test")
    with pytest.raises(ImportError, match=r"needs package peft; pip install peft"):
        lora_main.get_peft_model(None, None)
    with pytest.raises(compat.MissingOptionalDependency):
        lora_main.AdaLoraConfig(r=8)
    assert ee.__name__ == "easyeditor"


def test_guarded_import_mechanism(tmp_path, monkeypatch):
    """The same machinery on a throw-away package with every nasty import habit."""
    pkg = tmp_path / "fake_editlib"
    pkg.mkdir()
    (tmp_path / "third_party_xyz.py").write_text(
        "try:\n    import missing_dep_of_third_party_xyz\n    SERVED = True\n"
        "except ImportError:\n    SERVED = False\n"
    )
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            import logging, random, warnings
            logging.basicConfig(level=logging.INFO)
            warnings.filterwarnings("ignore", message="fake_editlib filter")
            random.seed(1234)
            import not_installed_pkg_xyz.models.registry as registry
            from other_missing_xyz.sub import Thing, helper
            import third_party_xyz
            try:
                import json.no_such_submodule_xyz
                REAL_SUBMODULE_SERVED = True
            except ImportError:
                REAL_SUBMODULE_SERVED = False

            @registry.register_model
            def model_factory():
                return 42

            class MyThing(Thing):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    before_filters = list(warnings.filters)
    state = random.getstate()
    try:
        mod = compat._guarded_import("fake_editlib", {"not_installed_pkg_xyz": "nip-xyz"})
        assert list(root.handlers) == before_handlers and root.level == before_level
        assert list(warnings.filters) == before_filters
        assert random.getstate() == state
        assert mod.model_factory() == 42  # decorator tolerated at import time
        assert mod.third_party_xyz.SERVED is False  # only the package's own imports are served
        assert mod.REAL_SUBMODULE_SERVED is False  # missing submodules of real packages are not
        assert set(compat.placeholder_modules("fake_editlib")) == {
            "not_installed_pkg_xyz", "not_installed_pkg_xyz.models",
            "not_installed_pkg_xyz.models.registry", "other_missing_xyz", "other_missing_xyz.sub",
        }
        assert not any(n.startswith(("not_installed_pkg_xyz", "other_missing_xyz")) for n in sys.modules)
        with pytest.raises(compat.MissingOptionalDependency, match="pip install other_missing_xyz"):
            mod.MyThing()
        with pytest.raises(ImportError, match="needs package nip-xyz; pip install nip-xyz"):
            mod.registry.register_model(lambda: 0)
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("not_installed_pkg_xyz")
    finally:
        for name in [n for n in sys.modules if n.startswith(("fake_editlib", "third_party_xyz"))]:
            del sys.modules[name]


def test_removed_submodules_and_names_of_installed_packages(tmp_path, monkeypatch):
    """What an installed package no longer has (a submodule, a name) is served only where the
    package's own import of it fails uncaught, and taken away again afterwards; guarded
    imports keep their fallback; using the placeholder says what is missing."""
    import email

    pkg = tmp_path / "fake_removedlib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(
        """
        try:
            from email.gone_guarded_xyz import Fallback
        except ImportError:
            Fallback = None
        from .sub import Converter, helper, Gone
        """))
    (pkg / "sub" / "__init__.py").write_text(textwrap.dedent(
        """
        from email.removed_utils_xyz.deep import Converter, helper
        from email import gone_name_xyz as Gone
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mod = compat._guarded_import("fake_removedlib", {})
        assert mod.Fallback is None  # the guarded import kept its own fallback
        assert set(compat.removed_placeholders("fake_removedlib")) == {
            "email.removed_utils_xyz", "email.removed_utils_xyz.deep", "email.gone_name_xyz"}
        assert not any(n.startswith("email.removed_utils_xyz") or n == "email.gone_guarded_xyz" for n in sys.modules)
        assert not hasattr(email, "removed_utils_xyz") and not hasattr(email, "gone_name_xyz")
        with pytest.raises(compat.MissingOptionalDependency, match="which the installed email no longer has"):
            mod.Converter()
        with pytest.raises(compat.MissingOptionalDependency, match="email.gone_name_xyz"):
            mod.Gone()
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("email.removed_utils_xyz")
    finally:
        for name in [n for n in sys.modules if n.startswith("fake_removedlib")]:
            del sys.modules[name]


def test_find_pruneable_heads_and_indices():
    heads, index = compat._find_pruneable_heads_and_indices([1], n_heads=3, head_size=2, already_pruned_heads=set())
    assert heads == {1} and index.tolist() == [0, 1, 4, 5]
    # head 0 was pruned before: the model has 2 heads left; original head 2 is now row 1
    heads, index = compat._find_pruneable_heads_and_indices([0, 2], n_heads=2, head_size=2, already_pruned_heads={0})
    assert heads == {2} and index.tolist() == [0, 1] and index.dtype == torch.long
    shims = compat._transformers_shims()
    assert {"apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"} <= set(
        shims["transformers.modeling_utils"]
    )


# --------------------------------------------------------------------------------------
# cuda -> cpu
# --------------------------------------------------------------------------------------


@cpu_only
def test_cuda_to_cpu_maps_devices():
    from transformers import BatchEncoding

    t = torch.ones(3, dtype=torch.float32)
    lin = torch.nn.Linear(2, 2)
    with compat.cuda_to_cpu() as active:
        assert active
        assert torch.zeros(2, device="cuda:0").device.type == "cpu"
        assert torch.tensor([1.0], device=torch.device("cuda", 1)).device.type == "cpu"
        assert torch.arange(3, device=0).device.type == "cpu"
        assert t.to("cuda").device.type == "cpu"
        assert t.to("cuda:1").device.type == "cpu"
        assert t.to(torch.device("cuda")).device.type == "cpu"
        assert t.to(0).device.type == "cpu"
        assert t.to(device="cuda:0").device.type == "cpu"
        moved = t.to("cuda", torch.float64)
        assert moved.device.type == "cpu" and moved.dtype == torch.float64
        assert t.cuda().device.type == "cpu" and t.cuda(0).device.type == "cpu"
        assert t.new_zeros(2, device="cuda").device.type == "cpu"
        assert lin.to("cuda:0") is lin and lin.weight.device.type == "cpu"
        assert lin.to(torch.device("cuda:0")).weight.device.type == "cpu"
        assert lin.cuda().weight.device.type == "cpu"
        enc = BatchEncoding({"input_ids": torch.tensor([[1, 2]])}).to("cuda:0")
        assert enc["input_ids"].device.type == "cpu"
        assert (lin(torch.ones(1, 2, device="cuda")) == lin(torch.ones(1, 2))).all()
    with compat.cuda_to_cpu(enabled=False) as active:
        assert not active
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(2, device="cuda:0")


def test_cuda_to_cpu_noop_when_cuda_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with compat.cuda_to_cpu() as active:
        assert active is False
        assert torch._C._is_torch_function_mode_enabled() is False


def test_redirected_function_writes_under_base(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    base = tmp_path / "base"
    cwd.mkdir()
    base.mkdir()
    monkeypatch.chdir(cwd)

    def summary_like(data):  # what GitHub main's summary_metrics does with files
        logs_dir = "./logs"
        if not os.path.exists(logs_dir):
            os.makedirs(logs_dir)
        with open(os.path.join(logs_dir, "results.json"), "w") as f:
            json.dump(data, f)
        return "done"

    assert compat._redirected_function(summary_like, str(base))({"a": 1}) == "done"
    assert os.listdir(cwd) == []
    assert json.loads((base / "logs" / "results.json").read_text()) == {"a": 1}


# --------------------------------------------------------------------------------------
# registries, flavour
# --------------------------------------------------------------------------------------


@needs_easyeditor
def test_alg_dict_is_the_editor_registry():
    registry = compat.alg_dict()
    editor = importlib.import_module("easyeditor.editors.editor")
    assert registry is editor.ALG_DICT
    assert "KN" in registry and "ROME" in registry

    def apply_dummy(model, tok, requests, hparams, **kwargs):
        return model, {}

    registry["AMIG_TEST"] = apply_dummy
    try:
        assert editor.ALG_DICT["AMIG_TEST"] is apply_dummy
    finally:
        del registry["AMIG_TEST"]
    regs = compat.registries()
    assert regs["ALG_DICT"] is registry
    assert "BatchEditor" in regs


@needs_easyeditor
def test_flavour():
    from importlib.metadata import version

    flavour = compat.easyedit_flavour()
    assert flavour in ("pypi-0.0.1.dev0", "github-main")
    if version("easyeditor") == "0.0.1.dev0":
        assert flavour == "pypi-0.0.1.dev0"
        assert "CALLABLE_RESTORE_ALGS" not in compat.registries()


# --------------------------------------------------------------------------------------
# EasyEdit's KnowledgeNeurons on tiny models, against an independent IG computation
# --------------------------------------------------------------------------------------


def _kn_class():
    compat.import_easyeditor()
    module = importlib.import_module("easyeditor.models.kn.knowledge_neurons.knowledge_neurons")
    return module.KnowledgeNeurons


@needs_easyeditor
def test_kn_get_scores_gpt2_matches_reference(tiny_gpt2):
    model, tok = tiny_gpt2
    KnowledgeNeurons = _kn_class()
    kn = KnowledgeNeurons(model, tok, model_type="gpt2", device="cpu")
    prompt, target = "The capital of France is", " Paris"
    (target_id,) = tok.encode(target)
    steps = 6
    scores = kn.get_scores(prompt, target, batch_size=3, steps=steps, pbar=False)
    assert scores.shape == (2, 4 * 64)  # [n_layers, width of mlp.c_fc output]
    inputs = dict(tok(prompt, return_tensors="pt"))
    ref = _reference_ig(
        model, lambda l: model.transformer.h[l].mlp.c_fc, inputs, pos=-1, target_id=target_id,
        steps=steps, n_layers=2,
    )
    _assert_close(scores, ref)
    # the hooked activation is mlp.c_fc's output: *before* the GELU
    assert type(model.transformer.h[0].mlp.c_fc).__name__ == "Conv1D"


@needs_easyeditor
def test_kn_gpt2_multi_token_target_uses_the_same_position(tiny_gpt2):
    """For model_type 'gpt2' EasyEdit never re-encodes the prompt (it tests
    ``model_type == "gpt"``): every target token is scored at the last prompt position
    and the per-token IG are averaged."""
    model, tok = tiny_gpt2
    kn = _kn_class()(model, tok, model_type="gpt2", device="cpu")
    prompt, target = "The capital of Italy is", " Rome."
    ids = tok.encode(target)
    assert len(ids) == 2
    scores = kn.get_scores(prompt, target, batch_size=2, steps=4, pbar=False)
    inputs = dict(tok(prompt, return_tensors="pt"))
    refs = [
        _reference_ig(model, lambda l: model.transformer.h[l].mlp.c_fc, inputs, -1, t, 4, 2) for t in ids
    ]
    _assert_close(scores, (refs[0] + refs[1]) / 2)


@needs_easyeditor
def test_kn_get_scores_bert_matches_reference(tiny_bert):
    model, tok = tiny_bert
    kn = _kn_class()(model, tok, model_type="bert", device="cpu")
    prompt, target = "The capital of France is [MASK] .", "Paris"
    inputs = dict(tok(prompt, return_tensors="pt"))
    mask_pos = inputs["input_ids"][0].tolist().index(tok.mask_token_id)
    scores = kn.get_scores(prompt, target, batch_size=2, steps=4, pbar=False)
    assert scores.shape == (2, 64)  # [n_layers, intermediate_size]
    ref = _reference_ig(
        model, lambda l: model.bert.encoder.layer[l].intermediate, inputs, pos=mask_pos,
        target_id=tok.convert_tokens_to_ids(target), steps=4, n_layers=2,
    )
    _assert_close(scores, ref)


@needs_easyeditor
@cpu_only
def test_kn_with_hard_coded_cuda_device_runs_under_cuda_to_cpu(tiny_gpt2):
    model, tok = tiny_gpt2
    KnowledgeNeurons = _kn_class()
    with compat.cuda_to_cpu():
        kn = KnowledgeNeurons(model, tok, model_type="gpt2", device="cuda:0")
        scores = kn.get_scores("The capital of France is", " Paris", batch_size=2, steps=2, pbar=False)
    assert scores.device.type == "cpu" and torch.isfinite(scores).all()


# --------------------------------------------------------------------------------------
# a whole BaseEditor.edit() with KN on CPU, no files, logging untouched
# --------------------------------------------------------------------------------------


@needs_easyeditor
def test_base_editor_kn_edit_end_to_end(tiny_gpt2_dir, tmp_path, monkeypatch):
    compat.import_easyeditor()
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    kn_mod = importlib.import_module("easyeditor.models.kn")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    hparams = kn_mod.KNHyperParams(
        lr_scale=1.0, n_toks=10, model_name=tiny_gpt2_dir, refine=False, batch_size=1, steps=2,
        adaptive_threshold=0.2, p=0.4, device=0, alg_name="KN",
    )
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    editor_log = logging.getLogger("easyeditor.editors.editor")
    log_handlers = list(editor_log.handlers)
    with compat.easyedit_runtime():
        editor = editor_mod.BaseEditor.from_hparams(hparams)
        original = {k: v.clone() for k, v in editor.model.state_dict().items()}
        metrics, edited_model, weights_copy = editor.edit(
            prompts="The capital of France is", ground_truth=" Paris", target_new=" Rome",
            keep_original_weight=True, verbose=False,
        )
    assert os.listdir(cwd) == [], "easyeditor wrote files into the working directory"
    assert (list(root.handlers), root.level) == before
    assert list(editor_log.handlers) == log_handlers
    assert len(metrics) == 1 and "pre" in metrics[0] and "post" in metrics[0]
    assert "rewrite_acc" in metrics[0]["post"]
    assert callable(weights_copy)  # KN returns its unpatch function; PyPI calls it after the edit
    restored = editor.model.state_dict()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert next(editor.model.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@needs_easyeditor
def test_quiet_logging_with_log_dir(tiny_gpt2_dir, tmp_path, monkeypatch):
    compat.import_easyeditor()
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    kn_mod = importlib.import_module("easyeditor.models.kn")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    hparams = kn_mod.KNHyperParams(
        lr_scale=1.0, n_toks=10, model_name=tiny_gpt2_dir, refine=False, batch_size=1, steps=2,
        adaptive_threshold=0.2, p=0.4, device=0, alg_name="KN",
    )
    original_make_logs = editor_mod.make_logs
    editor_log = logging.getLogger("easyeditor.editors.editor")
    n_handlers = len(editor_log.handlers)
    logs = tmp_path / "mylogs"
    with compat.easyedit_runtime(log_dir=str(logs)) as _:
        editor_mod.BaseEditor(hparams)
        editor_mod.BaseEditor(hparams)
    assert editor_mod.make_logs is original_make_logs
    assert os.listdir(cwd) == []
    assert (logs / "run.log").exists()
    added = editor_log.handlers[n_handlers:]
    assert len(added) == 1  # one file handler however many editors were built
    for handler in added:
        editor_log.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------------------
# EasyEdit's generate_fast on a forward that takes the cache as ``cache``
# --------------------------------------------------------------------------------------


class _CacheOnlyOutput:
    """An output with the newer field name only: ``cache``, no ``past_key_values``."""

    __dataclass_fields__ = {"logits": None, "cache": None}

    def __init__(self, logits, cache):
        self.logits = logits
        self.cache = cache


class _CacheOnlyLM(torch.nn.Module):
    """A causal LM whose forward takes the key/value cache as ``cache`` and has no
    ``past_key_values`` keyword (transformers >= 5.40): a tiny GPT-2 underneath."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.name_or_path = "tiny-cache-only"

    def forward(self, input_ids=None, attention_mask=None, cache=None, use_cache=False):
        from amig_plugin.models.kv_cache import cache_keyword, returned_cache

        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         **{cache_keyword(self.inner): cache})
        return _CacheOnlyOutput(out.logits, returned_cache(out))


@needs_easyeditor
def test_generate_fast_runs_on_a_model_whose_forward_takes_only_cache(tiny_gpt2):
    model, tok = tiny_gpt2
    compat.import_easyeditor()
    generate = importlib.import_module("easyeditor.util.generate")
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    cache_only = _CacheOnlyLM(model).eval()
    prompts = ["The capital of France is", "Rome is a city in"]
    with pytest.raises(TypeError, match="past_key_values"):
        generate.generate_fast(cache_only, tok, prompts, top_k=1, max_out_len=12)
    with compat.cache_keyword_generation() as patched:
        assert patched >= 1 and hasattr(generate.generate_fast, "__amig_cache_shim__")
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # no deprecated keyword reaches transformers
            shimmed = generate.generate_fast(cache_only, tok, prompts, top_k=1, max_out_len=12)
    assert not hasattr(generate.generate_fast, "__amig_cache_shim__"), "the patch outlived its block"
    # the same greedy text as the plain model run through the same code (top_k=1: no sampling)
    with compat.cache_keyword_generation():
        plain = generate.generate_fast(model, tok, prompts, top_k=1, max_out_len=12)
    assert shimmed == plain and all(len(text) > len(p) for text, p in zip(shimmed, prompts))


@needs_easyeditor
def test_hooked_base_editor_edits_with_the_generation_shim(tiny_gpt2_dir, tmp_path, monkeypatch):
    from amig_plugin.easyedit import editor_hook

    compat.import_easyeditor()
    editor_mod = importlib.import_module("easyeditor.editors.editor")
    kn_mod = importlib.import_module("easyeditor.models.kn")
    generate = importlib.import_module("easyeditor.util.generate")
    seen = []

    def edit(self, *args, **kwargs):
        seen.append(hasattr(generate.generate_fast, "__amig_cache_shim__"))
        return "edited"

    monkeypatch.setattr(editor_mod.BaseEditor, "edit", edit)
    monkeypatch.chdir(tmp_path)
    hparams = kn_mod.KNHyperParams(
        lr_scale=1.0, n_toks=10, model_name=tiny_gpt2_dir, refine=False, batch_size=1, steps=2,
        adaptive_threshold=0.2, p=0.4, device=0, alg_name="KN",
    )
    installed_now = editor_hook.install()
    try:
        with compat.quiet_easyeditor_logging():
            editor = editor_mod.BaseEditor(hparams)
        assert editor.edit("The capital of France is") == "edited"
    finally:
        if installed_now:
            editor_hook.uninstall()
    assert seen == [True]
    assert not hasattr(generate.generate_fast, "__amig_cache_shim__")
