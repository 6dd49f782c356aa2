"""Unpaired rated answers (KTO's data) end to end: the store table (its migration, add / count / list / dedup),
TRL's unpaired format read from JSONL / JSON / Parquet with errors naming file, line and field, and
``python -m ctllm import`` / ``export`` round trips through a real store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctllm.errors import UserError
from ctllm.pairs.readers import UnpairedFile, read_pairs, read_rated
from ctllm.pairs.schema import Pair, RatedAnswer, user_prompt
from ctllm.pairs.store import SCHEMA_VERSION, Store
from tests.test_cli_pairs import cli, write_jsonl

ROWS = [
    {"prompt": "How do I reset my password?", "completion": "Open Settings, then Security, then Reset.",
     "label": True},
    {"prompt": "How do I reset my password?", "completion": "Figure it out yourself.", "label": False},
    {"prompt": "如何保护个人隐私？", "completion": "不要随意透露身份证号和密码。", "label": True,
     "category": "privacy"},
    {"prompt": "What is 2 + 2?", "completion": "It is 5.", "label": False},
]
CONVERSATIONAL = [
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
     "completion": [{"role": "assistant", "content": "Paris."}], "label": True},
    {"prompt": [{"role": "user", "content": "Capital of France?"}],
     "completion": [{"role": "assistant", "content": "Lyon, I think."}], "label": False},
]


def test_store_adds_counts_lists_and_dedups(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create_collection("fb")
    answers = [RatedAnswer(user_prompt(r["prompt"]), r["completion"], r["label"]) for r in ROWS]
    assert store.add_rated("fb", answers, created_by="me") == (4, 0)
    assert store.add_rated("fb", answers[:2]) == (0, 2)  # same prompt, completion and label: a duplicate
    flipped = RatedAnswer(answers[0].prompt, answers[0].completion, False)
    assert store.add_rated("fb", [flipped]) == (1, 0)  # the same answer rated the other way is kept
    assert store.count_rated("fb") == 5
    assert (store.count_rated("fb", desirable=True), store.count_rated("fb", desirable=False)) == (2, 3)
    first = store.list_rated("fb", limit=2)
    rest = store.list_rated("fb", limit=10, after_id=first[-1].id)
    assert [r.answer for r in first + rest] == [*answers, flipped]
    assert [r.answer for r in store.iter_rated("fb")] == [*answers, flipped]
    assert first[0].created_by == "me" and first[0].answer.language == "en" and rest[0].answer.language == "zh"
    store.delete_collection("fb")
    assert store.db.execute("SELECT count(*) FROM rated_answers").fetchone()[0] == 0


def test_a_schema_5_store_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    store.create_collection("c")
    store.add_rated("c", [RatedAnswer(user_prompt("q"), "a", True)])
    store.close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE rated_answers; PRAGMA user_version = 5;")
    db.close()
    reopened = Store(path)
    assert reopened.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert reopened.count_rated("c") == 0
    reopened.add_rated("c", [RatedAnswer(user_prompt("q"), "a", True)])
    assert reopened.count_rated("c") == 1


def test_read_rated_jsonl_names_file_line_and_field(tmp_path: Path) -> None:
    bad = ('{"prompt": "q", "completion": "a", "label": "maybe"}',
           '{"prompt": "q", "label": true}',
           '{"prompt": "", "completion": "a", "label": false}',
           "{not json")
    path = write_jsonl(tmp_path / "fb.jsonl", ROWS, bad)
    result = read_rated(path)
    assert result.rows == 8 and len(result.answers) == 4
    assert [a.desirable for a in result.answers] == [True, False, True, False]
    assert result.answers[2].meta == {"category": "privacy"} and result.answers[2].source == "fb"
    errors = [str(e) for e in result.errors]
    assert errors[0].startswith("fb.jsonl:5: field 'label': wrong type"), errors
    assert errors[1] == "fb.jsonl:6: field 'completion': missing field"
    assert errors[2] == "fb.jsonl:7: field 'prompt': empty text"
    assert errors[3].startswith("fb.jsonl:8:")
    with pytest.raises(UserError, match="import aborted"):
        read_rated(path, on_error="abort")
    # read_pairs recognises the format and says what it is instead of guessing a pair format
    with pytest.raises(UnpairedFile, match="trl-unpaired"):
        read_pairs(path)


def test_read_rated_conversational_json_and_parquet(tmp_path: Path) -> None:
    json_path = tmp_path / "conv.json"
    json_path.write_text(json.dumps(CONVERSATIONAL), encoding="utf-8")
    answers = read_rated(json_path).answers
    assert answers[0].prompt == ({"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Capital of France?"})
    assert (answers[0].completion, answers[0].desirable) == ("Paris.", True)
    parquet_path = tmp_path / "fb.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in ("prompt", "completion", "label")} for r in ROWS]),
                   parquet_path)
    result = read_rated(parquet_path)
    assert [(a.last_user, a.completion, a.desirable) for a in result.answers] == [
        (r["prompt"], r["completion"], r["label"]) for r in ROWS]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "completion": "a", "label": 3}]), bad)
    assert str(read_rated(bad).errors[0]).startswith("bad.parquet: row 1: field 'label': wrong type")


@pytest.mark.parametrize("fmt", ["trl-unpaired", "trl-unpaired-parquet"])
def test_cli_import_detects_and_export_round_trips(settings, tmp_path: Path, capsys, fmt: str) -> None:
    source = write_jsonl(tmp_path / "fb.jsonl", ROWS + CONVERSATIONAL)
    assert cli(settings, "import", str(source), "--collection", "feedback") == 0
    report = capsys.readouterr().out
    assert "6 rated answers added" in report and "format trl-unpaired" in report
    out = tmp_path / ("out.jsonl" if fmt == "trl-unpaired" else "out.parquet")
    assert cli(settings, "export", "--collection", "feedback", "--format", fmt, "--out", str(out)) == 0
    assert "wrote 6 rated answers of 'feedback'" in capsys.readouterr().out
    rows = ([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if fmt == "trl-unpaired"
            else pq.read_table(out).to_pylist())
    # one multi-turn prompt: the whole file is conversational, as TRL reads it
    assert rows[0]["prompt"] == [{"role": "user", "content": ROWS[0]["prompt"]}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": ROWS[0]["completion"]}]
    assert [r["label"] for r in rows] == [True, False, True, False, True, False]
    # and it reads back to the same answers, meta included
    store = Store(settings.db_path)
    again = read_rated(out).answers
    stored = [r.answer for r in store.iter_rated("feedback")]
    assert again == stored and [a.meta for a in again] == [a.meta for a in stored]
    assert [a.source for a in again] == ["fb"] * 6


def test_cli_import_with_explicit_format_and_export_errors(settings, tmp_path: Path, capsys) -> None:
    source = write_jsonl(tmp_path / "fb.jsonl", ROWS[:2])
    assert cli(settings, "import", str(source), "--collection", "f2", "--format", "trl-unpaired") == 0
    assert "2 rated answers added" in capsys.readouterr().out
    assert cli(settings, "export", "--collection", "f2", "--format", "trl-unpaired", "--split", "test") != 0
    assert "no --push, no --split" in capsys.readouterr().err
    Store(settings.db_path).create_collection("empty")
    assert cli(settings, "export", "--collection", "empty", "--format", "trl-unpaired") != 0
    assert "no rated answer to export" in capsys.readouterr().err


def test_kto_examples_unroll_pairs_then_add_rated_answers(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create_collection("mix")
    pair = Pair(user_prompt("Capital of France?"), "Paris.", "Lyon.", source="src", meta={"k": 1})
    store.add_pairs("mix", [pair])
    rated = RatedAnswer(user_prompt("2 + 2?"), "4", True)
    store.add_rated("mix", [rated])
    examples = store.kto_examples("mix")
    assert [(e.completion, e.desirable) for e in examples] == [("Paris.", True), ("Lyon.", False), ("4", True)]
    assert examples[0].prompt == examples[1].prompt == pair.prompt
    assert (examples[1].source, examples[1].meta, examples[1].language) == ("src", {"k": 1}, pair.language)
