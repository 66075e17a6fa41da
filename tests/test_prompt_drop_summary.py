"""One PromptTextDropped warning per language and run, not one per prompt."""

from __future__ import annotations

import warnings

import amig_plugin.data as D
from amig_plugin.data import Fact, PromptTextDropped, causal_prompt_and_target, prompt_drop_summary, prompt_languages
from amig_plugin.testing import save_tiny, tiny_sharp


def _dropped(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, PromptTextDropped)]


def test_shaping_50_mid_sentence_prompts_gives_one_warning_naming_the_count():
    D._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prompt_drop_summary("ja"):
            for i in range(50):
                for _ in range(3):  # shaped again (another candidate, another pass): counted once
                    causal_prompt_and_target(f"X{i}は<mask>に生まれました。", "東京")
            for i in range(10):
                causal_prompt_and_target(f"Y{i}の首都は<mask>。", "東京")  # punctuation only: nothing lost
    (message,) = _dropped(caught)
    assert message.startswith("ja: 50 of 60 causal prompts (83%) lose text after <mask> in cut mode")
    assert "e.g. 'X0は<mask>に生まれました。'" in message and "sees only 'X0は'" in message
    assert "--causal-mode sentence" in message


def test_one_warning_per_language_nested_summaries_and_languages_already_said():
    en = [Fact(id=f"f{i}", relation="r", subject={"en": f"s{i}", "de": f"s{i}", "fr": f"s{i}"},
               object={"en": "o", "de": "o", "fr": "o"},
               prompts={"en": [f"s{i} is <mask> ."], "de": [f"s{i} ist <mask> geboren ."], "fr": [f"s{i} est <mask> né ."]})
          for i in range(20)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prompt_drop_summary(prompt_languages(en, ["en", "de", "fr"]), said=["fr"]):
            for lang in ("en", "de", "fr"):
                with prompt_drop_summary(lang):  # a per-language bulk function inside a run: reported once, at the end
                    for f in en:
                        causal_prompt_and_target(f.prompt(lang), "o")
            assert _dropped(caught) == []
    (message,) = _dropped(caught)  # en loses nothing, fr was already said by the caller
    assert message.startswith("de: 20 of 20 causal prompts (100%)")
    # sentence mode loses nothing: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prompt_drop_summary("de"):
            for f in en:
                causal_prompt_and_target(f.prompt("de"), "o", mode="sentence")
    assert _dropped(caught) == []


def test_a_single_call_outside_a_summary_still_warns_for_its_prompt():
    D._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        causal_prompt_and_target("Z is <mask> since 1944 .", "o")
    (message,) = _dropped(caught)
    assert "drops the 2 word(s)" in message


def test_dkn_detection_and_factcheck_over_many_facts_warn_once(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.dkn import detect_facts
    from amig_plugin.factcheck import run_factcheck

    model, tok = tiny_sharp("gpt2")
    caps = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid")]
    facts = [Fact(id=f"cap-{c}", relation="capital", subject={"en": c}, object={"en": o},
                  prompts={"en": [f"the capital of {c} is <mask> located in europe"]},
                  candidates={"en": [x for _, x in caps]}) for c, o in caps]
    D._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, _ = detect_facts(model, tok, facts, "en", cache=LocalizationCache(tmp_path / "loc.jsonl"), k=6,
                                  low=0.02, high=0.03, settings=dict(steps=4, top_k=6), progress=False)
    (message,) = _dropped(caught)
    assert message.startswith("en: 5 of 5 causal prompts")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_factcheck(model, tok, facts, "en", results, steps=2, progress=False)
    (message,) = _dropped(caught)
    assert message.startswith("en: 3 of 3 causal prompts")  # the dev and test facts (the DKN part is not scored)


def test_likn_experiment_warns_once_per_language(tmp_path):
    from amig_plugin.likn import run_likn_experiment

    model, tok = tiny_sharp("gpt2")
    caps = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo")]
    facts = [Fact(id=f"cap-{c}", relation="capital", subject={"en": c, "zh": "法国"}, object={"en": o, "zh": "巴黎"},
                  prompts={"en": [f"the capital of {c} is <mask> located in europe"], "zh": ["法国 的 首都 是 <mask> 。"]})
             for c, o in caps]
    D._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_likn_experiment(model, tok, facts, ["en", "zh"], cache=False, protocols=("activation",), n_unrelated=1,
                            random_control=False, progress=False, localize_settings=dict(steps=2))
    (message,) = _dropped(caught)  # zh prompts end with punctuation only
    assert message.startswith("en: 3 of 3 causal prompts")


def _mid_sentence_facts() -> list[Fact]:
    caps = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome")]
    return [Fact(id=f"cap-{c}", relation="capital", subject={"en": c, "zh": "法国"}, object={"en": o, "zh": "巴黎"},
                 prompts={"en": [f"the capital of {c} is <mask> located in europe"], "zh": ["法国 的 首都 是 <mask> 。"]})
            for c, o in caps]


def _saved_tiny(tmp_path):
    folder = save_tiny(tmp_path / "tiny-gpt2")
    data = tmp_path / "facts.jsonl"
    D.save_facts(_mid_sentence_facts(), data)
    return folder, data


def test_amig_likn_says_it_once_up_front_and_amig_run_once_per_language(tmp_path, monkeypatch, capsys):
    from amig_plugin.cli import main
    from amig_plugin.pipeline import parse_config, run

    folder, data = _saved_tiny(tmp_path)
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path / "cache"))
    D._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["likn", "--model", str(folder), "--data", str(data), "--langs", "en,zh", "--n", "4", "--steps", "2",
                     "--out", str(tmp_path / "out"), "--n-unrelated", "1", "--protocols", "activation",
                     "--no-random"]) == 0
    err = capsys.readouterr().err
    assert err.count("prompts lose text after the mask") == 1 and "en: 4 of 4 prompts" in err
    assert _dropped(caught) == []  # the note said it: no per-prompt warning, no second summary
    cfg = {"model": str(folder), "threads": 1, "methods": ["amig"], "languages": ["en", "zh"],
           "data": {"kind": "jsonl", "path": str(data)}, "localization": {"steps": 2, "cache": False},
           "studies": {"localization": {}, "effect": {"n_unrelated": 1}}, "progress": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(parse_config(cfg), tmp_path / "run").summary["complete"]
    (message,) = _dropped(caught)
    assert message.startswith("en: 4 of 4 causal prompts")
