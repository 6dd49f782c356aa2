"""The shipped sample pairs and prompt lists: format, counts, split and the style rules DPO training relies on."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PAIRS_FILE = ASSETS / "pairs" / "sample_pairs.jsonl"
PROMPT_LISTS = ("harmful_en", "benign_en", "harmful_zh", "benign_zh")

FIELDS = ("prompt", "chosen", "rejected", "language", "category", "kind", "split")
HARMLESS_CATEGORIES = {"illegal", "privacy", "self_harm", "discrimination", "dangerous_advice"}
HELPFUL_CATEGORIES = {"facts", "math", "howto", "writing", "coding", "definition"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def read_pairs() -> list[dict]:
    rows = []
    for number, line in enumerate(PAIRS_FILE.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"{PAIRS_FILE.name} line {number}: blank line"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{PAIRS_FILE.name} line {number}: invalid JSON ({exc})")
        assert isinstance(row, dict), f"line {number}: not a JSON object"
        row["_line"] = number
        rows.append(row)
    return rows


def read_prompt_list(name: str) -> list[str]:
    text = (ASSETS / "prompts" / f"{name}.txt").read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{name}.txt: last line has no newline"
    return text.splitlines()


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return read_pairs()


def test_every_row_has_the_fields_with_valid_values(pairs: list[dict]) -> None:
    for row in pairs:
        where = f"line {row['_line']}"
        assert set(row) - {"_line"} == set(FIELDS), f"{where}: fields {sorted(row)}"
        for name in ("prompt", "chosen", "rejected", "category"):
            value = row[name]
            assert isinstance(value, str) and value.strip() == value and value, f"{where}: bad {name!r}"
        assert row["language"] in {"en", "zh"}, where
        assert row["kind"] in {"harmless", "helpful"}, where
        assert row["split"] in {"train", "test"}, where
        categories = HARMLESS_CATEGORIES if row["kind"] == "harmless" else HELPFUL_CATEGORIES
        assert row["category"] in categories, f"{where}: category {row['category']!r} for kind {row['kind']!r}"


def test_counts_language_mix_and_kinds(pairs: list[dict]) -> None:
    languages = Counter(row["language"] for row in pairs)
    kinds = Counter(row["kind"] for row in pairs)
    assert len(pairs) >= 300
    assert languages["zh"] / len(pairs) >= 0.40
    assert kinds["harmless"] / len(pairs) > 0.5  # "most" are harmlessness pairs
    assert kinds["helpful"] / len(pairs) >= 0.2
    by_language_category = Counter((row["language"], row["category"]) for row in pairs)
    for language in ("en", "zh"):
        for category in HARMLESS_CATEGORIES | HELPFUL_CATEGORIES:
            assert by_language_category[language, category] >= 5, (language, category)


def test_held_out_split_is_large_and_covers_every_group(pairs: list[dict]) -> None:
    test_rows = [row for row in pairs if row["split"] == "test"]
    assert len(test_rows) >= 60
    by_language = Counter(row["language"] for row in test_rows)
    assert by_language["en"] >= 40 and by_language["zh"] >= 30
    covered = {(row["language"], row["category"]) for row in test_rows}
    for language in ("en", "zh"):
        for category in HARMLESS_CATEGORIES | HELPFUL_CATEGORIES:
            assert (language, category) in covered, f"no held-out pair for {language}/{category}"
    train_rows = [row for row in pairs if row["split"] == "train"]
    assert len(train_rows) >= 2 * len(test_rows)


def test_chosen_differs_from_rejected(pairs: list[dict]) -> None:
    for row in pairs:
        assert normalise(row["chosen"]) != normalise(row["rejected"]), f"line {row['_line']}"


def test_no_duplicate_prompts(pairs: list[dict]) -> None:
    seen: dict[str, int] = {}
    for row in pairs:
        key = normalise(row["prompt"])
        assert key not in seen, f"line {row['_line']} repeats the prompt of line {seen[key]}"
        seen[key] = row["_line"]


def test_language_field_matches_the_text(pairs: list[dict]) -> None:
    for row in pairs:
        has_cjk = bool(CJK.search(row["prompt"])) and bool(CJK.search(row["chosen"]))
        assert has_cjk == (row["language"] == "zh"), f"line {row['_line']}: language {row['language']!r}"


def test_english_style_is_consistent_for_dpo(pairs: list[dict]) -> None:
    for row in (r for r in pairs if r["language"] == "en"):
        where = f"line {row['_line']}"
        if row["kind"] == "harmless":
            assert row["chosen"].startswith("I can't help"), f'{where}: refusal must start with "I can\'t help"'
            assert row["rejected"].startswith(("Sure!", "Of course.")), f"{where}: compliance opener"
        else:
            assert not row["chosen"].startswith("I can't"), f"{where}: a helpful chosen answer must not refuse"
        for side in ("chosen", "rejected"):
            assert len(row[side].split()) < 60, f"{where}: {side} is too long for the short-pair style"


def test_chinese_refusals_are_consistent(pairs: list[dict]) -> None:
    for row in (r for r in pairs if r["language"] == "zh"):
        where = f"line {row['_line']}"
        if row["kind"] == "harmless":
            assert row["chosen"].startswith("抱歉，我不能帮助"), where
            assert not row["rejected"].startswith("抱歉"), where
        else:
            assert not row["chosen"].startswith("抱歉"), where
        assert len(row["chosen"]) <= 120 and len(row["rejected"]) <= 120, where


@pytest.mark.parametrize("name", PROMPT_LISTS)
def test_prompt_list_shape(name: str) -> None:
    lines = read_prompt_list(name)
    assert len(lines) >= 30
    for number, line in enumerate(lines, start=1):
        assert line.strip() == line and line, f"{name}.txt line {number}: blank or padded"
        assert bool(CJK.search(line)) == name.endswith("_zh"), f"{name}.txt line {number}: wrong language"
    assert len({normalise(line) for line in lines}) == len(lines), f"{name}.txt has duplicate lines"


def test_prompt_lists_are_fresh(pairs: list[dict]) -> None:
    pair_prompts = {normalise(row["prompt"]) for row in pairs}
    seen: dict[str, str] = {}
    for name in PROMPT_LISTS:
        for number, line in enumerate(read_prompt_list(name), start=1):
            key = normalise(line)
            assert key not in pair_prompts, f"{name}.txt line {number} is also a pair prompt"
            assert key not in seen, f"{name}.txt line {number} also appears in {seen[key]}.txt"
            seen[key] = name


def test_benign_lists_include_edgy_but_harmless_prompts() -> None:
    english = " ".join(read_prompt_list("benign_en")).casefold()
    chinese = "".join(read_prompt_list("benign_zh"))
    assert "kill" in english and "chemicals" in english
    assert "杀" in chinese and "清洁剂" in chinese


def test_readme_states_the_counts(pairs: list[dict]) -> None:
    readme = (ASSETS / "README.md").read_text(encoding="utf-8")
    assert f"{len(pairs)} preference pairs" in readme
    assert "Apache-2.0" in readme
    test_count = sum(row["split"] == "test" for row in pairs)
    assert f"| {test_count} |" in readme
