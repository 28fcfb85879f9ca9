from __future__ import annotations

import json
import math
import multiprocessing as mp

import pytest

from sotopia_env.jsonio import (
    JSONFileError,
    append_jsonl,
    iter_jsonl,
    read_json,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)


def test_a_bad_middle_line_of_an_appended_file_is_an_error_naming_the_file_and_the_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(JSONFileError, match=r"labels\.jsonl: line 3: not valid JSON"):
        list(iter_jsonl(path))


def test_a_partial_last_line_is_skipped_by_readers_and_cut_by_the_next_append(tmp_path):
    path = tmp_path / "eps.jsonl"
    append_jsonl(path, {"id": "a"})
    with path.open("a") as f:  # a writer killed halfway through its line
        f.write('{"id": "hal')
    assert list(iter_jsonl(path)) == [{"id": "a"}]
    append_jsonl(path, {"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_a_missing_appended_file_has_no_records(tmp_path):
    assert list(iter_jsonl(tmp_path / "not-yet.jsonl")) == []


def test_hand_written_jsonl_keeps_a_last_line_without_newline_and_names_lines(tmp_path):
    path = tmp_path / "scenarios.jsonl"
    path.write_text('{"id": "s1"}\n\n{"id": "s2"}')
    assert read_records(path) == [("line 1", {"id": "s1"}), ("line 3", {"id": "s2"})]
    path.write_text('{"id": "s1"}\n{"id": "s2"}\n{"id": ')
    with pytest.raises(JSONFileError, match=r"scenarios\.jsonl: line 3: not valid JSON"):
        read_records(path)


def test_hand_written_json_gives_one_record_per_list_item_or_one_for_an_object(tmp_path):
    listed, single = tmp_path / "many.json", tmp_path / "one.json"
    listed.write_text('[{"id": "a"}, {"id": "b"}]')
    single.write_text('{"id": "c"}')
    assert read_records(listed) == [("record 0", {"id": "a"}), ("record 1", {"id": "b"})]
    assert read_records(single) == [("record 0", {"id": "c"})]


def test_a_whole_json_file_that_does_not_parse_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n "a": 1,\n "b": \n}\n')  # the value of "b" is missing: parsing stops at line 4's "}"
    with pytest.raises(JSONFileError, match=r"config\.json: line 4: not valid JSON"):
        read_json(path)


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(JSONFileError, match=r"absent\.json: cannot read"):
        read_json(tmp_path / "absent.json")


def test_atomic_writes_replace_the_whole_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "out" / "report.json"
    write_json_atomic(path, {"old": True})
    write_json_atomic(path, {"mean": 6.5})
    assert json.loads(path.read_text()) == {"mean": 6.5}
    write_jsonl_atomic(tmp_path / "out" / "rows.jsonl", [{"a": 1}, {"a": 2}])
    assert (tmp_path / "out" / "rows.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n'
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "rows.jsonl"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "new \ud800")  # a lone surrogate fails to encode after the file is opened
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def _replace_many(path: str, worker: int) -> None:
    for _ in range(100):
        write_text_atomic(path, str(worker) * 200_000)


def test_two_writers_replacing_one_file_never_leave_half_a_file(tmp_path):
    # With one shared temporary name, one writer renames the other's half-written file into place, and
    # the other's rename then finds no file.
    path = str(tmp_path / "state.json")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_replace_many, args=(path, w)) for w in (1, 2)]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        try:
            with open(path) as f:
                seen.add(f.read())
        except FileNotFoundError:
            pass
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    with open(path) as f:
        seen.add(f.read())
    assert seen <= {"1" * 200_000, "2" * 200_000}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def _append_many(path: str, worker: int) -> None:
    for i in range(50):
        append_jsonl(path, {"id": f"{worker}-{i}", "pad": "x" * 5000})


