"""Tests for amig_plugin.data: the Fact model, the shipped set, loaders, wrong facts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from amig_plugin.data import (
    LANGUAGE_CODES,
    MASK_PLACEHOLDER,
    Fact,
    FactFormatError,
    causal_prompt_and_target,
    group_by_relation,
    load_bmlama,
    load_facts,
    load_mlama,
    load_mlama_with_report,
    save_facts,
    shipped_facts,
    split_prompt_at_mask,
    wrong_objects,
)
from amig_plugin.testing import write_tsv

BMLAMA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bmlama17"


def make_fact(**kw) -> Fact:
    d = dict(
        id="P36-france",
        relation="P36",
        subject={"en": "France", "zh": "法国"},
        object={"en": "Paris", "zh": "巴黎"},
        prompts={"en": ["The capital of France is <mask>."], "zh": ["法国的首都是<mask>。"]},
        candidates={"en": ["Berlin", "Paris", "Rome"], "zh": ["柏林", "巴黎", "罗马"]},
    )
    d.update(kw)
    return Fact(**d)


# ---------------------------------------------------------------------------- Fact


def test_mask_placeholder_and_language_codes():
    assert MASK_PLACEHOLDER == "<mask>"
    for code in "en zh de fr es it ja ko ru ar nl pt pl tr vi hi id sv fa he el hu cs ca fi uk ro bg da no".split():
        assert code in LANGUAGE_CODES


def test_fact_accessors_and_normalisation():
    f = make_fact()
    assert f.languages == ("en", "zh")
    assert f.prompt("zh") == "法国的首都是<mask>。"
    assert f.target("en") == "Paris"
    assert isinstance(f.prompts["en"], tuple) and isinstance(f.candidates["zh"], tuple)
    assert hash(f) == hash(make_fact())
    assert f == make_fact()
    with pytest.raises(KeyError, match="no language 'de'"):
        f.target("de")
    with pytest.raises(IndexError):
        f.prompt("en", 3)
    zh = f.restrict(["zh"])
    assert zh.languages == ("zh",) and zh.target("zh") == "巴黎"


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(prompts={"en": ["The capital of France is Paris."], "zh": ["法国的首都是<mask>。"]}), "no <mask>"),
        (dict(prompts={"en": ["<mask> is the capital of <mask>."], "zh": ["法国的首都是<mask>。"]}), "exactly one"),
        (dict(object={"en": "", "zh": "巴黎"}), "non-empty"),
        (dict(object={"en": "Paris"}), "inconsistent"),
        (
            dict(
                subject={"english": "France"},
                object={"english": "Paris"},
                prompts={"english": ["The capital of France is <mask>."]},
                candidates={},
            ),
            "unknown language code 'english'",
        ),
        (dict(candidates={"en": ["Berlin", "Rome"]}), "does not include the gold"),
        (dict(candidates={"de": ["Paris"]}), "no object"),
        (dict(relation="capital of"), "whitespace"),
        (dict(prompts={"en": "The capital of France is <mask>.", "zh": ["法国的首都是<mask>。"]}), "wrap it in a list"),
    ],
)
def test_fact_validation_errors(kw, pattern):
    with pytest.raises(FactFormatError, match=pattern):
        make_fact(**kw)


def test_fact_to_from_dict_round_trip():
    f = make_fact(relation_name="capital")
    d = f.to_dict()
    assert json.loads(json.dumps(d, ensure_ascii=False)) == d
    assert Fact.from_dict(d) == f
    with pytest.raises(FactFormatError, match="unknown field.*promts"):
        Fact.from_dict({**d, "promts": {}})
    d2 = dict(d)
    del d2["object"]
    with pytest.raises(FactFormatError, match="missing field.*object"):
        Fact.from_dict(d2)


# ------------------------------------------------------------------- causal prompts


def test_split_prompt_at_mask():
    assert split_prompt_at_mask("The capital of France is <mask>.") == ("The capital of France is ", ".")
    assert split_prompt_at_mask("<mask>是法国的首都。") == ("", "是法国的首都。")
    with pytest.raises(FactFormatError):
        split_prompt_at_mask("no mask here")
    with pytest.raises(FactFormatError):
        split_prompt_at_mask("<mask> and <mask>")


def test_causal_cut_english_moves_space_to_target():
    prefix, target = causal_prompt_and_target("The capital of France is <mask>.", "Paris")
    assert prefix == "The capital of France is"
    assert target == " Paris"
    # No doubled space if the target already has one.
    assert causal_prompt_and_target("It is <mask>.", " Paris") == ("It is", " Paris")


def test_causal_cut_chinese_adds_no_space():
    assert causal_prompt_and_target("法国的首都是<mask>。", "巴黎") == ("法国的首都是", "巴黎")
    # Mid-sentence mask: the text after the mask is dropped.
    assert causal_prompt_and_target("巴黎是<mask>的首都。", "法国") == ("巴黎是", "法国")


def test_causal_cut_rejects_empty_prefix_and_unknown_mode():
    with pytest.raises(FactFormatError, match="empty prefix"):
        causal_prompt_and_target("<mask>是法国的首都。", "巴黎")
    with pytest.raises(FactFormatError, match="empty prefix"):
        causal_prompt_and_target(" <mask> is the capital.", "Paris")
    with pytest.raises(ValueError, match="unknown mode"):
        causal_prompt_and_target("The capital of France is <mask>.", "Paris", mode="likelihood")


def test_causal_sentence_mode_keeps_the_rest_of_the_sentence():
    # Mid-sentence mask (BMLAMA zh): the rest of the sentence follows the object.
    assert causal_prompt_and_target("巴黎是<mask>的首都。", "法国", mode="sentence") == ("巴黎是", "法国的首都。")
    assert causal_prompt_and_target("Ronaldo is <mask> citizen. ", "Brazil", mode="sentence") == (
        "Ronaldo is", " Brazil citizen.")
    # Mask at the end: the full stop is scored too; the prefix is the same as in cut mode.
    assert causal_prompt_and_target("法国的首都是<mask>。", "巴黎", mode="sentence") == ("法国的首都是", "巴黎。")
    assert causal_prompt_and_target("It is <mask>", "Paris", mode="sentence") == ("It is", " Paris")
    with pytest.raises(FactFormatError, match="empty prefix"):
        causal_prompt_and_target("<mask>是法国的首都。", "巴黎", mode="sentence")
    from amig_plugin.data import CAUSAL_MODES

    assert CAUSAL_MODES == ("cut", "sentence")


# ------------------------------------------------------------------- shipped set


def test_shipped_set_size_relations_languages():
    facts = shipped_facts()
    assert len(facts) >= 120
    by_rel = group_by_relation(facts)
    assert len(by_rel) >= 8
    assert all(len(v) >= 10 for v in by_rel.values()), {k: len(v) for k, v in by_rel.items()}
    assert all(r.startswith("P") and r[1:].isdigit() for r in by_rel)
    assert len({f.id for f in facts}) == len(facts)
    for f in facts:
        assert f.languages == ("en", "zh")
        assert f.id.startswith(f.relation + "-")
        assert 2 <= len(f.prompts["en"]) <= 3 and len(f.prompts["zh"]) == 2
        assert 5 <= len(f.candidates["en"]) <= 10
        assert len(f.candidates["en"]) == len(f.candidates["zh"])


def test_shipped_prompts_one_mask_and_causal_friendly():
    for f in shipped_facts():
        for lang in f.languages:
            for p in f.prompts[lang]:
                assert p.count(MASK_PLACEHOLDER) == 1, (f.id, p)
                prefix, target = causal_prompt_and_target(p, f.target(lang))
                assert prefix.strip()
        for p in f.prompts["en"]:
            assert p.endswith(" <mask>."), (f.id, p)
            assert causal_prompt_and_target(p, f.target("en"))[1] == " " + f.target("en")
        for p in f.prompts["zh"]:
            assert p.endswith("<mask>。") and " <mask>" not in p, (f.id, p)
            assert causal_prompt_and_target(p, f.target("zh"))[1] == f.target("zh")


def test_shipped_en_zh_objects_are_parallel():
    """Within a relation, the same English object always maps to the same Chinese one
    (and back), for gold objects and candidates alike: EN and ZH name the same entity."""
    for rel, facts in group_by_relation(shipped_facts()).items():
        en2zh: dict[str, str] = {}
        zh2en: dict[str, str] = {}
        for f in facts:
            pairs = [(f.object["en"], f.object["zh"])] + list(zip(f.candidates["en"], f.candidates["zh"]))
            for en, zh in pairs:
                assert en2zh.setdefault(en, zh) == zh, (rel, f.id, en, zh)
                assert zh2en.setdefault(zh, en) == en, (rel, f.id, en, zh)
    known = {f.id: f for f in shipped_facts()}
    assert known["P36-france"].object == {"en": "Paris", "zh": "巴黎"}
    assert known["P36-japan"].object == {"en": "Tokyo", "zh": "东京"}
    assert known["P36-germany"].object == {"en": "Berlin", "zh": "柏林"}


def test_shipped_language_restriction():
    zh = shipped_facts(["zh"])
    assert zh and all(f.languages == ("zh",) for f in zh)
    with pytest.raises(FactFormatError, match="has no"):
        shipped_facts(["de"])


def test_shipped_file_loads_outside_repo_cwd(tmp_path):
    """importlib.resources, not a path relative to the working directory."""
    code = "from amig_plugin.data import shipped_facts; print(len(shipped_facts()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(shipped_facts())


# ------------------------------------------------------------------- JSONL I/O


def test_save_load_round_trip(tmp_path):
    facts = shipped_facts()[:20] + [make_fact(id="x", candidates={})]
    path = tmp_path / "facts.jsonl"
    save_facts(facts, path)
    assert load_facts(path) == facts
    assert "巴黎" in path.read_text(encoding="utf-8")  # non-ASCII kept readable


def test_load_facts_errors_name_file_and_line(tmp_path):
    good = json.dumps(make_fact().to_dict(), ensure_ascii=False)
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"bad\.jsonl:3: invalid JSON"):
        load_facts(path)
    bad = make_fact().to_dict()
    bad["prompts"]["en"] = ["The capital of France is Paris."]
    path.write_text(good.replace("P36-france", "a") + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"bad\.jsonl:2: .*no <mask>"):
        load_facts(path)
    path.write_text(good + "\n" + good + "\n", encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"bad\.jsonl:2: duplicate fact id 'P36-france' \(first on line 1\)"):
        load_facts(path)


# ------------------------------------------------------------------- BMLAMA


EN_ROWS = [
    ["Paris is the capital of <mask>.", "France", "Italy, France, Spain", "Paris"],
    ["Alan Turing was born in <mask>.", "London", "Paris, London", "Alan Turing"],
    ["Rome is the capital of <mask>.", "Italy", "Italy, France, Spain", "Rome"],
]
ZH_ROWS = [
    ["巴黎是<mask>的首都。", "法国", "意大利, 法国, 西班牙", "巴黎"],
    ["艾伦·图灵出生于<mask>。", "伦敦", "巴黎, 伦敦", "艾伦·图灵"],
    ["罗马是<mask>的首都。", "意大利", "意大利, 法国, 西班牙", "罗马"],
]


def test_bmlama_small_files_with_zh_quirks(tmp_path):
    en = write_tsv(tmp_path / "en.tsv", EN_ROWS)
    zh = write_tsv(tmp_path / "zh.tsv", ZH_ROWS, header="Prompt\tAns\tCandidate\tAns\tSubject", eol="\r\n")
    facts = load_bmlama({"en": en, "zh": zh})
    assert [f.id for f in facts] == ["bmlama-0", "bmlama-1", "bmlama-2"]
    assert facts[0].object == {"en": "France", "zh": "法国"}
    assert facts[0].candidates["zh"] == ("意大利", "法国", "西班牙")
    assert facts[0].prompt("zh") == "巴黎是<mask>的首都。"  # no stray \r
    assert facts[0].subject["zh"] == "巴黎"
    assert facts[0].relation == facts[2].relation == "bmlama-x-is-the-capital-of-y"
    assert facts[0].relation_name == "[X] is the capital of [Y]."
    assert facts[1].relation == "bmlama-x-was-born-in-y"


def test_bmlama_errors_name_file_and_line(tmp_path):
    en = write_tsv(tmp_path / "en.tsv", EN_ROWS)
    # Missing column.
    bad = write_tsv(tmp_path / "zh.tsv", [r[:2] + r[3:] for r in ZH_ROWS], header="Prompt\tAns\tSubject")
    with pytest.raises(FactFormatError, match=r"zh\.tsv:1: missing column.*Candidate Ans"):
        load_bmlama({"en": en, "zh": bad})
    # Wrong number of fields on data line 3 (second row).
    rows = [list(r) for r in ZH_ROWS]
    rows[1] = rows[1] + ["extra"]
    bad = write_tsv(tmp_path / "zh.tsv", rows)
    with pytest.raises(FactFormatError, match=r"zh\.tsv:3: expected 4 tab-separated fields.*found 5"):
        load_bmlama({"en": en, "zh": bad})
    # Prompt without a mask on line 4.
    rows = [list(r) for r in ZH_ROWS]
    rows[2][0] = "罗马是意大利的首都。"
    bad = write_tsv(tmp_path / "zh.tsv", rows)
    with pytest.raises(FactFormatError, match=r"zh\.tsv:4: .*no <mask>"):
        load_bmlama({"en": en, "zh": bad})
    # Row count mismatch names both files.
    bad = write_tsv(tmp_path / "zh.tsv", ZH_ROWS[:2])
    with pytest.raises(FactFormatError, match=r"row count mismatch.*en\.tsv: 3 rows.*zh\.tsv: 2 rows"):
        load_bmlama({"en": en, "zh": bad})
    with pytest.raises(FactFormatError, match=r"first row without a counterpart: .*en\.tsv:4\b"):
        load_bmlama({"en": en, "zh": bad})
    # Unknown language code names the file.
    zh = write_tsv(tmp_path / "zh.tsv", ZH_ROWS)
    with pytest.raises(FactFormatError, match=r"zh\.tsv: unknown language code 'chinese'"):
        load_bmlama({"en": en, "chinese": zh})
    # Subject not in the template-language prompt.
    rows = [list(r) for r in EN_ROWS]
    rows[1][3] = "Turing, Alan"
    bad_en = write_tsv(tmp_path / "en2.tsv", rows)
    with pytest.raises(FactFormatError, match=r"en2\.tsv:3: subject 'Turing, Alan' does not occur"):
        load_bmlama({"en": bad_en, "zh": zh})


def _check_bmlama_format(facts) -> None:
    """What every BMLAMA-format folder must give: zh quirks (CRLF stripped, header repaired)
    undone and candidates split, the object among the candidates in both languages."""
    for f in facts:
        assert not any(p.endswith("\r") for p in f.prompts["zh"])
        assert f.object["zh"] in f.candidates["zh"] and f.object["en"] in f.candidates["en"]
        assert len(f.candidates["en"]) == len(f.candidates["zh"])


def test_bmlama_format_on_files_from_the_shipped_facts(bmlama_dir):
    """The BMLAMA-17 layout (zh.tsv with CRLF line ends and the header split as
    "Candidate<TAB>Ans") written from the shipped facts: runs without the real data set."""
    zh = bmlama_dir / "zh.tsv"
    lines = zh.read_text(encoding="utf-8").splitlines()
    lines[0] = "Prompt\tAns\tCandidate\tAns\tSubject"
    zh.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    facts = load_bmlama({"en": bmlama_dir / "en.tsv", "zh": zh})
    shipped = shipped_facts(["en", "zh"])
    assert len(facts) == len(shipped) and facts[0].id == "bmlama-0"
    assert [f.object for f in facts] == [{"en": g.target("en"), "zh": g.target("zh")} for g in shipped]
    assert [f.subject for f in facts] == [{"en": g.subject["en"], "zh": g.subject["zh"]} for g in shipped]
    assert all(f.prompt("zh") in g.prompts["zh"] for f, g in zip(facts, shipped))
    _check_bmlama_format(facts)


@pytest.fixture(scope="module")
def real_bmlama():
    if not (BMLAMA_DIR / "en.tsv").is_file() or not (BMLAMA_DIR / "zh.tsv").is_file():
        pytest.skip(f"the real BMLAMA-17 data set is not next to the repository ({BMLAMA_DIR}): its sizes and "
                    "first rows are checked only there; the format is tested on files made from the shipped facts")
    return load_bmlama({"en": BMLAMA_DIR / "en.tsv", "zh": BMLAMA_DIR / "zh.tsv"})


def test_bmlama_real_files(real_bmlama):
    facts = real_bmlama
    assert len(facts) == 6792
    assert facts[0].id == "bmlama-0"
    assert facts[0].object == {"en": "Madrid", "zh": "马德里"}
    assert facts[0].subject["en"] == "Charles II of Spain"
    # zh quirks: CRLF stripped, header repaired, candidates split.
    _check_bmlama_format(facts)
    rels = Counter(f.relation for f in facts)
    assert 30 <= len(rels) <= 45  # about 38 English templates
    assert rels["bmlama-the-capital-of-x-is-y"] > 100
    assert facts[0].relation == "bmlama-x-was-born-in-y"


# ------------------------------------------------------------------- mLAMA


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_mlama(root: Path):
    write_jsonl(
        root / "en" / "templates.jsonl",
        [{"relation": "P19", "template": "[X] was born in [Y] ."}, {"relation": "P36", "template": "The capital of [X] is [Y] ."}],
    )
    write_jsonl(root / "zh" / "templates.jsonl", [{"relation": "P19", "template": "[X]出生于[Y]。"}])
    write_jsonl(
        root / "en" / "P19.jsonl",
        [
            {"uuid": "u1", "sub_label": "Alan Turing", "obj_label": "London"},
            {"uuid": "u2", "sub_label": "Marie Curie", "obj_label": "Warsaw"},
            {"uuid": "u3", "sub_label": "Mozart", "obj_label": "Salzburg"},
        ],
    )
    write_jsonl(
        root / "zh" / "P19.jsonl",
        [
            {"uuid": "u2", "sub_label": "玛丽·居里", "obj_label": "华沙"},
            {"uuid": "u1", "sub_label": "艾伦·图灵", "obj_label": "伦敦"},
            {"uuid": "u9", "sub_label": "某人", "obj_label": "某地"},
        ],
    )
    write_jsonl(root / "en" / "P36.jsonl", [{"uuid": "c1", "sub_label": "France", "obj_label": "Paris"}])


def test_mlama_join_by_uuid_and_report(tmp_path, caplog):
    make_mlama(tmp_path)
    with caplog.at_level("WARNING"):
        facts, report = load_mlama_with_report(tmp_path, ["en", "zh"])
    assert [f.id for f in facts] == ["mlama-u1", "mlama-u2"]
    f = facts[0]
    assert f.relation == "P19"
    assert f.object == {"en": "London", "zh": "伦敦"}
    assert f.prompt("en") == "Alan Turing was born in <mask>."  # tidy: no space before '.'
    assert f.prompt("zh") == "艾伦·图灵出生于<mask>。"
    assert set(f.candidates["en"]) == {"London", "Warsaw"}
    assert report.kept == 2 and report.dropped == 2
    assert report.dropped_by_language == {"en": 1, "zh": 1}
    assert report.relations == ["P19"] and "P36" in report.skipped_relations
    assert "dropped 2" in caplog.text
    assert load_mlama(tmp_path, ["en", "zh"]) == facts
    en_only = load_mlama(tmp_path, ["en"], tidy=False)
    assert {f.relation for f in en_only} == {"P19", "P36"} and len(en_only) == 4
    assert en_only[0].prompt("en") == "Alan Turing was born in <mask> ."
    with pytest.raises(FactFormatError, match="P36.*no template in zh"):
        load_mlama(tmp_path, ["en", "zh"], relations=["P36"])


def test_mlama_errors_name_file_and_line(tmp_path):
    make_mlama(tmp_path)
    p = tmp_path / "zh" / "P19.jsonl"
    p.write_text(p.read_text(encoding="utf-8") + '{"uuid": "u4", "sub_label": "X"}\n', encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"zh[/\\]P19\.jsonl:4: missing key.*obj_label"):
        load_mlama(tmp_path, ["en", "zh"])
    p.write_text('{"uuid": "u1", "sub_label": "艾伦·图灵", "obj_label": "伦敦"}\n{oops\n', encoding="utf-8")
    with pytest.raises(FactFormatError, match=r"zh[/\\]P19\.jsonl:2: invalid JSON"):
        load_mlama(tmp_path, ["en", "zh"])
    write_jsonl(tmp_path / "zh" / "templates.jsonl", [{"relation": "P19", "template": "[X]出生于某地。"}])
    with pytest.raises(FactFormatError, match=r"zh[/\\]templates\.jsonl:1: template .* \[Y\]"):
        load_mlama(tmp_path, ["en", "zh"])
    with pytest.raises(FactFormatError, match="unknown language code 'xx'"):
        load_mlama(tmp_path, ["en", "xx"])


# ------------------------------------------------------------------- wrong objects


def test_wrong_objects_exclude_gold_and_other_true_objects():
    base = dict(relation="P47", prompts={"en": ["France shares a border with <mask>."]})
    f1 = Fact(id="b1", subject={"en": "France"}, object={"en": "Spain"},
              candidates={"en": ["Spain", "Italy", "Japan", "Peru", "Germany", "spain "]}, **base)
    f2 = Fact(id="b2", subject={"en": "France"}, object={"en": "Italy"}, **base)
    f3 = Fact(id="b3", subject={"en": "Germany"}, object={"en": "Poland"}, **base)
    wrong = wrong_objects(f1, "en", [f1, f2, f3])
    assert sorted(wrong) == ["Germany", "Japan", "Peru"]
    # Without the relation's facts only the gold (case/space-insensitively) is removed.
    assert sorted(wrong_objects(f1, "en")) == ["Germany", "Italy", "Japan", "Peru"]
    # No candidates: fall back on the relation's objects.
    assert sorted(wrong_objects(f3, "en", [f1, f2, f3])) == ["Italy", "Spain"]


def test_wrong_objects_reproducible_with_seed():
    facts = shipped_facts()
    by_rel = group_by_relation(facts)
    for f in facts:
        for lang in f.languages:
            w = wrong_objects(f, lang, by_rel[f.relation])
            assert f.target(lang) not in w
            assert len(w) == len(set(w)) >= 4
            same_subject = {g.target(lang) for g in by_rel[f.relation] if g.subject[lang] == f.subject[lang]}
            assert not same_subject & set(w)
    f = facts[0]
    a = wrong_objects(f, "en", n=3, seed=1)
    assert a == wrong_objects(f, "en", n=3, seed=1)
    assert len(a) == 3
    orders = {tuple(wrong_objects(f, "en", seed=s)) for s in range(10)}
    assert len(orders) > 1  # the seed matters
    # Parallel candidates + same seed -> the same entities in EN and ZH.
    en = wrong_objects(f, "en", seed=5)
    zh = wrong_objects(f, "zh", seed=5)
    en2zh = dict(zip(f.candidates["en"], f.candidates["zh"]))
    assert sorted(en2zh[e] for e in en) == sorted(zh)
    with pytest.raises(ValueError):
        wrong_objects(f, "en", n=-1)


def test_group_by_relation_keeps_order():
    facts = shipped_facts()
    groups = group_by_relation(facts)
    assert sum(len(v) for v in groups.values()) == len(facts)
    assert list(groups)[0] == facts[0].relation
    for rel, fs in groups.items():
        assert all(f.relation == rel for f in fs)
        assert [facts.index(f) for f in fs] == sorted(facts.index(f) for f in fs)


def test_invalid_utf8_names_the_file_line_and_column(tmp_path):
    from amig_plugin.data import load_bmlama, load_facts, save_facts, shipped_facts

    en = write_tsv(tmp_path / "en.tsv", EN_ROWS)
    zh = write_tsv(tmp_path / "zh.tsv", ZH_ROWS)
    data = zh.read_bytes().split(b"\n")
    data[2] = data[2][:3] + b"\xff\xfe" + data[2][3:]
    zh.write_bytes(b"\n".join(data))
    with pytest.raises(FactFormatError, match=r"zh\.tsv:3: not valid UTF-8 \(byte 0xff at column 4.*save the file as UTF-8"):
        load_bmlama({"en": en, "zh": zh})
    facts = tmp_path / "facts.jsonl"
    save_facts(shipped_facts(["en"])[:3], facts)
    lines = facts.read_bytes().split(b"\n")
    lines[1] = b"\xc3" + lines[1]
    facts.write_bytes(b"\n".join(lines))
    with pytest.raises(FactFormatError, match=r"facts\.jsonl:2: not valid UTF-8 \(byte 0xc3 at column 1"):
        load_facts(facts)


# ----------------------------------------------------------------------------------------
# BMLAMA relations without English; text lost in cut mode


_ZH_ROWS = [("巴黎", "法国的首都是巴黎", "法国", "法国的首都是<mask>。"),
            ("柏林", "德国", "德国", "德国的首都是<mask>。"),
            ("北京", "老舍", "老舍", "老舍出生于<mask>。"),
            ("伦敦", "狄更斯", "狄更斯", "狄更斯出生于<mask>。"),
            ("英语", "莎士比亚", "莎士比亚", "莎士比亚的母语是<mask>。")]
_JA_ROWS = [("パリ", "フランス", "フランス", "フランスの首都は<mask>です。"),
            ("ベルリン", "ドイツ", "ドイツ", "ドイツの首都は<mask>です。"),
            ("北京", "老舎", "老舎", "老舎は<mask>で生まれました。"),
            ("ロンドン", "ディケンズ", "ディケンズ", "ディケンズは<mask>で生まれました。"),
            ("英語", "シェイクスピア", "シェイクスピア", "シェイクスピアの母語は<mask>です。")]


def _write_bmlama(path, rows):
    return write_tsv(path, [[prompt, ans, f"{ans},其他", subject] for ans, _unused, subject, prompt in rows])


@pytest.mark.parametrize("lang,rows,n_rel", [("zh", _ZH_ROWS, 3), ("ja", _JA_ROWS, 3)])
def test_bmlama_relations_without_english(tmp_path, lang, rows, n_rel):
    from amig_plugin.data import load_bmlama
    facts = load_bmlama({lang: _write_bmlama(tmp_path / f"{lang}.tsv", rows)})
    rels = [f.relation for f in facts]
    assert len(set(rels)) == n_rel, rels
    assert rels[0] == rels[1] and rels[2] == rels[3] and rels[0] != rels[2] != rels[4]
    assert "bmlama-x-y" not in rels
    assert all(r.startswith("bmlama-x-") for r in rels)


def test_bmlama_template_lang_choice(tmp_path):
    from amig_plugin.data import FactFormatError, load_bmlama
    paths = {"zh": _write_bmlama(tmp_path / "zh.tsv", _ZH_ROWS), "ja": _write_bmlama(tmp_path / "ja.tsv", _JA_ROWS)}
    by_zh = load_bmlama(paths, template_lang="zh")
    by_ja = load_bmlama(paths, template_lang="ja")
    assert by_zh[0].relation == "bmlama-x-的首都是-y" and by_zh[0].relation_name == "[X]的首都是[Y]。"
    assert by_ja[0].relation.startswith("bmlama-x-の首都は-y")
    # the same partition of rows whichever language names it
    part = lambda fs: [[i for i, f in enumerate(fs) if f.relation == r] for r in dict.fromkeys(f.relation for f in fs)]
    assert part(by_zh) == part(by_ja)
    assert len({f.relation for f in load_bmlama(paths)}) == 3  # "en" absent: a loaded language is used
    with pytest.raises(FactFormatError, match="template language 'fr'"):
        load_bmlama(paths, template_lang="fr")


def test_ascii_slugs_unchanged():
    from amig_plugin.data.bmlama import _slug
    assert _slug("[X] was born in [Y].") == "x-was-born-in-y"
    assert _slug("[X] est né en [Y].") == "x-est-né-en-y"


def test_cut_losses_counts_text_after_the_mask(tmp_path):
    from amig_plugin.data import cut_loss_warnings, cut_losses, load_bmlama
    paths = {"zh": _write_bmlama(tmp_path / "zh.tsv", _ZH_ROWS), "ja": _write_bmlama(tmp_path / "ja.tsv", _JA_ROWS)}
    losses = cut_losses(load_bmlama(paths), ["zh", "ja"])
    assert losses == {"zh": {"prompts": 5, "lose_text": 0, "example": ""},
                      "ja": {"prompts": 5, "lose_text": 5, "example": "フランスの首都は<mask>です。"}}
    warns = cut_loss_warnings(losses)
    assert len(warns) == 1 and warns[0].startswith("ja: 5 of 5 prompts") and "--causal-mode sentence" in warns[0]
    assert "e.g. 'フランスの首都は<mask>です。'" in warns[0]
