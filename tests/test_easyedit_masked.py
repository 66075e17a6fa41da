"""Masked LMs through EasyEdit: EasyEdit cannot load or evaluate BERT; ``load_editor``
loads it with our loader and evaluates it with cloze versions of EasyEdit's metrics.

A tiny BERT (amig_plugin.testing's word-level tokenizer) is trained briefly to fill in capitals.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os

import pytest
import torch

from amig_plugin.easyedit.methods.amig import AMIGHyperParams
from amig_plugin.testing import tiny_bert, word_tokenizer
from amig_plugin.testing import weights_copy as state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_EASYEDITOR = importlib.util.find_spec("easyeditor") is not None
needs_easyeditor = pytest.mark.skipif(not HAS_EASYEDITOR, reason="easyeditor is not installed")

PAIRS = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid")]


def train_tiny_bert(steps: int = 300, seed: int = 0):
    tok = word_tokenizer(causal=False)
    model = tiny_bert(len(tok), seed=seed, layers=2, width=48, ffn=96)
    for m in model.modules():  # LayerNorm gains ~1 so that training starts well
        if type(m).__name__ == "LayerNorm":
            torch.nn.init.ones_(m.weight)
    texts, labels = [], []
    for country, capital in PAIRS:
        for template in ("the capital of {c} is {p} .", "{p} is a city in {c} ."):
            text = template.format(c=country, p=capital)
            ids = tok(text)["input_ids"]
            for target in (capital, country):
                pos = ids.index(tok.convert_tokens_to_ids(target))
                masked = list(ids)
                masked[pos] = tok.mask_token_id
                lab = [-100] * len(ids)
                lab[pos] = ids[pos]
                texts.append(masked)
                labels.append(lab)
    width = max(map(len, texts))
    ids = torch.tensor([t + [tok.pad_token_id] * (width - len(t)) for t in texts])
    att = (ids != tok.pad_token_id).long()
    lab = torch.tensor([l + [-100] * (width - len(l)) for l in labels])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model, tok


def fill(model, tok, text: str) -> str:
    enc = tok(text, return_tensors="pt")
    pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0])
    with torch.no_grad():
        return tok.convert_ids_to_tokens(int(model(**enc).logits[0, pos].argmax()))


@pytest.fixture(scope="module")
def bert():
    model, tok = train_tiny_bert()
    assert fill(model, tok, "the capital of france is [MASK] .") == "paris"
    return model, tok


def hparams_for(model_name: str, **kw) -> AMIGHyperParams:
    h = AMIGHyperParams.from_hparams(os.path.join(REPO, "hparams", "AMIG", "bert-base-multilingual-cased.yaml"))
    h.model_name = model_name
    h.steps = 8
    for k, v in kw.items():
        setattr(h, k, v)
    return h


EDIT = dict(
    prompts=["the capital of france is [MASK] .", "the capital of germany is <mask> ."],
    ground_truth=["paris", "berlin"], target_new=["rome", "tokyo"],
    rephrase_prompts=["paris is a city in [MASK] .", "berlin is a city in [MASK] ."],
    locality_inputs={"neighbour": {"prompt": ["the capital of spain is [MASK] .", "the capital of japan is [MASK] ."],
                                   "ground_truth": ["madrid", "tokyo"]}},
    portability_inputs={"same": {"prompt": ["the capital of france is", "the capital of germany is"],
                                 "ground_truth": ["rome", "tokyo"]},
                        "old": {"prompt": ["the capital of france is", "the capital of germany is"],
                                "ground_truth": ["paris", "berlin"]}},
    subject=["france", "germany"],
    verbose=False,
)


def test_masked_lm_metrics_shape(bert):
    from amig_plugin.easyedit.masked_lm import compute_masked_lm_edit_quality

    model, tok = bert
    record = {"prompt": "the capital of france is [MASK] .", "target_new": "paris", "ground_truth": "paris",
              "rephrase_prompt": "the capital of france is", "locality": {"n": {"prompt": "the capital of spain is <mask> .",
                                                                                "ground_truth": "madrid"}},
              "portability": {"p": {"prompt": "the capital of italy is", "ground_truth": "rome"}}}
    out = compute_masked_lm_edit_quality(model, "tiny-bert", None, tok, record, 0)
    assert out["rewrite_acc"] == [1.0] and out["rephrase_acc"] == [1.0] and out["portability"]["p_acc"] == [1.0]
    assert out["locality"]["n_output"] == [[tok.convert_tokens_to_ids("madrid")]]


@needs_easyeditor
def test_bert_end_to_end_through_easyedit(bert, tmp_path, monkeypatch):
    from amig_plugin.easyedit import load_editor, summarize

    monkeypatch.chdir(tmp_path)
    model = copy.deepcopy(bert[0])
    tok = bert[1]
    original = state(model)
    editor_mod = importlib.import_module("amig_plugin.easyedit.compat").import_easyeditor()
    ee_editor = importlib.import_module("easyeditor.editors.editor")
    causal_eval = ee_editor.compute_edit_quality
    editor = load_editor(hparams_for("tiny-bert"), model=model, tokenizer=tok)
    assert editor_mod is not None and editor.kind == "masked" and editor.model_name == "tiny-bert"
    metrics, _, weights_copy = editor.edit(**EDIT)
    assert ee_editor.compute_edit_quality is causal_eval  # the masked-LM metric was swapped in only for the call
    assert os.listdir(tmp_path) == []
    # the edit changes the prediction: the ground truth is no longer predicted. (Dai et al.'s
    # embedding rule does not reliably make a tiny BERT predict the new word itself: its MLM
    # head transforms the hidden state before the tied decoder; see test below for P(new).)
    assert [m["pre"]["portability"]["old_acc"] for m in metrics] == [[1.0], [1.0]]
    assert [m["post"]["portability"]["old_acc"] for m in metrics] == [[0.0], [0.0]]
    assert [m["pre"]["rewrite_acc"] for m in metrics] == [[0.0], [0.0]]
    assert all("neighbour_acc" in m["post"]["locality"] for m in metrics)
    summary = summarize(metrics)
    assert summary["requests"] == 2 and summary["post"]["portability.old_acc"] == 0.0
    assert "locality.neighbour_acc" in summary["post"] and "portability.same_acc" in summary["post"]
    assert all(k.startswith("bert.encoder.layer.") and k.endswith("output.dense.weight") for k in weights_copy)
    assert all(torch.equal(original[k], v) for k, v in state(model).items())  # EasyEdit's reset, bit for bit


@needs_easyeditor
def test_bert_yaml_loads_with_our_loader(bert, tmp_path, monkeypatch):
    """hparams/AMIG/bert-base-multilingual-cased.yaml with model_name pointing at a saved
    BERT folder: EasyEdit's own loader raises NotImplementedError for BERT; load_editor
    loads it (as a masked LM) and edits it."""
    from amig_plugin.easyedit import load_editor

    folder = tmp_path / "my-bert"
    bert[0].save_pretrained(folder)
    bert[1].save_pretrained(folder)
    monkeypatch.chdir(tmp_path)
    editor = load_editor(hparams_for(str(folder)))
    assert type(editor.model).__name__ == "BertForMaskedLM" and editor.model is not bert[0]
    assert fill(editor.model, editor.tok, "the capital of france is [MASK] .") == "paris"
    metrics, _, _ = editor.edit(prompts="the capital of france is [MASK] .", ground_truth="paris", target_new="rome",
                                portability_inputs={"old": {"prompt": "the capital of france is", "ground_truth": "paris"}},
                                verbose=False)
    assert metrics[0]["post"]["portability"]["old_acc"] == [0.0]


def test_update_raises_p_new_and_erase_removes_gt(bert):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model
    from amig_plugin.easyedit.masked_lm import masked_lm_predictions

    tok = bert[1]
    prompt = "the capital of france is [MASK] ."

    def p(model, word):
        enc = tok(prompt, return_tensors="pt")
        pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0])
        with torch.no_grad():
            return float(model(**enc).logits[0, pos].softmax(-1)[tok.convert_tokens_to_ids(word)])

    req = {"prompt": prompt, "ground_truth": "paris", "target_new": "rome"}
    model = copy.deepcopy(bert[0])
    before_new, before_old = p(model, "rome"), p(model, "paris")
    _, wc = apply_amig_to_model(model, tok, [req], hparams_for("x"))
    assert p(model, "rome") > 10 * before_new and p(model, "paris") < 0.5 * before_old
    assert masked_lm_predictions(model, tok, prompt, "paris")[0] != [tok.convert_tokens_to_ids("paris")]
    model = copy.deepcopy(bert[0])
    _, wc = apply_amig_to_model(model, tok, [req], hparams_for("x", edit_mode="erase"))
    assert p(model, "paris") < before_old
