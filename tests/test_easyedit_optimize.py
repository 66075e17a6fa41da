"""The AMIG EasyEdit method with ``edit_rule: optimize`` and the rule's hparams."""

from __future__ import annotations

import copy

import pytest
import torch

from amig_plugin.easyedit.methods.amig import AMIGHyperParams, HParamsError
from test_easyedit_amig import make_hparams, next_token, request, same, state, train_tiny_gpt2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return train_tiny_gpt2(str(tmp_path_factory.mktemp("opt") / "tiny-gpt2"))


def test_rule_names_and_validation():
    assert make_hparams("x").rule() == "dai"
    assert make_hparams("x", edit_mode="erase").rule() == "erase"
    assert make_hparams("x", edit_rule="optimize").rule() == "optimize"
    assert make_hparams("x", edit_rule="erase").rule() == "erase"
    for bad, fragment in [(dict(edit_rule="rome"), "edit_rule: must be"), (dict(edit_rule="dai", edit_mode="erase"), "contradicts"),
                          (dict(norm_bound=0), "norm_bound"), (dict(kl_prompts="x"), "kl_prompts"),
                          (dict(optimize_steps=0), "optimize_steps")]:
        with pytest.raises(HParamsError, match=fragment):
            make_hparams("x", **bad)
    with pytest.raises(HParamsError, match="did you mean 'edit_rule'"):
        AMIGHyperParams.from_dict({"alg_name": "AMIG", "model_name": "x", "edit_rul": "optimize"})


def test_optimize_rule_installs_target_only_in_value_vectors_and_restores(gpt2):
    from amig_plugin.easyedit.methods.amig.main import apply_amig_to_model
    from amig_plugin.models import get_family

    model, tok = copy.deepcopy(gpt2[0]), gpt2[1]
    original = state(model)
    hp = make_hparams("x", edit_rule="optimize", max_neurons=5, optimize_steps=100)
    _, wc = apply_amig_to_model(model, tok, [request(new="Tokyo")], hp)
    edit = wc.edits[0]
    assert edit["edit_rule"] == "optimize" and edit["nll_end"] < edit["nll_start"]
    assert next_token(model, tok, "The capital of France is") == " Tokyo"
    family = get_family(model)
    after = state(model)
    changed = {k for k in original if not torch.equal(original[k], after[k])}
    assert changed <= {f"transformer.h.{l}.mlp.c_proj.weight" for l, _ in edit["neurons"]} and changed
    for layer in {l for l, _ in edit["neurons"]}:
        key = f"transformer.h.{layer}.mlp.c_proj.weight"
        rows = [i for l, i in edit["neurons"] if l == layer]
        keep = [i for i in range(family.ffn_width) if i not in rows]
        assert torch.equal(original[key][keep], after[key][keep])
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, tensor in wc.items():
            params[name].copy_(tensor)
    assert same(original, state(model))


def test_likn_refuses_the_optimize_rule():
    from amig_plugin.easyedit.methods.likn import LIKNHyperParams

    with pytest.raises(HParamsError, match="not supported by LIKN"):
        LIKNHyperParams.from_dict({"alg_name": "LIKN", "model_name": "x", "edit_rule": "optimize"})
