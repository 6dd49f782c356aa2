"""Exports: each format's shape, and write → read giving back equal pairs (texts, source, language, meta)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ctllm.errors import UserError
from ctllm.pairs.readers import read_pairs
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.writers import EXPORT_FORMATS, dataset_info_entry, to_hf_dataset, write_pairs

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
SUFFIX = {"parquet": ".parquet", "alpaca-ranking": ".json"}
GOOD_FIXTURES = [
    "trl.jsonl",
    "trl_conversational.jsonl",
    "trl_implicit.jsonl",
    "ultrafeedback.jsonl",
    "alpaca_ranking.json",
    "alpaca_ranking_old.json",
    "sharegpt_ranking.json",
    "cvalues.jsonl",
    "pku_saferlhf.jsonl",
    "hh_rlhf.jsonl",
    "zhihu.tsv",
    "huozi.csv",
    "canonical.jsonl",
]


@pytest.fixture(scope="module")
def every_pair() -> list[Pair]:
    """All fixture pairs: single- and multi-turn, with and without system prompts, zh and en, varied meta."""
    return [pair for name in GOOD_FIXTURES for pair in read_pairs(FIXTURES / name).pairs]


def single_turn(pairs: list[Pair]) -> list[Pair]:
    return [p for p in pairs if len(p.prompt) == 1]


def assert_same(read: list[Pair], written: list[Pair]) -> None:
    assert read == written  # prompt, chosen, rejected, source, language
    assert [p.meta for p in read] == [p.meta for p in written]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_round_trip_every_format(fmt: str, every_pair: list[Pair], tmp_path: Path) -> None:
    assert any(p.system for p in every_pair) and any(len(p.prompt) > 3 for p in every_pair)
    path = tmp_path / f"out{SUFFIX.get(fmt, '.jsonl')}"
    assert write_pairs(every_pair, path, fmt) == len(every_pair)
    result = read_pairs(path)
    assert result.errors == []
    assert_same(result.pairs, every_pair)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("fmt", ["trl", "alpaca-ranking", "parquet"])
def test_round_trip_single_turn_pairs(fmt: str, every_pair: list[Pair], tmp_path: Path) -> None:
    pairs = single_turn(every_pair)
    path = tmp_path / f"one{SUFFIX.get(fmt, '.jsonl')}"
    write_pairs(pairs, path, fmt)
    assert_same(read_pairs(path).pairs, pairs)


def test_trl_standard_rows_only_when_every_prompt_is_one_user_turn(every_pair: list[Pair], tmp_path: Path) -> None:
    write_pairs(single_turn(every_pair), tmp_path / "standard.jsonl", "trl")
    row = json.loads((tmp_path / "standard.jsonl").read_text().splitlines()[0])
    assert row["prompt"] == single_turn(every_pair)[0].last_user
    assert isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
    assert read_pairs(tmp_path / "standard.jsonl").format == "trl"

    write_pairs(every_pair, tmp_path / "mixed.jsonl", "trl")
    rows = [json.loads(line) for line in (tmp_path / "mixed.jsonl").read_text().splitlines()]
    assert all(isinstance(r["prompt"], list) for r in rows)
    assert rows[0]["chosen"] == [{"role": "assistant", "content": every_pair[0].chosen}]
    assert read_pairs(tmp_path / "mixed.jsonl").format == "trl-conversational"


def test_alpaca_rows_have_history_system_and_empty_input(every_pair: list[Pair], tmp_path: Path) -> None:
    write_pairs(every_pair, tmp_path / "a.json", "alpaca-ranking")
    rows = json.loads((tmp_path / "a.json").read_text())
    by_instruction = {r["instruction"]: r for r in rows}
    tutor = by_instruction["And divided by 4?"]
    assert tutor["system"] == "You are a friendly math tutor."
    assert tutor["history"] == [["What is 12 times 3?", "12 times 3 is 36."]]
    assert tutor["input"] == "" and tutor["chosen"] == "36 divided by 4 is 9."
    assert {"instruction", "input", "chosen", "rejected", "system", "history"} <= set(tutor)


def test_dataset_info_entry_for_llama_factory() -> None:
    entry = dataset_info_entry("studio_pairs", "studio_pairs.json")
    assert entry == {
        "studio_pairs": {
            "file_name": "studio_pairs.json",
            "ranking": True,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
                "history": "history",
            },
        }
    }


def test_parquet_has_canonical_columns_with_message_structs(every_pair: list[Pair], tmp_path: Path) -> None:
    write_pairs(every_pair, tmp_path / "p.parquet", "parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["prompt", "chosen", "rejected", "source", "language", "meta"]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["prompt"] == [dict(m) for m in every_pair[0].prompt]
    assert json.loads(first["meta"]) == every_pair[0].meta


def test_canonical_rows_are_pair_dicts(every_pair: list[Pair], tmp_path: Path) -> None:
    write_pairs(every_pair, tmp_path / "c.jsonl", "canonical")
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [Pair.from_dict(r) for r in rows] == every_pair
    assert "中" in (tmp_path / "c.jsonl").read_text(encoding="utf-8")  # not \u-escaped


def test_hf_dataset_standard_or_conversational_and_back(every_pair: list[Pair], tmp_path: Path) -> None:
    standard = to_hf_dataset(single_turn(every_pair))
    assert standard.column_names == ["prompt", "chosen", "rejected", "source", "language", "meta"]
    assert isinstance(standard[0]["prompt"], str)
    conversational = to_hf_dataset(single_turn(every_pair), conversational=True)
    assert conversational[0]["prompt"] == [{"role": "user", "content": single_turn(every_pair)[0].last_user}]
    mixed = to_hf_dataset(every_pair)  # multi-turn pairs force messages
    assert isinstance(mixed[0]["prompt"], list)
    mixed.save_to_disk(tmp_path / "ds")
    assert_same(read_pairs(tmp_path / "ds").pairs, every_pair)


def test_empty_export_and_unknown_format(tmp_path: Path) -> None:
    assert write_pairs([], tmp_path / "none.jsonl", "trl") == 0
    assert (tmp_path / "none.jsonl").read_text() == ""
    with pytest.raises(UserError, match="unknown export format 'xml'"):
        write_pairs([], tmp_path / "x.xml", "xml")


def test_a_failed_export_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.jsonl"
    write_pairs([Pair(user_prompt("q"), "good", "bad")], path, "canonical")
    before = path.read_text()

    def broken():
        yield Pair(user_prompt("q2"), "good2", "bad2")
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        write_pairs(broken(), path, "canonical")
    assert path.read_text() == before
    assert not list(tmp_path.glob("*.partial"))
