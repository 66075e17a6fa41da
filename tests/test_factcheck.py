"""Fact-checking with DKN: metrics, dev-only thresholds, splits, wrong facts, the evaluator."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch

from amig_plugin.data import Fact, group_by_relation
from amig_plugin.dkn import DKNResult
from amig_plugin.factcheck import (
    Confusion,
    FactChecker,
    TooFewFactsError,
    build_queries,
    check_fractions,
    check_lambda,
    choose_threshold,
    evaluate_queries,
    recurring_neurons,
    relation_dkn,
    run_factcheck,
    split_facts,
    split_relation,
    wrong_candidates,
)
from amig_plugin.testing import tiny_sharp

torch.set_num_threads(1)
BMLAMA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bmlama17"


# ------------------------------------------------------------------------------ metrics


def test_metrics_on_hand_made_counts():
    c = Confusion(tp=3, fp=1, fn=2, tn=4)
    assert c.precision == pytest.approx(3 / 4)  # TP / (TP + FP): not swapped with recall
    assert c.recall == pytest.approx(3 / 5)  # TP / (TP + FN)
    assert c.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert c.accuracy == pytest.approx(0.7) and c.n == 10
    assert (c + Confusion(1, 1, 1, 1)).to_dict()["tp"] == 4
    # asymmetric: many false positives -> low precision, full recall
    c = Confusion(tp=2, fp=8, fn=0, tn=0)
    assert (c.precision, c.recall) == (0.2, 1.0)
    # nothing predicted true: precision and F1 are 0, not NaN
    c = Confusion(tp=0, fp=0, fn=5, tn=5)
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)
    assert Confusion().f1 == 0.0 and Confusion().accuracy == 0.0


def test_confusion_from_predictions_positive_class_is_true_fact():
    labels = [True, True, False, False, True]
    preds = [True, False, True, False, True]
    assert Confusion.from_predictions(labels, preds) == Confusion(tp=2, fp=1, fn=1, tn=1)
    with pytest.raises(ValueError):
        Confusion.from_predictions([True], [True, False])


def test_choose_threshold_maximises_dev_f1():
    # sorted: 1(F) 3(T) 4(F) 5(T): best is t between 1 and 3 (F1 0.8)
    assert choose_threshold([5, 3, 1, 4], [True, True, False, False]) == pytest.approx(2.0)
    # perfectly separable
    t = choose_threshold([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert 0.2 < t < 0.8
    # all true: everything above the threshold
    t = choose_threshold([1.0, 2.0], [True, True])
    assert t < 1.0
    with pytest.raises(ValueError):
        choose_threshold([], [])
    with pytest.raises(ValueError):
        choose_threshold([float("nan")], [True])


def _queries(rng, relation="r", n_dev=6, n_test=6, sep=1.0):
    qs = []
    for part, n in (("dev", n_dev), ("test", n_test)):
        for i in range(n):
            fid = f"{relation}-{part}-{i}"
            qs.append(dict(fact_id=fid, relation=relation, part=part, label=True, dkn=rng.gauss(sep, 1),
                           logprob=rng.gauss(-2, 1), exact_match=rng.random() < 0.3))
            qs.append(dict(fact_id=fid, relation=relation, part=part, label=False, dkn=rng.gauss(0, 1),
                           logprob=rng.gauss(-3, 1), exact_match=rng.random() < 0.1))
    return qs


def test_threshold_never_looks_at_the_test_split():
    rng = random.Random(0)
    qs = _queries(rng, "r1") + _queries(rng, "r2")
    base = evaluate_queries(qs)
    # flip every test label and scramble the test scores: thresholds must not move
    changed = [dict(q, label=not q["label"], dkn=rng.gauss(5, 3), logprob=rng.gauss(0, 5)) if q["part"] == "test" else q
               for q in qs]
    again = evaluate_queries(changed)
    assert again.thresholds == base.thresholds
    # ... while the test metrics do change (the test split is what is scored)
    assert again.overall("with_DKN") != base.overall("with_DKN")
    # and changing the dev split does move them
    dev_changed = [dict(q, label=not q["label"]) if q["part"] == "dev" else q for q in qs]
    assert evaluate_queries(dev_changed).thresholds != base.thresholds


def test_metrics_count_test_queries_only():
    rng = random.Random(1)
    qs = _queries(rng, "r", n_dev=3, n_test=5)
    rep = evaluate_queries(qs)
    for m in ("with_DKN", "wo_DKN_exact_match", "wo_DKN_likelihood_rank", "likelihood_threshold"):
        assert rep.overall(m).n == 10  # 5 test facts × (true + wrong)
        assert rep.overall(m).tp + rep.overall(m).fn == 5


def test_likelihood_rank_baseline_and_ties():
    qs = [dict(fact_id="a", relation="r", part="test", label=True, logprob=-1.0),
          dict(fact_id="a", relation="r", part="test", label=False, logprob=-2.0),
          dict(fact_id="b", relation="r", part="test", label=True, logprob=-3.0),
          dict(fact_id="b", relation="r", part="test", label=False, logprob=-0.5),
          dict(fact_id="c", relation="r", part="test", label=True, logprob=-1.0),
          dict(fact_id="c", relation="r", part="test", label=False, logprob=-1.0)]  # tie: neither judged true
    rep = evaluate_queries(qs)
    assert rep.per_relation["r"]["wo_DKN_likelihood_rank"] == Confusion(tp=1, fp=1, fn=2, tn=2)
    assert "with_DKN" not in rep.per_relation["r"]  # no dkn scores, no dev: no such method
    with pytest.raises(ValueError, match="part"):
        evaluate_queries([dict(fact_id="a", relation="r", part="train", label=True)])


def test_macro_and_micro_and_markdown():
    rng = random.Random(2)
    rep = evaluate_queries(_queries(rng, "r1") + _queries(rng, "r2", sep=3.0))
    micro = rep.overall("with_DKN")
    assert micro == rep.per_relation["r1"]["with_DKN"] + rep.per_relation["r2"]["with_DKN"]
    assert rep.macro_f1("with_DKN") == pytest.approx((rep.per_relation["r1"]["with_DKN"].f1 + rep.per_relation["r2"]["with_DKN"].f1) / 2)
    md = rep.to_markdown()
    assert "| with_DKN" in md and "| r2 |" in md
    assert rep.to_dict()["overall"]["with_DKN"]["tp"] == micro.tp


# ------------------------------------------------------------------------- splits, λ


def _fact(i, relation="r", subject=None, obj=None, cands=("a", "b", "c")):
    return Fact(id=f"{relation}-{i}", relation=relation, subject={"en": subject or f"s{i}"}, object={"en": obj or "a"},
                prompts={"en": [f"the capital of s{i} is <mask>"]}, candidates={"en": list(cands)})


def test_split_relation_sizes_and_too_few_facts():
    for n in range(3, 12):
        parts = split_relation([_fact(i) for i in range(n)])
        sizes = [len(parts[p]) for p in ("dkn", "dev", "test")]
        assert sum(sizes) == n and min(sizes) >= 1
        ids = [f.id for p in ("dkn", "dev", "test") for f in parts[p]]
        assert ids == [f"r-{i}" for i in range(n)]  # order kept, disjoint
    assert [len(v) for v in split_relation([_fact(i) for i in range(6)]).values()] == [2, 2, 2]
    assert [len(v) for v in split_relation([_fact(i) for i in range(8)], (2, 1, 1)).values()] == [4, 2, 2]
    for n in (0, 1, 2):
        with pytest.raises(TooFewFactsError, match="cannot be split"):
            split_relation([_fact(i) for i in range(n)])


def test_split_facts_skips_small_relations_and_errors_when_none_left():
    facts = [_fact(i, "big") for i in range(6)] + [_fact(i, "small") for i in range(2)]
    splits, skipped = split_facts(facts)
    assert list(splits) == ["big"] and "small" in skipped and "2 fact" in skipped["small"]
    with pytest.raises(TooFewFactsError, match="no relation has enough facts"):
        split_facts([_fact(i, "small") for i in range(2)])
    with pytest.raises(TooFewFactsError):
        split_facts(facts, min_facts=7)


@pytest.mark.parametrize("fractions", [(1, 1), (1, 0, 1), (-1, 1, 1), (1, 1, float("nan"))])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        check_fractions(fractions)


@pytest.mark.parametrize("lam", [-0.1, 1.0, 1.5, float("nan"), "0.7", True])
def test_lambda_out_of_range(lam):
    with pytest.raises(ValueError, match="lam"):
        check_lambda(lam)


def test_recurring_neurons_lambda_rule():
    sets = [[(1, 1), (2, 2)], [(1, 1), (3, 3)], [(1, 1), (2, 2)], [(4, 4)]]
    kept, counts = recurring_neurons(sets, 0.7)  # max count 3: keep count > 2.1
    assert kept == [(1, 1)] and counts[(2, 2)] == 2
    kept, _ = recurring_neurons(sets, 0.5)  # keep count > 1.5
    assert kept == [(1, 1), (2, 2)]
    kept, _ = recurring_neurons(sets, 0.0)
    assert len(kept) == 4
    assert recurring_neurons([], 0.7) == ([], {})
    assert recurring_neurons([[(1, 1), (1, 1)]], 0.7)[1] == {(1, 1): 1}  # counted once per fact


def _result(neurons, pairs):
    k = len(neurons)
    return DKNResult(neurons=neurons, p0=1.0, p_single=[1.0] * k, p_pair=[1.0] * (k * (k - 1) // 2), pairs=pairs)


def test_relation_dkn_and_its_fallback():
    with_pairs = [_result([(0, 1), (0, 2), (1, 3)], [(0, 1)]), _result([(0, 1), (2, 5), (1, 3)], [(0, 2)])]
    assert relation_dkn(with_pairs) == ([(0, 1)], "dkn")
    no_pairs = [_result([(0, 1), (0, 2)], []), _result([(0, 1), (2, 5)], [])]
    assert relation_dkn(no_pairs) == ([(0, 1)], "topk")
    assert relation_dkn(no_pairs, no_dkn="skip") == ([], "none")
    with pytest.raises(ValueError, match="no_dkn"):
        relation_dkn(no_pairs, no_dkn="other")


# ------------------------------------------------------------------------- wrong facts


def test_wrong_candidates_never_return_a_true_object():
    facts = [
        _fact(0, subject="france", obj="Paris", cands=("Paris", "paris", " PARIS ", "Paris City", "Lyon", "Berlin", "Rome")),
        # the same subject has another true object in the relation (e.g. shares border with)
        _fact(1, subject="France", obj="Lyon", cands=("Paris", "Lyon", "Rome")),
        _fact(2, subject="中国", obj="北京", cands=("北京市", "北京", "上海", "广州")),
    ]
    out = wrong_candidates(facts[0], "en", facts, n=None)
    assert sorted(out) == ["Berlin", "Rome"]
    out = wrong_candidates(facts[1], "en", facts, n=None)
    assert out == ["Rome"]
    assert sorted(wrong_candidates(facts[2], "en", facts, n=None)) == ["上海", "广州"]
    # seeded and reproducible; n cuts
    assert wrong_candidates(facts[0], "en", facts, n=1, seed=3) == wrong_candidates(facts[0], "en", facts, n=1, seed=3)
    assert len(wrong_candidates(facts[0], "en", facts, n=1)) == 1
    # no candidate list: the relation's other objects, minus the subject's true ones
    bare = [Fact(id=f"x{i}", relation="r", subject={"en": s}, object={"en": o}, prompts={"en": ["<mask> x"]})
            for i, (s, o) in enumerate([("a", "A"), ("a", "B"), ("b", "C"), ("c", "D")])]
    assert sorted(wrong_candidates(bare[0], "en", bare, n=None)) == ["C", "D"]


def test_wrong_candidates_on_bmlama_are_never_true(bmlama_dir):
    """On a BMLAMA folder written from the shipped facts (so it never skips), and also on the real
    BMLAMA-17 (6792 facts) when it is next to the repository."""
    for folder in [bmlama_dir] + ([BMLAMA_DIR] if BMLAMA_DIR.exists() else []):
        _check_wrong_candidates_never_true(folder)


def _check_wrong_candidates_never_true(folder: Path) -> None:
    from amig_plugin.data import bmlama_paths, load_bmlama

    facts = load_bmlama(bmlama_paths(folder))
    groups = group_by_relation(facts)
    for lang in ("en", "zh"):
        truth: dict[tuple, set] = {}
        for f in facts:
            truth.setdefault((f.relation, " ".join(f.subject[lang].split()).casefold()), set()).add(
                " ".join(f.object[lang].split()).casefold())
        for f in facts[::7]:
            for w in wrong_candidates(f, lang, groups[f.relation], n=None, seed=0):
                trues = truth[(f.relation, " ".join(f.subject[lang].split()).casefold())]
                assert " ".join(w.split()).casefold() not in trues, (f.id, lang, w)


# ------------------------------------------------------------------------- end to end

CAPS = [("france", "paris"), ("germany", "berlin"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid"),
        ("asia", "tokyo")]


def _capital_facts():
    facts = [Fact(id=f"cap-{i}", relation="capital", subject={"en": c}, object={"en": o},
                  prompts={"en": [f"the capital of {c} is <mask>"]}, candidates={"en": [x for _, x in CAPS[:5]]},
                  relation_name="the capital of [X] is [Y]") for i, (c, o) in enumerate(CAPS)]
    facts += [Fact(id=f"lang-{i}", relation="language", subject={"en": c}, object={"en": o},
                   prompts={"en": [f"the language spoken in {c} is <mask>"]}, candidates={"en": ["france", "japan"]},
                   relation_name="the language spoken in [X] is [Y]") for i, (c, o) in enumerate([("paris", "france"),
                                                                                     ("tokyo", "japan")])]
    return facts


def test_run_factcheck_end_to_end_on_a_tiny_model(tmp_path):
    from amig_plugin.localization.cache import LocalizationCache
    from amig_plugin.dkn import detect_facts
    from amig_plugin.store import RecordStore

    model, tok = tiny_sharp("gpt2")
    facts = _capital_facts()
    cache = LocalizationCache(tmp_path / "loc.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, errors = detect_facts(model, tok, facts, "en", cache=cache, k=8, low=0.02, high=0.03,
                                       settings=dict(steps=4, top_k=8), progress=False)
    assert not errors
    store = RecordStore(tmp_path / "fc.jsonl")
    report, checker = run_factcheck(model, tok, facts, "en", results, store=store, steps=4, progress=False)
    assert list(report.per_relation) == ["capital"] and "language" in report.skipped
    assert report.settings["split_sizes"]["capital"] == {"dkn": 2, "dev": 2, "test": 2}
    assert report.overall("with_DKN").n == 4  # 2 test facts × (true + 1 wrong)
    test_ids = {q["fact_id"] for q in report.queries if q["part"] == "test"}
    assert test_ids == {"cap-4", "cap-5"}
    for q in report.queries:
        assert q["label"] == (q["candidate"] == dict(CAPS)[facts[int(q["fact_id"][4:])].subject["en"]])
    # resumable: a second run over the same store computes no new score
    n_records = len(store)
    report2, _ = run_factcheck(model, tok, facts, "en", results, store=RecordStore(tmp_path / "fc.jsonl"), steps=4,
                               progress=False)
    assert len(RecordStore(tmp_path / "fc.jsonl")) == n_records
    assert report2.to_dict()["overall"] == report.to_dict()["overall"]
    # the fitted checker judges like the report, saves and loads
    path = tmp_path / "checker.json"
    checker.save(path)
    back = FactChecker.load(path)
    assert back.relations == checker.relations
    q = next(q for q in report.queries if q["part"] == "test")
    verdict = back.judge(model, tok, q["prompt"], q["candidate"], subject=facts[int(q["fact_id"][4:])].subject["en"])
    assert verdict["relation"] == "capital"
    assert verdict["true"] == q["predictions"]["with_DKN"]
    assert verdict["score"] == pytest.approx(q["dkn"], rel=1e-5, abs=1e-9)


def test_checker_relation_lookup():
    checker = FactChecker(relations={
        "cap": {"neurons": [[0, 1]], "threshold": 0.0, "template": "The capital of [X] is [Y]."},
        "born": {"neurons": [[0, 1]], "threshold": 0.0, "template": "[X] was born in [Y]."},
        "zh": {"neurons": [[0, 1]], "threshold": 0.0, "template": "[X]的首都是[Y]。"},
    })
    assert checker.relation_of("The capital of France is", "France") == "cap"
    assert checker.relation_of("The capital of France is <mask>.", "France") == "cap"
    assert checker.relation_of("Dante was born in <mask>.") == "born"
    assert checker.relation_of("法国的首都是", "法国") == "zh"
    assert checker.relation_of("Something else entirely", "x") is None


def test_build_queries_rejects_bad_n_wrong():
    facts = [_fact(i) for i in range(3)]
    splits, _ = split_facts(facts)
    with pytest.raises(ValueError, match="n_wrong"):
        build_queries(splits, "en", facts, n_wrong=0)
    queries, skipped = build_queries(splits, "en", facts, n_wrong=2)
    assert {q["part"] for q in queries} == {"dev", "test"}
    assert all(q["candidate"] != "a" for q in queries if not q["label"])


def test_run_factcheck_with_no_usable_fact_is_a_clear_error():
    model, tok = tiny_sharp("gpt2")
    with pytest.raises(TooFewFactsError, match="none of the"):
        run_factcheck(model, tok, _capital_facts(), "en", {}, progress=False)


# ------------------------------------------------------------------------- EasyEdit metric

import importlib.util  # noqa: E402

needs_easyeditor = pytest.mark.skipif(importlib.util.find_spec("easyeditor") is None,
                                      reason="easyeditor is not installed (pip install --no-deps easyeditor==0.0.1.dev0)")


@needs_easyeditor
def test_easyedit_metric_is_registered_idempotently_and_reports_pre_and_post(tmp_path, monkeypatch):
    """AMIG edits a tiny GPT-2 through EasyEdit's BaseEditor; the registered fact-check metric
    appears in pre and post, and agrees with the checker called directly."""
    import copy as _copy

    from amig_plugin.easyedit import factcheck_metric
    from amig_plugin.easyedit.editor import load_editor
    from amig_plugin.easyedit.methods.amig import AMIGHyperParams

    base, tok = tiny_sharp("gpt2")
    model = _copy.deepcopy(base)
    checker = FactChecker(relations={"capital": {"neurons": [[2, 5], [2, 9], [1, 3]], "threshold": 0.0,
                                                 "template": "the capital of [X] is [Y]", "source": "dkn"},
                                     "born": {"neurons": [[0, 1]], "threshold": 0.0, "template": "[X] was born in [Y]"}},
                          settings=dict(steps=4))
    prompt = "the capital of france is"
    pre_new = checker.judge(model, tok, prompt + " <mask>", "rome", subject="france")
    pre_old = checker.judge(model, tok, prompt + " <mask>", "paris", subject="france")
    monkeypatch.chdir(tmp_path)
    info = factcheck_metric.register()
    try:
        assert factcheck_metric.is_registered()
        assert factcheck_metric.register()["wrapped_now"] == []  # idempotent
        hparams = AMIGHyperParams(alg_name="AMIG", model_name="tiny-gpt2", device=0, steps=4, ig_batch_size=64)
        editor = load_editor(hparams, model=model, tokenizer=tok)
        # no active checker: EasyEdit's metrics unchanged
        metrics, _, _ = editor.edit(prompts=[prompt], ground_truth=["paris"], target_new=["rome"], subject=["france"],
                                    verbose=False)
        assert "fact_check" not in metrics[0]["post"]
        with factcheck_metric.using(checker):
            metrics, _, _ = editor.edit(prompts=[prompt, "the city of japan is"], ground_truth=["paris", "tokyo"],
                                        target_new=["rome", "berlin"], subject=["france", "japan"], verbose=False)
        assert factcheck_metric.active_checker() is None
    finally:
        assert factcheck_metric.unregister()
    assert not factcheck_metric.is_registered()
    pre, post = metrics[0]["pre"]["fact_check"], metrics[0]["post"]["fact_check"]
    assert pre["relation"] == post["relation"] == "capital"
    assert pre["new"]["score"] == pytest.approx(pre_new["score"], rel=1e-5, abs=1e-9)
    assert pre["old"]["score"] == pytest.approx(pre_old["score"], rel=1e-5, abs=1e-9)
    assert pre["new_judged_true"] == pre_new["true"] and pre["old_judged_false"] == (not pre_old["true"])
    assert post["new"]["score"] != pytest.approx(pre["new"]["score"])  # judged on the edited model
    assert post["success"] == (post["new"]["true"] and not post["old"]["true"])
    assert isinstance(post["likelihood_prefers_new"], bool)
    # a prompt that matches no relation template: no DKN verdict, baseline still given
    other = metrics[1]["post"]["fact_check"]
    assert other["relation"] is None and other["success"] is None and other["likelihood_prefers_new"] is not None
    summary = factcheck_metric.summarize(metrics)
    assert summary["post"]["no_relation"] == 1 and summary["requests"] == 2


# ----------------------------------------------------------------------------------------
# baselines, threshold-free measures, intervals


def test_all_true_f1_is_2p_over_1_plus_p():
    from amig_plugin.factcheck import Confusion, all_true_f1
    for n_true, n_false in ((5, 5), (1, 3), (7, 2)):
        labels = [True] * n_true + [False] * n_false
        c = Confusion.from_predictions(labels, [True] * len(labels))
        p = n_true / len(labels)
        assert c.f1 == pytest.approx(all_true_f1(p)) == pytest.approx(2 * p / (1 + p))
        assert c.balanced_accuracy == 0.5
    assert all_true_f1(0.5) == pytest.approx(2 / 3)


def test_random_f1_matches_simulation():
    import random as _random
    from amig_plugin.factcheck import Confusion, random_f1
    rng = _random.Random(0)
    labels = [i % 4 == 0 for i in range(40000)]  # p = 0.25
    preds = [rng.random() < 0.6 for _ in labels]
    assert Confusion.from_predictions(labels, preds).f1 == pytest.approx(random_f1(0.25, 0.6), abs=0.01)


def test_roc_auc_perfect_constant_reversed_and_ties():
    from amig_plugin.factcheck import roc_auc
    labels = [True, True, False, False, False]
    assert roc_auc([0.9, 0.8, 0.1, 0.2, 0.3], labels) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9, 0.7], labels) == 0.0
    assert roc_auc([0.5] * 5, labels) == 0.5
    # one tie between a positive and a negative: (5 + 0.5) / 6
    assert roc_auc([0.9, 0.3, 0.3, 0.2, 0.1], labels) == pytest.approx(5.5 / 6)
    # groups: pairs across groups do not count (each group perfect, pooled would not be)
    assert roc_auc([10, 9, 1, 0], [True, False, True, False], groups=["a", "a", "b", "b"]) == 1.0
    assert roc_auc([10, 9, 1, 0], [True, False, True, False]) == 0.75


def _sep_queries(n_dev_facts: int, n_test_facts: int, separable: bool = True):
    qs = []
    for part, n in (("dev", n_dev_facts), ("test", n_test_facts)):
        for k in range(n):
            fid = f"{part}{k}"
            qs.append(dict(fact_id=fid, relation="r", part=part, label=True, dkn=1.0 + k * 0.01 if separable else 0.5,
                           logprob=-1.0, exact_match=False))
            qs.append(dict(fact_id=fid, relation="r", part=part, label=False, dkn=0.0 + k * 0.01 if separable else 0.5,
                           logprob=-1.0, exact_match=False))
    return qs


def test_report_statistics_baselines_auc_and_intervals():
    from amig_plugin.factcheck import evaluate_queries
    rep = evaluate_queries(_sep_queries(12, 30), "en")
    st = rep.summary_statistics()["with_DKN"]
    assert st["f1"] == 1.0 and st["roc_auc"] == 1.0 and st["balanced_accuracy"] == 1.0
    assert st["all_true_f1"] == pytest.approx(2 / 3)
    assert st["positive_rate_dev"] == pytest.approx(0.5)
    assert st["random_f1"] == pytest.approx(0.5)
    assert st["f1_ci"] == [1.0, 1.0]
    # exact match never fires: AUC of a constant score is 1/2
    assert rep.summary_statistics()["wo_DKN_exact_match"]["roc_auc"] == 0.5
    md = rep.to_markdown()
    assert "all-true F1" in md and "ROC-AUC" in md and "0.667" in md
    assert rep.to_dict()["overall"]["with_DKN"]["roc_auc"] == 1.0


def test_small_dev_split_warns():
    from amig_plugin.factcheck import evaluate_queries, format_summary
    small = evaluate_queries(_sep_queries(4, 10), "zh")  # 8 dev queries
    assert small.dev_warnings() and "fewer than 20 dev queries" in small.dev_warnings()[0]
    assert "WARNING" in small.to_markdown() and "WARNING" in format_summary([small])
    assert not evaluate_queries(_sep_queries(10, 10), "zh").dev_warnings()  # 20 dev queries


def test_bootstrap_interval_is_wide_on_a_noisy_scorer():
    import random as _random
    from amig_plugin.factcheck import evaluate_queries
    rng = _random.Random(1)
    qs = _sep_queries(15, 40)
    for q in qs:
        q["dkn"] = rng.random()  # no information
    st = evaluate_queries(qs, "en").summary_statistics()["with_DKN"]
    lo, hi = st["roc_auc_ci"]
    assert lo < 0.5 < hi and hi - lo > 0.15
