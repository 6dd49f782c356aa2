"""Reading files into pairs: every bad-input kind reported with file and line, abort mode, file kinds."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctllm.errors import UserError
from ctllm.pairs.readers import ImportAborted, RowError, read_pairs

FIXTURES = Path(__file__).parent / "fixtures" / "formats"


def where(errors: list[RowError]) -> list[tuple[int | None, int | None, str | None]]:
    return [(e.line, e.row, e.field) for e in errors]


def test_bad_jsonl_rows_each_reported_with_line_field_and_reason() -> None:
    result = read_pairs(FIXTURES / "bad_rows.jsonl", max_field_chars=200)
    assert result.format == "trl"
    assert result.rows == 11  # the blank line is not a row
    assert [p.chosen for p in result.pairs] == [
        "The bat is the only mammal capable of true flight.",
        "一年有四个季节：春、夏、秋、冬。",
    ]
    assert where(result.errors) == [
        (2, 2, None),
        (4, 3, "rejected"),
        (5, 4, "chosen"),
        (6, 5, "rejected"),
        (7, 6, "chosen"),
        (8, 7, "chosen"),
        (9, 8, None),
        (10, 9, None),
        (12, 11, "prompt"),
    ]
    reasons = [e.reason for e in result.errors]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "missing field"
    assert reasons[2] == "empty text"
    assert reasons[3] == "identical to 'chosen'"
    assert reasons[4] == "wrong type: expected text, got number"
    assert reasons[5] == "over the size limit: 300 > 200 characters"
    assert reasons[6].startswith("non-UTF-8 bytes")
    assert reasons[7] == "wrong type: expected a JSON object, got list"
    assert reasons[8] == "empty text"
    assert str(result.errors[1]) == "bad_rows.jsonl:4: field 'rejected': missing field"
    assert str(result.errors[0]).startswith("bad_rows.jsonl:2: invalid JSON")


def test_size_limit_is_the_callers_choice() -> None:
    result = read_pairs(FIXTURES / "bad_rows.jsonl")  # default limit 200,000 characters
    assert len(result.pairs) == 3
    assert 8 not in [e.line for e in result.errors]


def test_bad_csv_rows_reported_with_their_starting_line() -> None:
    result = read_pairs(FIXTURES / "bad_rows.csv")
    assert result.format == "huozi"
    assert where(result.errors) == [(3, 2, None), (4, 3, "chosen"), (5, 4, "reject"), (6, 5, "reject")]
    assert result.errors[0].reason.startswith("missing field")
    assert result.errors[2].reason == "non-UTF-8 bytes"
    assert str(result.errors[2]) == "bad_rows.csv:5: field 'reject': non-UTF-8 bytes"
    assert [p.meta["id"] for p in result.pairs] == ["b1", "b6", "b7"]
    assert result.pairs[1].chosen == "第一行，\n第二行。"  # a quoted cell over two lines
    assert result.pairs[2].chosen == "正确的回答。"


def test_bad_json_array_rows_reported_by_row_and_bad_bytes_by_line() -> None:
    result = read_pairs(FIXTURES / "bad_rows.json")
    assert result.format == "alpaca-ranking"
    assert where(result.errors) == [(None, 2, "history"), (4, 3, "chosen"), (None, 4, None), (None, 5, "instruction")]
    assert str(result.errors[0]).startswith("bad_rows.json: row 2: field 'history': wrong type")
    assert str(result.errors[1]) == "bad_rows.json:4: field 'chosen': non-UTF-8 bytes"
    assert [p.chosen for p in result.pairs] == ["tac", "5"]


@pytest.mark.parametrize("name", ["bad_rows.jsonl", "bad_rows.csv", "bad_rows.json"])
def test_abort_mode_raises_with_every_error_and_returns_nothing(name: str) -> None:
    skipped = read_pairs(FIXTURES / name)
    with pytest.raises(ImportAborted) as caught:
        read_pairs(FIXTURES / name, on_error="abort")
    assert caught.value.errors == skipped.errors
    assert isinstance(caught.value, UserError)
    assert str(skipped.errors[0]) in str(caught.value)


def test_abort_mode_on_a_clean_file_reads_everything() -> None:
    assert len(read_pairs(FIXTURES / "trl.jsonl", on_error="abort").pairs) == 3


def test_unparseable_or_missing_files_raise_user_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"broken\.json: not valid JSON \(line 4"):
        read_pairs(FIXTURES / "broken.json")
    with pytest.raises(UserError, match=r"empty\.jsonl: no rows"):
        read_pairs(FIXTURES / "empty.jsonl")
    with pytest.raises(UserError, match="nope.jsonl: no such file"):
        read_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="no such file.*hub"):
        read_pairs("someone/some-dataset")  # a hub id, but the hub was not allowed
    with pytest.raises(UserError, match="typo.jsonl: no such file or folder$"):
        read_pairs("data/typo.jsonl", allow_hub=True)  # looks like a file: never sent to the hub
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt: unknown file type"):
        read_pairs(tmp_path / "notes.txt")
    (tmp_path / "damaged.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="damaged.parquet: cannot read Parquet"):
        read_pairs(tmp_path / "damaged.parquet")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="bad.jsonl.gz: cannot read"):
        read_pairs(tmp_path / "bad.jsonl.gz")


def test_bad_options_raise_user_errors() -> None:
    with pytest.raises(UserError, match="unknown format 'csv-ish'"):
        read_pairs(FIXTURES / "trl.jsonl", fmt="csv-ish")
    with pytest.raises(UserError, match="on_error"):
        read_pairs(FIXTURES / "trl.jsonl", on_error="ignore")
    with pytest.raises(UserError, match="pku_choice"):
        read_pairs(FIXTURES / "pku_saferlhf.jsonl", pku_choice="kinder")
    with pytest.raises(UserError, match="mapping"):
        read_pairs(FIXTURES / "trl.jsonl", fmt="trl", mapping={"prompt": "a", "chosen": "b", "rejected": "c"})


def test_explicit_format_overrides_detection_and_reports_missing_fields() -> None:
    result = read_pairs(FIXTURES / "trl.jsonl", fmt="cvalues")
    assert result.format == "cvalues" and result.pairs == []
    assert [(e.line, e.field, e.reason) for e in result.errors] == [(n, "pos_resp", "missing field") for n in (1, 2, 3)]


def test_parquet_rows_with_nested_messages_and_row_numbers(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()]
    rows.append(dict(rows[0], rejected=rows[0]["chosen"]))  # identical answers
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "uf.parquet")
    result = read_pairs(tmp_path / "uf.parquet")
    assert result.format == "ultrafeedback" and result.rows == 3
    assert [p.chosen for p in result.pairs] == [r["chosen"][-1]["content"] for r in rows[:2]]
    assert where(result.errors) == [(None, 3, "rejected")]
    assert str(result.errors[0]) == "uf.parquet: row 3: field 'rejected': identical to 'chosen'"


def test_gzip_jsonl_and_json_lines_under_a_json_name(tmp_path: Path) -> None:
    raw = (FIXTURES / "bad_rows.jsonl").read_bytes()
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "rows.json").write_bytes(raw)
    plain = read_pairs(FIXTURES / "bad_rows.jsonl")
    for name in ("rows.jsonl.gz", "rows.json"):
        result = read_pairs(tmp_path / name)
        assert [p.content_hash() for p in result.pairs] == [p.content_hash() for p in plain.pairs]
        assert where(result.errors) == where(plain.errors)
        assert result.pairs[0].source == "rows"


def test_byte_order_mark_and_crlf_line_endings(tmp_path: Path) -> None:
    text = (FIXTURES / "huozi.csv").read_text(encoding="utf-8").replace("\n", "\r\n")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = read_pairs(tmp_path / "bom.csv")
    assert result.format == "huozi" and len(result.pairs) == 2 and result.errors == []
    lines = (FIXTURES / "trl.jsonl").read_bytes().replace(b"\n", b"\r\n")
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + lines)
    hashes = [p.content_hash() for p in read_pairs(FIXTURES / "trl.jsonl").pairs]
    assert [p.content_hash() for p in read_pairs(tmp_path / "bom.jsonl").pairs] == hashes


def test_csv_row_with_too_many_values(tmp_path: Path) -> None:
    (tmp_path / "wide.csv").write_text("prompt,chosen,rejected\na,b,c,d\nq,good,bad\n", encoding="utf-8")
    result = read_pairs(tmp_path / "wide.csv")
    assert [str(e) for e in result.errors] == ["wide.csv:2: extra fields: 4 values for 3 columns"]
    assert len(result.pairs) == 1


def test_csv_header_with_bad_bytes_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_bytes(b"prompt,cho\xffsen,rejected\na,b,c\n")
    with pytest.raises(UserError, match="h.csv:1"):
        read_pairs(tmp_path / "h.csv")


def test_datasets_folder_keeps_split_names(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in (FIXTURES / "cvalues.jsonl").read_text().splitlines()]
    DatasetDict({"train": Dataset.from_list(rows[:1]), "test": Dataset.from_list(rows[1:])}).save_to_disk(
        tmp_path / "cv"
    )
    result = read_pairs(tmp_path / "cv")
    assert result.format == "cvalues" and result.errors == []
    assert [p.meta["split"] for p in result.pairs] == ["train", "test"]
    assert result.pairs[0].source == "cv"


def test_a_folder_that_is_not_a_saved_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a saved `datasets` folder"):
        read_pairs(tmp_path)


def test_progress_reports_rows_handled() -> None:
    seen: list[int] = []
    read_pairs(FIXTURES / "bad_rows.jsonl", progress=seen.append)
    assert seen == [11]


def test_json_object_holding_rows_with_bad_bytes_and_nan(tmp_path: Path) -> None:
    (tmp_path / "o.json").write_bytes(
        b'{"rows": [\n {"prompt": "a", "chosen": "b", "rejected": "c"},\n'
        b' {"prompt": "x\xff", "chosen": "b", "rejected": "c"},\n'
        b' {"prompt": "n", "chosen": "y", "rejected": "z", "score": NaN}\n]}\n'
    )
    result = read_pairs(tmp_path / "o.json")
    assert [str(e) for e in result.errors] == ["o.json:3: field 'prompt': non-UTF-8 bytes"]
    assert [p.last_user for p in result.pairs] == ["a", "n"]
