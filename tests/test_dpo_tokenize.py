"""Data to batches: tokenization boundaries on the embedded SmolLM2 tokenizer (ChatML; BOS = <|im_start|>,
EOS = <|im_end|>), collation, length-grouped batching, Parquet snapshots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ctllm.dpo.batching import collate, length_grouped_batches
from ctllm.dpo.snapshot import pairs_hash, read_snapshot, snapshot_hash, write_snapshot
from ctllm.dpo.tokenize import TokenizedPair, render_prompt, tokenize_pairs
from ctllm.errors import UserError
from ctllm.pairs.schema import Message, Pair, user_prompt


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir: Path):
    return AutoTokenizer.from_pretrained(embedded_model_dir)


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def check_split(tokenizer, pair: Pair, item: TokenizedPair) -> None:
    """The split reproduces the texts: templated prompt, then each completion followed by EOS exactly once."""
    eos_id = tokenizer.eos_token_id
    assert decode(tokenizer, item.prompt_ids) == render_prompt(tokenizer, pair.prompt)
    for text, ids in ((pair.chosen, item.chosen_ids), (pair.rejected, item.rejected_ids)):
        assert decode(tokenizer, ids) == text + tokenizer.eos_token
        assert ids[-1] == eos_id and ids.count(eos_id) == 1
    assert item.prompt_ids.count(tokenizer.bos_token_id) >= 1
    assert item.prompt_ids[:2] != [tokenizer.bos_token_id] * 2


def test_single_turn_split(tokenizer):
    pair = Pair(user_prompt("What is the capital of France?"), "Paris.", "I will not tell you.")
    result = tokenize_pairs(tokenizer, [pair], max_length=256)
    assert (result.dropped, result.truncated, result.boundary_fallbacks) == (0, 0, 0)
    [item] = result.items
    check_split(tokenizer, pair, item)
    assert decode(tokenizer, item.prompt_ids).endswith("<|im_start|>assistant\n")
    # The completion is the suffix of tokenizing prompt text + completion + EOS jointly.
    joint = tokenizer(render_prompt(tokenizer, pair.prompt) + "Paris.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert item.prompt_ids + item.chosen_ids == joint


def test_multi_turn_with_system_prompt(tokenizer):
    prompt = (
        Message(role="system", content="You are terse."),
        Message(role="user", content="Name a colour."),
        Message(role="assistant", content="Blue."),
        Message(role="user", content="Another one?"),
    )
    pair = Pair(prompt, "Red.", "No.")
    [item] = tokenize_pairs(tokenizer, [pair], max_length=256).items
    check_split(tokenizer, pair, item)
    text = decode(tokenizer, item.prompt_ids)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert "You are a helpful AI assistant" not in text  # the template's default system prompt is replaced
    assert "<|im_start|>assistant\nBlue.<|im_end|>\n<|im_start|>user\nAnother one?" in text


def test_chinese_text_round_trips(tokenizer):
    pair = Pair(user_prompt("请介绍一下北京。"), "北京是中国的首都。", "我不知道。")
    [item] = tokenize_pairs(tokenizer, [pair], max_length=256).items
    check_split(tokenizer, pair, item)


def test_completion_already_ending_with_eos_gets_no_second_one(tokenizer):
    pair = Pair(user_prompt("Hi"), "Hello!<|im_end|>", "Bye")
    [item] = tokenize_pairs(tokenizer, [pair], max_length=256).items
    assert item.chosen_ids.count(tokenizer.eos_token_id) == 1
    assert decode(tokenizer, item.chosen_ids) == "Hello!<|im_end|>"


def test_boundary_merge_falls_back_to_separate_completion(tokenizer):
    # The prompt ends in "\n"; a completion starting with newlines merges with it into one token.
    pair = Pair(user_prompt("List:"), "\n\n1. a", "x")
    prompt_text = render_prompt(tokenizer, pair.prompt)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt_text + pair.chosen + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert joint[: len(prompt_ids)] != prompt_ids  # the merge this test is about really happens
    result = tokenize_pairs(tokenizer, [pair], max_length=256)
    assert result.boundary_fallbacks == 1
    [item] = result.items
    assert item.prompt_ids == prompt_ids  # the prompt the model sees at inference is kept intact
    check_split(tokenizer, pair, item)


def test_template_that_adds_bos_twice_is_undoubled(tokenizer, embedded_model_dir):
    doubling = AutoTokenizer.from_pretrained(embedded_model_dir)
    doubling.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    pair = Pair(user_prompt("Hi"), "Hello", "Go away")
    assert render_prompt(doubling, pair.prompt).startswith("<|im_start|><|im_start|>")
    [item] = tokenize_pairs(doubling, [pair], max_length=256).items
    [plain] = tokenize_pairs(tokenizer, [pair], max_length=256).items
    assert item.prompt_ids == plain.prompt_ids
    assert item.chosen_ids == plain.chosen_ids


def test_truncation_keeps_the_start_and_counts(tokenizer):
    pairs = [
        Pair(user_prompt("Tell me a story."), "Once upon a time " * 40, "No."),
        Pair(user_prompt("Hi"), "Hello", "Bye"),
    ]
    full = tokenize_pairs(tokenizer, pairs, max_length=4096).items
    n_prompt = len(full[0].prompt_ids)
    max_length = n_prompt + 20
    result = tokenize_pairs(tokenizer, pairs, max_length=max_length)
    assert (result.dropped, result.truncated) == (0, 1)
    long, short = result.items
    assert len(long.prompt_ids) + len(long.chosen_ids) == max_length
    assert long.chosen_ids == full[0].chosen_ids[:20]
    assert long.rejected_ids == full[0].rejected_ids  # the short side is untouched
    assert tokenizer.eos_token_id not in long.chosen_ids  # truncated: its EOS is gone
    assert short == full[1]


def test_pairs_whose_prompt_fills_max_length_are_dropped_and_counted(tokenizer):
    pairs = [
        Pair(user_prompt("short"), "a", "b"),
        Pair(user_prompt("long " * 300), "a", "b"),
        Pair(user_prompt("also short"), "c", "d"),
    ]
    n_prompt_long = len(tokenize_pairs(tokenizer, pairs[1:2], max_length=4096).items[0].prompt_ids)
    result = tokenize_pairs(tokenizer, pairs, max_length=n_prompt_long)  # prompt == max_length: no room left
    assert result.dropped == 1 and result.dropped_indices == [1]
    assert [item.index for item in result.items] == [0, 2]
    assert "1 dropped" in result.summary()
    # One token more leaves exactly one completion token: kept, and counted as truncated.
    result = tokenize_pairs(tokenizer, pairs, max_length=n_prompt_long + 1)
    assert result.dropped == 0 and result.truncated == 1
    assert len(result.items[1].chosen_ids) == 1


def test_max_prompt_length_keeps_the_end_of_the_prompt(tokenizer):
    pair = Pair(user_prompt("word " * 100), "yes", "no")
    result = tokenize_pairs(tokenizer, [pair], max_length=512, max_prompt_length=16)
    [item] = result.items
    assert len(item.prompt_ids) == 16 and result.truncated == 1
    assert decode(tokenizer, item.prompt_ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_tokenizer_without_chat_template_gets_the_chatml_fallback(tokenizer, embedded_model_dir):
    bare = AutoTokenizer.from_pretrained(embedded_model_dir)
    bare.chat_template = None  # as CT-LLM's tokenizer ships
    pair = Pair(user_prompt("Hi"), "Hello", "Bye")
    [item] = tokenize_pairs(bare, [pair], max_length=64).items
    assert decode(bare, item.prompt_ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert decode(bare, item.chosen_ids) == "Hello<|im_end|>"


# ---- batches ---------------------------------------------------------------------------------------------------


def item(index: int, prompt: list[int], chosen: list[int], rejected: list[int]) -> TokenizedPair:
    return TokenizedPair(index, prompt, chosen, rejected)


def test_collate_rows_and_masks():
    items = [item(7, [1, 10, 11], [20, 2], [30, 31, 32, 2]), item(3, [1, 12], [21, 22, 2], [33, 2])]
    batch = collate(items, pad_id=0)
    assert batch["input_ids"].tolist() == [
        [1, 10, 11, 20, 2, 0, 0],  # chosen rows first
        [1, 12, 21, 22, 2, 0, 0],
        [1, 10, 11, 30, 31, 32, 2],  # then rejected rows, same pair order
        [1, 12, 33, 2, 0, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
    ]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 0, 0, 0],
    ]
    assert batch["index"].tolist() == [7, 3]
    assert collate(items, pad_id=0, pad_to_multiple_of=4)["input_ids"].shape == (4, 8)


def synthetic_items(n: int, seed: int = 0) -> list[TokenizedPair]:
    rng = random.Random(seed)
    return [item(i, [1] * rng.randint(5, 60), [5] * rng.randint(1, 80), [6] * rng.randint(1, 80)) for i in range(n)]


def padded_cells(items: list[TokenizedPair], batches: list[list[int]]) -> int:
    return sum(2 * len(b) * max(items[i].length for i in b) for b in batches)


def test_length_grouped_batches_are_deterministic_complete_and_tight():
    items = synthetic_items(203)
    first = length_grouped_batches(items, batch_size=4, seed=11, epoch=0)
    assert first == length_grouped_batches(items, batch_size=4, seed=11, epoch=0)
    assert first != length_grouped_batches(items, batch_size=4, seed=11, epoch=1)
    assert first != length_grouped_batches(items, batch_size=4, seed=12, epoch=0)
    assert sorted(i for b in first for i in b) == list(range(203))
    assert [len(b) for b in first[:-1]] == [4] * 50 and len(first[-1]) == 3  # the short batch comes last
    rng = random.Random(0)
    order = list(range(203))
    rng.shuffle(order)
    unsorted = [order[i : i + 4] for i in range(0, 203, 4)]
    real = sum(len(it.prompt_ids) * 2 + len(it.chosen_ids) + len(it.rejected_ids) for it in items)
    grouped_waste = padded_cells(items, first) - real
    random_waste = padded_cells(items, unsorted) - real
    assert grouped_waste < 0.6 * random_waste


def test_unshuffled_batches_are_sorted_longest_first():
    items = synthetic_items(10, seed=1)
    batches = length_grouped_batches(items, batch_size=3, seed=0, epoch=0, shuffle=False)
    lengths = [items[i].length for b in batches for i in b]
    assert lengths == sorted(lengths, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 3, 1]


# ---- snapshots -------------------------------------------------------------------------------------------------

SNAPSHOT_PAIRS = [
    Pair(user_prompt("你好", "sys"), "hello", "bye", source="manual", meta={"id": 3, "tags": ["a", "b"]}),
    Pair(
        (
            Message(role="user", content="q1"),
            Message(role="assistant", content="a1"),
            Message(role="user", content="q2"),
        ),
        "yes",
        "no",
        source="hh-rlhf",
    ),
]


def test_snapshot_round_trip_and_hash(tmp_path):
    path = tmp_path / "snap" / "pairs.parquet"
    digest = write_snapshot(SNAPSHOT_PAIRS, path)
    assert digest == pairs_hash(SNAPSHOT_PAIRS) == snapshot_hash(path)
    back = read_snapshot(path)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in SNAPSHOT_PAIRS]
    assert pairs_hash(back) == digest
    assert write_snapshot(back, tmp_path / "again.parquet") == digest


def test_pairs_hash_is_stable_and_order_sensitive():
    # Pinned: a change here means every recorded run hash and reference cache key changes meaning.
    assert pairs_hash(SNAPSHOT_PAIRS[:1]) == "49db415a23acc80bd65ce7b81b5f8ebbf015bec3d5ad807391d28f44b4373059"
    assert pairs_hash(SNAPSHOT_PAIRS) != pairs_hash(SNAPSHOT_PAIRS[::-1])
    relabelled = [Pair(p.prompt, p.chosen, p.rejected, "other-source", p.language, {"note": 1}) for p in SNAPSHOT_PAIRS]
    assert pairs_hash(relabelled) == pairs_hash(SNAPSHOT_PAIRS)  # metadata does not change the training data
    assert pairs_hash([SNAPSHOT_PAIRS[0].swapped(), SNAPSHOT_PAIRS[1]]) != pairs_hash(SNAPSHOT_PAIRS)


def test_reading_a_non_snapshot_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match="bad.parquet"):
        read_snapshot(bad)
