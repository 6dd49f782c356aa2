"""Format converters and detection, on the fixture files in tests/fixtures/formats (one per format)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctllm.errors import UserError
from ctllm.pairs.formats import FORMATS, ConvertOptions, RowProblem, detect_format
from ctllm.pairs.readers import read_pairs
from ctllm.pairs.schema import detect_language, user_prompt

FIXTURES = Path(__file__).parent / "fixtures" / "formats"


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def convert(fmt: str, row: dict, **options) -> list:
    return FORMATS[fmt].convert(row, ConvertOptions(source="test", **options))


@pytest.mark.parametrize(
    ("file_name", "fmt"),
    [
        ("trl.jsonl", "trl"),
        ("trl_conversational.jsonl", "trl-conversational"),
        ("trl_implicit.jsonl", "trl-implicit"),
        ("ultrafeedback.jsonl", "ultrafeedback"),
        ("alpaca_ranking.json", "alpaca-ranking"),
        ("alpaca_ranking_old.json", "alpaca-ranking-old"),
        ("sharegpt_ranking.json", "sharegpt-ranking"),
        ("cvalues.jsonl", "cvalues"),
        ("pku_saferlhf.jsonl", "pku-saferlhf"),
        ("hh_rlhf.jsonl", "hh-rlhf"),
        ("zhihu.tsv", "zhihu"),
        ("huozi.csv", "huozi"),
        ("canonical.jsonl", "canonical"),
    ],
)
def test_each_fixture_is_detected_and_read_whole(file_name: str, fmt: str) -> None:
    result = read_pairs(FIXTURES / file_name)
    assert result.format == fmt
    assert result.errors == []
    assert len(result.pairs) == result.rows >= 2
    for pair in result.pairs:
        assert pair.prompt[-1]["role"] == "user"
        assert pair.chosen.strip() and pair.rejected.strip() and pair.chosen != pair.rejected
        assert pair.language in ("zh", "en")


def test_trl_standard_extra_columns_go_to_meta_and_system_column_is_the_system_prompt() -> None:
    pairs = read_pairs(FIXTURES / "trl.jsonl").pairs
    assert pairs[0].prompt == user_prompt("What is the boiling point of water at sea level?")
    assert pairs[0].meta == {"split": "train", "category": "helpfulness"}
    assert pairs[0].source == "trl"  # the file stem
    assert pairs[1].language == "zh" and pairs[1].meta["split"] == "test"
    assert pairs[2].prompt == user_prompt("Give me one tip for better sleep.", "You are a careful health assistant.")


def test_trl_conversational_keeps_system_and_earlier_turns() -> None:
    pair = read_pairs(FIXTURES / "trl_conversational.jsonl").pairs[0]
    assert pair.prompt == (
        msg("system", "You are a friendly math tutor."),
        msg("user", "What is 12 times 3?"),
        msg("assistant", "12 times 3 is 36."),
        msg("user", "And divided by 4?"),
    )
    assert (pair.chosen, pair.rejected) == ("36 divided by 4 is 9.", "It is 8.")


def test_implicit_prompt_is_the_shared_prefix_for_text_and_for_messages() -> None:
    text_pair, message_pair = read_pairs(FIXTURES / "trl_implicit.jsonl").pairs
    assert text_pair.prompt == user_prompt("Question: What colour is the sky on a clear day? Answer:")
    assert text_pair.chosen == "Blue, because air scatters blue light most."
    assert text_pair.rejected == "Green."
    assert message_pair.prompt == user_prompt("Capital of France?", "Answer briefly.")
    assert (message_pair.chosen, message_pair.rejected) == ("Paris.", "Lyon.")


def test_ultrafeedback_prompt_from_shared_messages_scores_in_meta_messages_copy_dropped() -> None:
    pair = read_pairs(FIXTURES / "ultrafeedback.jsonl").pairs[0]
    assert pair.prompt == user_prompt("Write a haiku about autumn.")
    assert pair.chosen.startswith("Crisp leaves") and pair.rejected == "Autumn is a season."
    assert pair.meta == {"prompt_id": "a1b2", "score_chosen": 9.0, "score_rejected": 3.5}


def test_ultrafeedback_answers_without_the_user_turn_use_the_prompt_column() -> None:
    row = {"prompt": "Hi?", "chosen": [msg("assistant", "Hello!")], "rejected": [msg("assistant", "Go away.")]}
    (pair,) = convert("ultrafeedback", row)
    assert pair.prompt == user_prompt("Hi?") and pair.chosen == "Hello!"


def test_alpaca_input_appended_after_newline_history_and_system() -> None:
    first, second = read_pairs(FIXTURES / "alpaca_ranking.json").pairs
    assert first.prompt == user_prompt(
        "Translate the sentence into French.\nGood morning, everyone.", "You are a professional translator."
    )
    assert [m["role"] for m in second.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert second.prompt[0]["content"] == "中国的首都是哪里？"
    assert second.prompt[-1]["content"] == "那它的面积有多大？"  # empty input: no newline added
    assert second.system == ""


def test_alpaca_old_output_list_first_two_or_all_ordered_pairs() -> None:
    result = read_pairs(FIXTURES / "alpaca_ranking_old.json")
    first, oaast = result.pairs
    assert first.chosen == "Red, yellow and blue (in traditional painting)."
    assert first.rejected == "Red, green and purple."
    assert oaast.prompt[0] == msg("user", "什么是光合作用？")
    assert oaast.prompt[-1] == msg("user", "能再解释一下吗？\n用简单的话")

    ranked = read_pairs(FIXTURES / "alpaca_ranking_old.json", all_ranked_pairs=True)
    # 3 answers → 3 ordered pairs; 4 answers → 6, of which (0, 3) repeats the same answer and is reported.
    assert len(ranked.pairs) == 3 + 5
    assert [(p.meta["rank_chosen"], p.meta["rank_rejected"]) for p in ranked.pairs[:3]] == [(0, 1), (0, 2), (1, 2)]
    assert len(ranked.errors) == 1
    assert ranked.errors[0].field == "output[3]" and "identical" in ranked.errors[0].reason


def test_alpaca_old_needs_two_answers() -> None:
    with pytest.raises(RowProblem, match="at least 2"):
        convert("alpaca-ranking-old", {"instruction": "Q", "input": "", "output": ["only one"]})


def test_sharegpt_roles_system_tag_and_turns() -> None:
    first, second = read_pairs(FIXTURES / "sharegpt_ranking.json").pairs
    assert [m["role"] for m in first.prompt] == ["system", "user", "assistant", "user"]
    assert first.chosen == "About ten to twelve minutes, then cool it in cold water."
    assert second.system == "请用中文回答。" and second.language == "zh"


def test_cvalues_types_in_meta() -> None:
    pair = read_pairs(FIXTURES / "cvalues.jsonl").pairs[0]
    assert pair.chosen.startswith("查询他人的家庭住址涉及隐私")
    assert pair.meta == {"pos_type": "拒绝&正向建议", "neg_type": "风险回复"}
    assert pair.language == "zh"


def test_pku_safer_versus_better() -> None:
    safer = read_pairs(FIXTURES / "pku_saferlhf.jsonl").pairs[0]
    better = read_pairs(FIXTURES / "pku_saferlhf.jsonl", pku_choice="better").pairs[0]
    assert safer.chosen.startswith("If you are locked out")  # safer_response_id = 1
    assert better.chosen.startswith("Insert a tension wrench")  # better_response_id = 0
    assert safer.rejected == better.chosen
    assert safer.meta["pku_choice"] == "safer" and better.meta["pku_choice"] == "better"
    assert safer.meta["is_response_1_safe"] is True


def test_pku_id_must_be_zero_or_one() -> None:
    row = {"prompt": "p", "response_0": "a", "response_1": "b", "safer_response_id": 2}
    with pytest.raises(RowProblem) as caught:
        convert("pku-saferlhf", row)
    assert caught.value.field == "safer_response_id"


def test_hh_rlhf_prompt_is_the_prefix_before_the_last_assistant_turn() -> None:
    pair = read_pairs(FIXTURES / "hh_rlhf.jsonl").pairs[0]
    assert pair.prompt == (
        msg("user", "What are some good vegetables to grow in a small balcony garden?"),
        msg("assistant", "Cherry tomatoes, lettuce and herbs such as basil do well in pots."),
        msg("user", "Which of those is easiest?"),
    )
    assert pair.chosen.startswith("Lettuce") and pair.rejected == "Pumpkins."


def test_hh_rlhf_transcripts_that_differ_earlier_are_reported() -> None:
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant: Goodbye!",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away\n\nHuman: Bye\n\nAssistant: Whatever.",
    }
    with pytest.raises(RowProblem, match="differs"):
        convert("hh-rlhf", row)


def test_zhihu_tsv_and_huozi_csv_with_multiline_cell() -> None:
    zhihu = read_pairs(FIXTURES / "zhihu.tsv").pairs[0]
    assert zhihu.meta == {"question_id": "10001", "upvotes_chosen": "523", "upvotes_rejected": "12"}
    huozi = read_pairs(FIXTURES / "huozi.csv").pairs
    assert huozi[0].meta == {"id": "h1"} and huozi[0].rejected == "长城是一座桥。"
    assert huozi[1].chosen == "春风拂过千山绿，\n细雨轻敲万户门。"


def test_canonical_rows_keep_source_language_meta() -> None:
    pair = read_pairs(FIXTURES / "canonical.jsonl").pairs[1]
    assert pair.source == "chat-votes" and pair.language == "zh"
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user"]


def test_mapping_with_system_column() -> None:
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad", "system": "sys"}
    result = read_pairs(FIXTURES / "mapping.jsonl", mapping=mapping)
    assert result.format == "mapping" and result.errors == []
    assert result.pairs[0].prompt == user_prompt("What is 2 + 2?", "Be exact.")
    assert result.pairs[0].meta == {"topic": "math"}
    assert result.pairs[1].prompt == user_prompt("法国的首都是哪里？")  # empty system column: none


def test_mapping_errors_name_the_problem() -> None:
    with pytest.raises(UserError, match="missing: rejected"):
        read_pairs(FIXTURES / "mapping.jsonl", mapping={"prompt": "question", "chosen": "good"})
    with pytest.raises(UserError, match="rejected=worse"):
        read_pairs(FIXTURES / "mapping.jsonl", mapping={"prompt": "question", "chosen": "good", "rejected": "worse"})


def test_detection_failure_names_columns_and_formats() -> None:
    with pytest.raises(UserError) as caught:
        read_pairs(FIXTURES / "mapping.jsonl")
    message = str(caught.value)
    assert "mapping.jsonl" in message
    assert "question, good, bad, sys, topic" in message
    for name in ("trl", "cvalues", "pku-saferlhf", "hh-rlhf", "alpaca-ranking", "sharegpt-ranking"):
        assert name in message


def test_detection_prefers_the_most_specific_format_and_the_majority() -> None:
    assert detect_format([{"prompt": "p", "chosen": "c", "rejected": "r", "question_id": 1}]) == "zhihu"
    assert detect_format([{"prompt": "p", "chosen": "c", "rejected": "r"}]) == "trl"
    rows = [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}] * 3 + [{"chosen": "a", "rejected": "b"}]
    assert detect_format(rows) == "alpaca-ranking"
    assert detect_format([{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}]) == (
        "hh-rlhf"
    )
    with pytest.raises(UserError, match="Columns found: none"):
        detect_format([])


def test_wrong_role_and_non_alternating_turns_are_row_problems() -> None:
    answers = {"chosen": [msg("assistant", "x")], "rejected": [msg("assistant", "y")]}
    row = {"prompt": [msg("user", "a"), msg("user", "b")], **answers}
    with pytest.raises(RowProblem, match="alternate"):
        convert("trl-conversational", row)
    row = {"conversations": [{"from": "robot", "value": "a"}], "chosen": {"from": "gpt", "value": "x"}, "rejected": {}}
    with pytest.raises(RowProblem, match="unsupported role"):
        convert("sharegpt-ranking", row)


def naive_language(text: str) -> str:
    """The definition detect_language implements, one character at a time."""
    cjk = latin = other = 0
    for ch in text[:4000]:
        code = ord(ch)
        if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            cjk += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
        elif ch.isalpha():
            other += 1
    letters = cjk + latin + other
    if letters == 0:
        return "other"
    if cjk * 4 >= latin and cjk >= max(1, other):
        return "zh"
    return "en" if latin >= 0.8 * letters else "other"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_detect_language_matches_its_definition(text: str) -> None:
    assert detect_language(text) == naive_language(text)


SCRIPT_PIECES = ["中文", "汉字", "English", "words", " ", "，", "Привет", "é", "䷀", "㐀", "丽", "²", "12", "\n"]


@given(st.lists(st.sampled_from(SCRIPT_PIECES), max_size=80))
def test_detect_language_matches_its_definition_on_mixed_scripts(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert detect_language(text) == naive_language(text)
