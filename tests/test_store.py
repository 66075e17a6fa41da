"""amig_plugin.store: append-only JSONL record stores. Keys are unique; a cut last line (a killed
write) is removed with a copy kept and a note, damage before it is an error naming the line;
read-only opens never write; a replacement wins on reload; content keys ignore key order."""

from __future__ import annotations

import json

import pytest

from amig_plugin.errors import AmigError
from amig_plugin.store import RecordStore, StoreError, content_key


def _store_with_three(path):
    store = RecordStore(path)
    for i, key in enumerate("abc"):
        store.add(key, {"v": i})
    return store


def test_records_survive_a_reopen_and_a_key_is_added_once(tmp_path):
    path = tmp_path / "sub" / "s.jsonl"  # the folder is made
    store = _store_with_three(path)
    with pytest.raises(KeyError, match="already in"):
        store.add("a", {"v": 9})
    again = RecordStore(path)
    assert again.keys() == ["a", "b", "c"] and [r["v"] for r in again] == [0, 1, 2]
    assert "b" in again and again.get("b") == {"key": "b", "v": 1} and again.get("z") is None
    assert path.read_bytes().count(b"\n") == 3


def test_a_cut_last_line_is_removed_with_a_copy_and_a_note(tmp_path, capsys):
    path = tmp_path / "s.jsonl"
    _store_with_three(path)
    data = path.read_bytes()
    good = data[:data.rstrip(b"\n").rfind(b"\n") + 1]  # the first two lines
    path.write_bytes(data[:-5])  # a write killed in the middle of the last record
    store = RecordStore(path)
    assert store.repaired and store.keys() == ["a", "b"]
    assert path.read_bytes() == good
    assert (tmp_path / "s.jsonl.corrupt").read_bytes() == data[len(good):-5] + b"\n"
    assert "s.jsonl:3: incomplete last record" in capsys.readouterr().err
    store.add("c", {"v": 2})  # resumes: the record is written again
    assert RecordStore(path).keys() == ["a", "b", "c"]


def test_damage_before_the_last_line_names_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    _store_with_three(path)
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:7]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match=r"s\.jsonl:2: damaged record") as info:
        RecordStore(path)
    assert isinstance(info.value, AmigError)


def test_duplicate_keys_fail_unless_allowed_and_then_the_first_wins(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"key": "k", "v": v}) + "\n" for v in (1, 2)), encoding="utf-8")
    with pytest.raises(StoreError, match=r"s\.jsonl:2: duplicate key 'k'"):
        RecordStore(path)
    shared = RecordStore(path, allow_duplicates=True)
    assert shared.get("k")["v"] == 1 and shared.duplicates_ignored == 1


def test_read_only_skips_a_partial_last_line_and_never_writes(tmp_path):
    path = tmp_path / "s.jsonl"
    _store_with_three(path)
    cut = path.read_bytes()[:-5]
    path.write_bytes(cut)
    store = RecordStore(path, read_only=True)
    assert store.partial_last_line and not store.repaired and store.keys() == ["a", "b"]
    assert path.read_bytes() == cut and not (tmp_path / "s.jsonl.corrupt").exists()
    for write in (lambda: store.add("d", {}), lambda: store.replace("a", {})):
        with pytest.raises(PermissionError, match="read-only"):
            write()
    assert not RecordStore(tmp_path / "none" / "x.jsonl", read_only=True).path.parent.exists()


def test_content_key_ignores_key_order_and_tells_values_apart():
    a = content_key({"steps": 20, "method": "amig", "layers": [0, 1]})
    assert a == content_key({"layers": [0, 1], "method": "amig", "steps": 20})
    assert len(a) == 40 and int(a, 16) >= 0
    assert a != content_key({"steps": 21, "method": "amig", "layers": [0, 1]})
    assert a != content_key({"steps": 20, "method": "amig", "layers": [1, 0]})
    assert content_key({"lang": "中文"}) != content_key({"lang": "中"})


def test_store_replace_wins_on_reload(tmp_path):
    store = RecordStore(tmp_path / "s.jsonl", allow_duplicates=True)
    store.add("k", {"v": 1})
    store.replace("k", {"v": 2})
    store.add("j", {"v": 3})
    again = RecordStore(tmp_path / "s.jsonl")  # a replacement is not a duplicate
    assert again.get("k")["v"] == 2 and again.get("j")["v"] == 3 and len(again) == 2
