"""The ``amig`` command in-process: every bad input is one line naming the problem and the fix,
exit code 2, no traceback, and argument errors stop before any model is loaded."""

from __future__ import annotations

import json

import pytest

from amig_plugin import loading
from amig_plugin.cli import main
from amig_plugin.testing import save_tiny

# (arguments, words the one-line message must hold); none of these may load a model
BAD_ARGS = [
    (["localize", "--prompt", "the capital of france is <mask>", "--target", "paris", "--top", "-1"],
     ["--top", ">= 0", "-1"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--share-p", "1.5"], ["--share-p", "[0, 1)", "1.5"]),
    (["localize", "--prompt", "a <mask>", "--prompt", "b <mask>", "--target", "paris", "--share-p", "1.5"],
     ["--share-p", "[0, 1)"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--steps", "1"], ["--steps", ">= 2", "not an integral"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--adaptive", "5,2"], ["--adaptive", "1 <= LO <= HI", "5,2"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--adaptive", "two"], ["--adaptive", "LO,HI", "'two'"]),
    (["likn", "--adaptive", "0,3"], ["--adaptive", "1 <= LO <= HI"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--steps", "many"], ["--steps", "whole number", "many"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--lang", "xx"], ["--lang", "unknown language code 'xx'"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--threads", "0"], ["--threads", ">= 1"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--tau", "0"], ["--tau", "(0, 1]"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--tau", "nan"], ["--tau", "finite"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--ig-batch-size", "0"], ["--ig-batch-size", ">= 1"]),
    (["localize", "--prompt", "a <mask> b <mask>", "--target", "paris"], ["2 <mask>", "exactly one <mask>"]),
    (["localize", "--prompt", "a <mask>", "--target", " "], ["--target is empty", "--target Paris"]),
    (["localize", "--prompt", "a <mask>", "--prompt", "a <mask>", "--target", "paris"], ["same --prompt", "once"]),
    (["localize", "--prompt", "a <mask>"], ["--target", "required"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--method", "ig"], ["--method", "invalid choice"]),
    (["localize", "--prompt", "a <mask>", "--target", "paris", "--device", "gpu"], ["--device", "'gpu'", "cuda:N"]),
    (["frobnicate"], ["invalid choice", "frobnicate"]),
    (["demo", "--langs", "en,en"], ["--langs", "en given twice"]),
    (["demo", "--langs", "de"], ["no shipped fact", "--langs en,zh"]),
    (["demo", "--facts", "0"], ["--facts", ">= 1"]),
    (["likn", "--langs", "en"], ["--langs", "at least 2"]),
    (["likn", "--protocols", "activation,values"], ["--protocols", "values", "activation, value"]),
    (["likn", "--n", "1"], ["--n", ">= 2"]),
    (["likn", "--share-p", "-0.1"], ["--share-p", "[0, 1)"]),
    (["dkn", "--lang", "en,xx"], ["--lang", "'xx'"]),
    (["dkn", "--k", "1"], ["--k", ">= 2", "two neurons"]),
    (["dkn", "--low", "0.5", "--high", "0.3"], ["high", "low"]),
    (["dkn", "--n", "0"], ["--n", ">= 1"]),
    (["dkn", "--data", "no/such/folder"], ["--data", "no/such/folder", "shipped"]),
    (["factcheck", "--lam", "1.2"], ["--lam", "[0, 1)"]),
    (["factcheck", "--split", "1,0,1"], ["fractions", "positive"]),
    (["factcheck", "--split", "1,a"], ["--split", "comma-separated numbers"]),
    (["factcheck", "--steps", "1"], ["--steps", ">= 2"]),
    (["compare", "--n", "0"], ["--n", ">= 1"]),
    (["compare", "--lang", "english"], ["--lang", "'english'"]),
    (["compare", "--methods", "AMIG,ROMEO"], ["unknown method", "ROMEO"]),
    (["run", "no/such/config.yaml"], ["no/such/config.yaml", "no such file"]),
    (["run", "configs", "--threads", "0"], ["--threads", ">= 1"]),
    (["diff", "no/such/run_a", "no/such/run_b"], ["no/such/run_a", "no such run folder", "amig run"]),
    (["merge", "no/such/run"], ["no such run folder"]),
]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything tries to load a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for an argument error")

    monkeypatch.setattr(loading, "load_model", refuse)


def _one_line(capsys) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err and out.out == ""
    return lines[0]


@pytest.mark.parametrize("args,words", BAD_ARGS, ids=[" ".join(a)[:60] for a, _ in BAD_ARGS])
def test_bad_argument_is_one_line_exit_2_before_loading(args, words, no_model, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AMIG_CACHE", str(tmp_path))
    assert main(args) == 2
    line = _one_line(capsys)
    assert line.startswith("amig")
    for w in words:
        assert w in line, line


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, no_model, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder (no config.yaml)" in _one_line(capsys)


def test_debug_shows_the_traceback(no_model, capsys, monkeypatch):
    from amig_plugin.errors import UsageError

    bad = ["localize", "--prompt", "a <mask> <mask>", "--target", "paris"]
    for argv in (["--debug", *bad], [*bad, "--debug"]):
        with pytest.raises(UsageError, match="exactly one <mask>"):
            main(argv)
    monkeypatch.setenv("AMIG_DEBUG", "1")
    with pytest.raises(UsageError):
        main(bad)
    monkeypatch.setenv("AMIG_DEBUG", "0")
    assert main(bad) == 2


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    import amig_plugin.cli as cli
    import amig_plugin.commands.demo as demo

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(demo, "cmd_demo", bug)  # build_parser binds the module's cmd_demo
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["demo"])


# ---------------------------------------------------------------------- on a tiny model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(save_tiny(tmp_path_factory.mktemp("cli") / "tiny-gpt2"))


def test_localize_two_prompts_prints_each_and_saves_json(tiny_dir, tmp_path, capsys):
    out = tmp_path / "kn.json"
    argv = ["localize", "--model", tiny_dir, "--prompt", "the capital of france is <mask>",
            "--prompt", "paris is the capital of <mask>", "--target", "france", "--lang", "en", "--steps", "3",
            "--share-p", "0.4", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["prompts"] == argv[4:7:2] and record["settings"]["share_p"] == 0.4
    for prompt, selected in zip(record["prompts"], record["per_prompt"]):
        assert f"prompt {prompt!r}:" in text and f"neurons above τ: {len(selected)}" in text
    assert f"{len(record['neurons'])} knowledge neurons" in text and f"saved to {out}" in text


def test_localize_adaptive_lands_in_the_range(tiny_dir, tmp_path, capsys):
    out = tmp_path / "kn.json"
    argv = ["localize", "--model", tiny_dir, "--prompt", "the capital of france is <mask>", "--target", "paris",
            "--lang", "en", "--steps", "3", "--adaptive", "2,3", "--threads", "1", "--json", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["settings"]["adaptive"] == [2, 3] and 2 <= len(record["neurons"]) <= 3
    assert f"{len(record['neurons'])} knowledge neurons" in capsys.readouterr().out


def test_query_errors_after_loading_are_one_line(tiny_dir, capsys):
    assert main(["localize", "--model", tiny_dir, "--prompt", "the capital of france is <mask>",
                 "--target", "Molière", "--steps", "2"]) == 2
    err = capsys.readouterr().err  # the loader's progress lines come first
    errors = [l for l in err.splitlines() if "error" in l]
    assert len(errors) == 1 and "Traceback" not in err
    line = errors[0]
    assert line.startswith("amig localize: error: target")
    assert "only unknown tokens" in line and "vocabulary" in line


def test_dkn_reads_only_the_requested_languages(tmp_path, no_model, capsys):
    from amig_plugin.commands.dkn import load_pool

    folder = tmp_path / "bmlama"
    folder.mkdir()
    (folder / "en.tsv").write_text("Prompt\tAns\tCandidate Ans\tSubject\n"
                                   "paris is the capital of <mask> .\tfrance\tfrance, italy\tparis\n"
                                   "rome is the capital of <mask> .\titaly\tfrance, italy\trome\n", encoding="utf-8")
    (folder / "de.tsv").write_bytes(b"Prompt\tAns\n\xff\xfe broken\n")  # not requested: never read
    pool = load_pool(str(folder), ["en"])
    assert [f.target("en") for f in pool] == ["france", "italy"]
    assert main(["dkn", "--data", str(folder), "--langs", "zh"]) == 2  # a requested file is missing
    line = _one_line(capsys)
    assert "no zh.tsv in this folder" in line


def test_diff_of_two_real_run_folders_still_works(tmp_path, no_model, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("name: x\n", encoding="utf-8")
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "0 units in both runs" in capsys.readouterr().out


@pytest.mark.parametrize("option,text,check,value", [("tau", "0", "check_tau", 0.0), ("share_p", "1.5", "check_share_p", 1.5),
                                                      ("ig_steps", "1", "check_steps", 1)])
def test_cli_types_and_the_python_api_apply_one_rule(option, text, check, value):
    """The argparse type and the API check give the same message: the rule lives in one place."""
    import argparse

    import amig_plugin.checks as checks
    from amig_plugin.commands import options

    with pytest.raises(argparse.ArgumentTypeError) as cli:
        getattr(options, option)(text)
    with pytest.raises(ValueError) as api:
        getattr(checks, check)(value)
    assert str(cli.value) == str(api.value)


def test_size_range_refuses_fractions_instead_of_truncating():
    from amig_plugin.checks import check_size_range

    assert check_size_range(("2", 5)) == (2, 5)
    for bad in [(2.5, 5), (True, 3), (1, 2, 3), (0, 3)]:
        with pytest.raises(ValueError, match="adaptive size range"):
            check_size_range(bad)


# ---------------------------------------------------------------------- options and their names


def _subparsers():
    import argparse

    from amig_plugin.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_of_every_command_has_help():
    import argparse

    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in _subparsers().items()
               for a in p._actions if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


@pytest.mark.parametrize("command", ["demo", "likn", "dkn", "factcheck", "compare"])
def test_new_flag_names_are_shown_and_old_spellings_hidden(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.count("usage:") == 1  # compare printed its usage twice
    assert "--data" in text and "--n N" in text
    for old in ("--facts", "--lang ", "--lang,", "--records", "--other-lang"):
        assert old not in text, old


def test_old_spellings_still_work_with_a_note(no_model, capsys, tmp_path):
    from amig_plugin.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo", "--facts", "2"])
    assert args.n == 2
    assert "note: --facts is deprecated; use --n" in capsys.readouterr().err
    args = parser.parse_args(["dkn", "--lang", "en,zh"])
    assert args.langs == ["en", "zh"]
    assert "note: --lang is deprecated; use --langs" in capsys.readouterr().err
    args = parser.parse_args(["dkn"])
    assert args.langs == ["en"] and args.n == 200
    args = parser.parse_args(["compare", "--lang", "de", "--records", str(tmp_path)])
    from amig_plugin.commands.compare import _edit_langs, _outputs

    assert _edit_langs(args) == ("de", "zh") and _outputs(args) == (None, str(tmp_path))
    assert _edit_langs(parser.parse_args(["compare", "--other-lang", "none"])) == ("en", None)
    assert _edit_langs(parser.parse_args(["compare", "--langs", "zh,en"])) == ("zh", "en")
    assert _edit_langs(parser.parse_args(["compare", "--langs", "zh"])) == ("zh", None)
    assert _outputs(parser.parse_args(["compare", "--out", "r.json"])) == ("r.json", None)
    assert "--json FILE" in capsys.readouterr().err


def test_old_lang_spelling_reaches_the_command(tmp_path, no_model, capsys):
    folder = tmp_path / "bmlama"
    folder.mkdir()
    (folder / "en.tsv").write_text("Prompt\tAns\tCandidate Ans\tSubject\n", encoding="utf-8")
    assert main(["dkn", "--data", str(folder), "--lang", "zh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "note: --lang is deprecated; use --langs"
    assert len(err) == 2 and "no zh.tsv in this folder" in err[1]


def test_demo_prints_its_plan_before_loading(monkeypatch, capsys):
    from amig_plugin.commands import demo

    class Stop(Exception):
        pass

    def stop(args):
        raise Stop

    monkeypatch.setattr(demo, "load_model_from_args", stop)
    with pytest.raises(Stop):
        main(["demo"])
    out = capsys.readouterr().out
    assert "quick" in out and f"{demo.QUICK_FACTS} shipped facts x 2 languages (en, zh)" in out and "ETA: about" in out
    assert "1. localization" in out and "likn" not in out.lower().split("--full")[0]
    with pytest.raises(Stop):
        main(["demo", "--full"])
    out = capsys.readouterr().out
    assert f"{demo.FULL_FACTS} shipped facts" in out and "2. likn" in out and "3. dkn" in out


def test_quick_demo_runs_only_the_localization_section(monkeypatch, capsys):
    from amig_plugin.commands import demo, dkn, likn

    calls = []
    monkeypatch.setattr(demo, "load_model_from_args", lambda args: ("model", "tok"))
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: calls.append(("run", kw["n_facts"], kw["facts"][0].id)) or 0)
    monkeypatch.setattr(likn, "demo_section", lambda *a, **kw: calls.append(("likn",)))
    monkeypatch.setattr(dkn, "demo_section", lambda *a, **kw: calls.append(("dkn",)))
    assert main(["demo"]) == 0
    assert [c[0] for c in calls] == ["run"] and calls[0][1] == demo.QUICK_FACTS
    calls.clear()
    assert main(["demo", "--full", "--n", "3"]) == 0
    assert [c[0] for c in calls] == ["run", "likn", "dkn"] and calls[0][1] == 3
