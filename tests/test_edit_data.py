"""Edit-data formats: each parsed from a small hand-made file with known answers, the
detector, and the errors that name file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amig_plugin.data.edits import (EditDataError, EditRequest, PromptAnswer, UnknownFormatError, detect_format,
                                   load_requests, merge_languages, with_model_ground_truth)
from amig_plugin.errors import AmigError

# the shared data sets live next to the repository (or next to a folder of worktrees)
SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[1].parents
               if (p / "shared" / "data").is_dir()), Path(__file__).resolve().parents[1].parent / "shared" / "data")


def write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


ZSRE = [
    {"case_id": 7, "subject": "Christiane Cohendy", "src": "What is the native language of Christiane Cohendy?",
     "rephrase": "What's Christiane Cohendy's mother tongue?", "alt": "German", "answers": ["French"],
     "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare",
     "portability": {"New Question": "Which country does Cohendy's language come from?", "New Answer": "Germany"}},
    {"subject": "Danube", "src": "Which sea does the Danube flow into?", "rephrase": "Where does the Danube end?",
     "alt": "North Sea", "loc": "nq question: capital of peru", "loc_ans": "Lima"},
]


def test_zsre_mend(tmp_path):
    path = write(tmp_path, "zsre.json", ZSRE)
    assert detect_format(path) == "zsre"
    a, b = load_requests(path)
    assert (a.prompt, a.subject, a.target_new, a.ground_truth) == (
        "What is the native language of Christiane Cohendy?", "Christiane Cohendy", "German", "French")
    assert a.rephrase == ("What's Christiane Cohendy's mother tongue?",)
    assert a.locality == (PromptAnswer("nq question: who wrote hamlet", "Shakespeare"),)
    assert a.portability == (PromptAnswer("Which country does Cohendy's language come from?", "Germany"),)
    assert (a.case_id, a.source, a.lang, a.ground_truth_source) == ("7", "zsre", "en", "data")
    # no answers: no ground truth, the caller must take the model's prediction
    assert b.ground_truth is None and b.ground_truth_source == "none" and b.case_id == "1"
    assert b.target_new == "North Sea"


def test_counterfact_mend_and_requested_rewrite(tmp_path):
    mend = write(tmp_path, "cf.json", [{"case_id": 2, "subject": "Toko Yasuda", "src": "Toko Yasuda, the",
                                        "rephrase": "Toko Yasuda is incredible at", "alt": "piano",
                                        "loc": "John Lennon performs on the", "loc_ans": "guitar"}])
    assert detect_format(mend) == "counterfact"
    (r,) = load_requests(mend)
    assert (r.prompt, r.target_new, r.ground_truth, r.source) == ("Toko Yasuda, the", "piano", None, "counterfact")
    assert r.locality == (PromptAnswer("John Lennon performs on the", "guitar"),)

    rr = write(tmp_path, "cf_rome.json", [{
        "case_id": 0,
        "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                              "subject": "Danielle Darrieux", "target_new": {"str": "English", "id": "Q1860"},
                              "target_true": {"str": "French", "id": "Q150"}},
        "paraphrase_prompts": ["Shayna does this and Yossel goes still. Danielle Darrieux is a native speaker of"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is", "The native language of Montesquieu is"],
        "attribute_prompts": ["J. R. R. Tolkien is a native speaker of"],
    }])
    assert detect_format(rr) == "counterfact"
    (r,) = load_requests(rr)
    assert r.prompt == "The mother tongue of Danielle Darrieux is"
    assert (r.subject, r.target_new, r.ground_truth, r.ground_truth_source) == (
        "Danielle Darrieux", "English", "French", "data")
    assert [p.answer for p in r.locality] == ["French", "French"]
    assert r.locality[1].prompt == "The native language of Montesquieu is"
    assert len(r.rephrase) == 1


def test_counterfact_requested_rewrite_needs_subject_slot(tmp_path):
    path = write(tmp_path, "cf.json", [{"requested_rewrite": {"prompt": "no slot", "subject": "X",
                                                              "target_new": {"str": "a"}, "target_true": {"str": "b"}}}])
    with pytest.raises(EditDataError, match=r"record 0\.requested_rewrite.*'\{\}'"):
        load_requests(path)


def test_knowedit(tmp_path):
    path = write(tmp_path, "knowedit.json", [{
        "subject": "Sun Dongdong", "prompt": "The occupation of Sun Dongdong is", "target_new": "film director",
        "ground_truth": ["composer"], "rephrase": "Sun Dongdong works as a",
        "portability": {"Reasoning": [{"prompt": "Sun Dongdong directs", "ground_truth": [["films", "movies"]]}],
                        "Subject_Aliasing": [{"prompt": "The occupation of D. Sun is", "ground_truth": ["film director"]}]},
        "locality": {"Relation_Specificity": [{"prompt": "The nationality of Sun Dongdong is", "ground_truth": ["Chinese"]}]},
    }, {"concept": "Rust", "text": "Rust is a", "labels": "programming language"}])
    assert detect_format(path) == "knowedit"
    a, b = load_requests(path)
    assert (a.prompt, a.target_new, a.ground_truth, a.rephrase) == (
        "The occupation of Sun Dongdong is", "film director", "composer", ("Sun Dongdong works as a",))
    assert a.portability == (PromptAnswer("Sun Dongdong directs", "films"),
                             PromptAnswer("The occupation of D. Sun is", "film director"))
    assert a.locality == (PromptAnswer("The nationality of Sun Dongdong is", "Chinese"),)
    assert (b.subject, b.prompt, b.target_new, b.ground_truth) == ("Rust", "Rust is a", "programming language", None)


def test_mzsre_pairs_map_file_codes_to_iso(tmp_path):
    def side(src, alt, loc_ans="x"):
        return {"subject": "S", "src": src, "rephrase": src + " (r)", "alt": alt, "loc": "l " + src, "loc_ans": loc_ans,
                "portability": {"New Question": "q " + src, "New Answer": "a " + alt}}
    cz = write(tmp_path, "en-cz.json", [{"en": side("When was S founded?", "2006"), "cz": side("Kdy vznikl S?", "2006")}])
    du = write(tmp_path, "en-du.json", [{"en": side("When was S founded?", "2006"), "du": side("Wanneer is S opgericht?", "2006")}])
    assert detect_format(cz) == "mzsre"
    (r_cs,) = load_requests(cz)
    assert r_cs.lang == "en" and set(r_cs.other_languages) == {"cs"}
    cs = r_cs.other_languages["cs"]
    assert (cs.prompt, cs.lang, cs.target_new, cs.ground_truth) == ("Kdy vznikl S?", "cs", "2006", None)
    assert cs.portability == (PromptAnswer("q Kdy vznikl S?", "a 2006"),)
    merged = merge_languages([r_cs], load_requests(du))
    assert set(merged[0].other_languages) == {"cs", "nl"}
    assert merged[0].other_languages["nl"].prompt == "Wanneer is S opgericht?"


def test_facts_jsonl(tmp_path):
    facts = [{"id": f"P36-{c}", "relation": "P36", "subject": {"en": c.title()}, "object": {"en": a},
              "prompts": {"en": [f"The capital of {c.title()} is <mask>.", f"{c.title()}'s capital is <mask>."]},
              "candidates": {"en": ["Paris", "Berlin", "Rome"]}}
             for c, a in [("france", "Paris"), ("germany", "Berlin")]]
    facts.append({"id": "P103-x", "relation": "P103", "subject": {"en": "X"}, "object": {"en": "French"},
                  "prompts": {"en": ["The native language of X is <mask>."]}, "candidates": {"en": ["French", "Dutch"]}})
    path = write(tmp_path, "facts.jsonl", facts)
    assert detect_format(path) == "facts"
    reqs = {r.case_id: r for r in load_requests(path)}
    fr = reqs["P36-france"]
    assert (fr.prompt, fr.ground_truth) == ("The capital of France is", "Paris")
    assert fr.target_new in {"Berlin", "Rome"} and fr.rephrase == ("France's capital is",)
    assert fr.locality == (PromptAnswer("The native language of X is", "French"),)


def _check_bmlama_requests(src: Path):
    assert detect_format(src) == "bmlama"
    reqs = load_requests(src, limit=3)
    assert len(reqs) == 3 and all(r.ground_truth and r.target_new != r.ground_truth for r in reqs)
    return reqs


def test_bmlama_directory(bmlama_dir):
    """A BMLAMA folder written from the shipped facts (en, zh): runs without the real data set."""
    reqs = _check_bmlama_requests(bmlama_dir)
    assert "zh" in reqs[0].other_languages


def test_bmlama17_directory_has_every_language(tmp_path):
    src = SHARED / "bmlama17"
    if not (src / "en.tsv").exists():
        pytest.skip("the real BMLAMA-17 data set is not next to the repository (its 17 languages are checked "
                    "only there; test_bmlama_directory tests the format on files made from the shipped facts)")
    reqs = _check_bmlama_requests(src)
    assert "es" in reqs[0].other_languages


def test_shipped_samples_if_present():
    samples = SHARED / "easyedit_formats"
    if not (samples / "zsre_mend_1000.json").exists():
        pytest.skip("the EasyEdit format samples are not next to the repository")
    assert detect_format(samples / "zsre_mend_1000.json") == "zsre"
    assert detect_format(samples / "counterfact_mend_1000.json") == "counterfact"
    assert len(load_requests(samples / "zsre_mend_1000.json")) == 1000


def test_unknown_file_refused_by_name(tmp_path):
    path = write(tmp_path, "mystery.json", [{"question": "q", "answer": "a"}])
    with pytest.raises(UnknownFormatError, match="mystery.json") as err:
        detect_format(path)
    assert isinstance(err.value, AmigError) and "not a known edit-data format" in str(err.value)
    with pytest.raises(UnknownFormatError, match="mystery.json"):
        load_requests(path)
    junk = tmp_path / "junk.txt"
    junk.write_text("not json at all\n")
    with pytest.raises(UnknownFormatError, match="junk.txt"):
        load_requests(junk)


def test_missing_alt_named_by_index(tmp_path):
    bad = [dict(ZSRE[1]), {k: v for k, v in ZSRE[1].items() if k != "alt"}]
    path = write(tmp_path, "bad.json", bad)
    with pytest.raises(EditDataError, match=r"bad\.json: record 1: missing field 'alt'"):
        load_requests(path, format="zsre")
    pairs = write(tmp_path, "en-fr.json", [{"en": ZSRE[1], "fr": {k: v for k, v in ZSRE[1].items() if k != "src"}}])
    with pytest.raises(EditDataError, match=r"record 0\.fr: missing field 'src'"):
        load_requests(pairs)


def test_empty_alt_skipped_with_warning(tmp_path):
    path = write(tmp_path, "z.json", [ZSRE[0], {**ZSRE[1], "alt": ""}])
    with pytest.warns(UserWarning, match="1 record"):
        assert len(load_requests(path)) == 1


def test_model_ground_truth_is_the_greedy_prediction():
    from amig_plugin.models.generation import greedy_continuation
    from amig_plugin.testing import tiny

    model, tok = tiny("gpt2", seed=0)
    prompt = "the capital of france is"
    ids = list(tok(prompt)["input_ids"])
    expected = []
    with torch.no_grad():
        for _ in range(3):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            ids.append(nxt)
            expected.append(nxt)
    assert greedy_continuation(model, tok, prompt, max_new_tokens=3) == tok.decode(expected, skip_special_tokens=True).strip()
    req = EditRequest(prompt=prompt, subject="france", target_new="rome", ground_truth=None,
                      other_languages={"xx": EditRequest(prompt=prompt, subject="f", target_new="r", ground_truth=None)})
    kept = EditRequest(prompt=prompt, subject="france", target_new="rome", ground_truth="paris")
    filled, same = with_model_ground_truth([req, kept], model, tok, predict=lambda m, t, p, n: "PRED")
    assert filled.ground_truth == "PRED" and filled.ground_truth_source == "model"
    assert filled.other_languages["xx"].ground_truth == "PRED"
    assert same.ground_truth == "paris" and same.ground_truth_source == "data"


class _ScriptedLM(torch.nn.Module):
    """Greedy continuation = SCRIPT token by token (ids index VOCAB), whatever the prompt."""

    VOCAB = ["<eos>", "\n", " ", "The", " answer", " is", " Paris", "q"]
    SCRIPT = [1, 1, 3, 4, 5, 6]

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        step = input_ids.shape[1] - 1  # the prompt is one token
        logits = torch.zeros(1, input_ids.shape[1], len(self.VOCAB))
        logits[0, -1, self.SCRIPT[step] if step < len(self.SCRIPT) else 0] = 1.0
        return type("Out", (), {"logits": logits})()


class _ScriptedTokenizer:
    eos_token_id = 0

    def __call__(self, text):
        return {"input_ids": [7]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(_ScriptedLM.VOCAB[i] for i in ids if i)


def test_model_ground_truth_skips_leading_blank_tokens():
    """A base model that answers a question with a line break first: the blanks do not count
    towards the answer's length (before, a 1-token answer came out empty and the request was lost)."""
    from amig_plugin.models.generation import greedy_continuation

    model, tok = _ScriptedLM(), _ScriptedTokenizer()
    assert greedy_continuation(model, tok, "q", max_new_tokens=1) == "The"
    assert greedy_continuation(model, tok, "q", max_new_tokens=3) == "The answer is"
    assert greedy_continuation(model, tok, "q", max_new_tokens=8) == "The answer is Paris"
    assert greedy_continuation(model, tok, "q", max_new_tokens=1, max_blank_tokens=2) == ""  # only blanks came


def test_fingerprint_and_easyedit_dict(tmp_path):
    a, b = load_requests(write(tmp_path, "z.json", ZSRE))
    assert a.fingerprint() == load_requests(tmp_path / "z.json")[0].fingerprint() != b.fingerprint()
    e = a.to_easyedit()
    assert e["prompt"] == a.prompt and e["ground_truth"] == "French" and e["target_new"] == "German"
    assert e["locality"]["neighborhood"] == {"prompt": "nq question: who wrote hamlet", "ground_truth": "Shakespeare"}
    assert e["portability"]["one_hop"]["ground_truth"] == "Germany" and e["rephrase_prompt"] == a.rephrase[0]