def test_concurrent_appends_from_processes_never_interleave(tmp_path):
    path = str(tmp_path / "many.jsonl")
    procs = [mp.get_context("fork").Process(target=_append_many, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 200 and len({json.loads(line)["id"] for line in lines}) == 200


# --- what a record is: the appender and the readers agree ---------------------------------------------------


def test_an_append_keeps_a_complete_last_record_without_newline_and_cuts_only_a_torn_one(tmp_path):
    path = tmp_path / "eps.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')  # b is whole: only its newline is missing (a hand edit, another tool)
    assert list(iter_jsonl(path)) == [{"id": "a"}, {"id": "b"}]
    append_jsonl(path, {"id": "c"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "only"}')
    append_jsonl(one, {"id": "new"})
    assert list(iter_jsonl(one)) == [{"id": "only"}, {"id": "new"}]
    # A torn record never parses as an object (a number it may: `{"n": 12` torn after "1" leaves no number,
    # but a line holding `12` does parse): both are cut, by readers and by the next append.
    for torn in ('{"id": "d", "n": [1, 2', "12"):
        path.write_text('{"id": "a"}\n' + torn)
        assert list(iter_jsonl(path)) == [{"id": "a"}]
        append_jsonl(path, {"id": "e"})
        assert path.read_text() == '{"id": "a"}\n{"id": "e"}\n'


def test_line_and_paragraph_separators_inside_a_record_are_data_not_line_breaks(tmp_path):
    text = "one\u2028two\u2029three\x85four"
    path = tmp_path / "eps.jsonl"
    append_jsonl(path, {"text": text})
    append_jsonl(path, {"text": "next"})
    assert [r["text"] for r in iter_jsonl(path)] == [text, "next"]
    # Written escaped, so even a reader that splits on them (str.splitlines) sees two lines.
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    raw = tmp_path / "hand.jsonl"  # the same characters unescaped, as another tool may write them
    raw.write_text('{"text": "a\u2028b"}\n{"text": "c"}\n', encoding="utf-8")
    assert [r["text"] for r in iter_jsonl(raw)] == ["a\u2028b", "c"]
    assert [r["text"] for _, r in read_records(raw)] == ["a\u2028b", "c"]


# --- NaN and Infinity: never written, reported when read ----------------------------------------------------


def test_writers_refuse_nan_and_infinity_naming_the_file_and_the_field(tmp_path):
    metrics = tmp_path / "run" / "metrics.jsonl"
    append_jsonl(metrics, {"step": 1, "reward_mean": 0.5})
    with pytest.raises(ValueError, match=r"metrics\.jsonl: record field 'reward_mean' is NaN; .*nothing was written"):
        append_jsonl(metrics, {"step": 2, "reward_mean": float("nan")})
    assert list(iter_jsonl(metrics)) == [{"step": 1, "reward_mean": 0.5}]
    with pytest.raises(ValueError, match=r"rows\.jsonl: record 2 field 'dims\.goal' is -Infinity"):
        write_jsonl_atomic(tmp_path / "rows.jsonl", [{"dims": {"goal": 1.0}}, {"dims": {"goal": -math.inf}}])
    with pytest.raises(ValueError, match=r"summary\.json: field 'losses\[1\]' is Infinity"):
        write_json_atomic(tmp_path / "summary.json", {"losses": [0.1, math.inf]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_readers_report_nan_and_infinity_by_file_and_line(tmp_path):
    appended = tmp_path / "metrics.jsonl"
    appended.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": NaN}\n')
    with pytest.raises(JSONFileError, match=r"metrics\.jsonl: line 2: NaN is not a JSON number"):
        list(iter_jsonl(appended))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"value": 1}\n{"value": -Infinity}\n')
    with pytest.raises(JSONFileError, match=r"rows\.jsonl: line 2: -Infinity is not a JSON number"):
        read_records(rows)
    whole = tmp_path / "reward_model.json"
    whole.write_text('[\n {"input": "a", "note": "NaN in a string is text", "value": 1},\n {"value": Infinity}\n]')
    with pytest.raises(JSONFileError, match=r"reward_model\.json: line 3: Infinity is not a JSON number"):
        read_json(whole)
