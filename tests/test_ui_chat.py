"""Chat tab handlers with real (tiny) models: a turn, both streams, implicit rewards, votes into the store."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from ctllm.settings import Settings
from ctllm.ui.chat_tab import CHAT_VOTES_COLLECTION, ChatHandlers, new_side, new_turn, stored_tally
from ctllm.ui.context import AppContext
from ctllm.ui.pairs_tab import new_view, standalone
from tests.conftest import MODEL_CACHE, REPO

TURN = (
    "turn",
    "left",
    "right",
    "text",
    "left_bot",
    "right_bot",
    "left_name",
    "right_name",
    "left_reward",
    "right_reward",
    "v_left",
    "v_right",
    "v_tie",
    "v_bothbad",
)


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir: Path, embedded_model_dir: Path) -> Path:
    """A second tiny model (another seed) standing in for a DPO-trained one."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(MODEL_CACHE / "tiny-llama-seed1", embedded_model_dir, seed=1)


@pytest.fixture
def ctx(tmp_path: Path, tiny_model_dir: Path) -> AppContext:
    settings = Settings(
        data_dir=tmp_path / "data", allowed_roots=(tmp_path / "data", MODEL_CACHE, REPO / "assets")
    ).ensure_dirs()
    context = AppContext(settings)
    yield context
    context.close()


def begin(
    h: ChatHandlers, text: str, sft: str, dpo: str, turn=None, left=None, right=None, blind=False, request=None
) -> dict:
    result = h.begin_turn(
        text, turn or new_turn(), left or new_side(), right or new_side(), sft, dpo, blind, 0.5, 1.0, 0.9, 8, 7, request
    )
    return dict(zip(TURN, result, strict=True))


def run_side(h: ChatHandlers, which: str, turn: dict, side: dict) -> tuple[list, dict, str]:
    """Drain one side's stream; returns (every chatbot value yielded, final side state, final reward line)."""
    bots, state, line = [], side, ""
    for bot, latest, reward in h.stream(which, turn, side):
        bots.append(bot)
        state = latest
        if isinstance(reward, str):
            line = reward
    return bots, state, line


def test_a_turn_streams_both_sides_scores_them_and_a_vote_becomes_a_pair(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sft, dpo = str(tiny_model_dir), str(policy_dir)
    out = begin(h, "What is 2 + 2?", sft, dpo)
    assert out["text"] == "" and out["left_bot"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert all(update["interactive"] is False for update in (out["v_left"], out["v_right"]))
    turn = out["turn"]
    assert turn["assign"] == {"left": "sft", "right": "dpo"} and turn["params"]["seed"] == 7

    left_bots, left, left_line = run_side(h, "left", turn, out["left"])
    right_bots, right, right_line = run_side(h, "right", turn, out["right"])
    assert left["done"] and right["done"] and left["answer"] and right["answer"]
    assert left_bots[-1][-1] == {"role": "assistant", "content": left_bots[-1][-1]["content"]}
    # Implicit rewards β·(log π_dpo − log π_sft): the two tiny models differ, so the rewards are not zero.
    assert left["reward"] != 0 and "implicit reward" in left_line and "β = 0.5" in right_line
    assert [u["interactive"] for u in h.after_stream(turn, left, right)] == [True] * 4
    assert [u["interactive"] for u in h.after_stream(turn, left, new_side())] == [False] * 4

    voted = h.vote("right", turn, left, right)
    assert "1 DPO" in voted[5] and "100%" in voted[5]
    assert [u["interactive"] for u in voted[6:]] == [False] * 4
    stored = list(ctx.store.iter_pairs(CHAT_VOTES_COLLECTION))
    assert len(stored) == 1
    pair = stored[0].pair
    assert pair.chosen == right["answer"] and pair.rejected == left["answer"]
    assert pair.prompt[-1]["content"] == "What is 2 + 2?"
    assert pair.meta["models"] == {"sft": sft, "dpo": dpo} and pair.meta["winner"] == "dpo"
    assert pair.meta["params"]["temperature"] == 1.0 and pair.meta["seeds"]["chosen"] == 7
    label = ctx.store.label_of(stored[0].id, "local")
    assert label.verdict == "second" and label.choice == "chosen"  # right was shown second and won
    with pytest.raises(gr.Error, match="already"):
        h.vote("left", voted[0], left, right)

    # The new pair is in the Pairs tab.
    pairs = standalone(ctx)
    browsed = pairs.browse(CHAT_VOTES_COLLECTION, "all", "all", "all", "id", "", "", 1, new_view(), None)
    assert browsed[pairs.ui.view].page_ids == (stored[0].id,)

    # The next turn continues the shared conversation with the voted-better answer.
    nxt = begin(h, "And 3 + 3?", sft, dpo, turn=voted[0], left=left, right=right)
    history = nxt["turn"]["history"]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"] == right["answer"]
    assert stored_tally(ctx, sft, dpo) == {"dpo": 1, "sft": 0, "tie": 0, "both bad": 0}


def test_votes_wait_for_both_answers(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = ChatHandlers(ctx)
    out = begin(h, "Hi", str(tiny_model_dir), str(tiny_model_dir))
    with pytest.raises(gr.Error, match="both answers"):
        h.vote("tie", out["turn"], out["left"], out["right"])
    with pytest.raises(gr.Error, match="message first"):
        h.vote("tie", new_turn(), new_side(), new_side())


def test_blind_mode_hides_names_and_rewards_until_the_vote(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sides = set()
    for _ in range(12):
        out = begin(h, "Hello", str(tiny_model_dir), str(policy_dir), blind=True)
        assert (out["left_name"], out["right_name"]) == ("**Model A**", "**Model B**")
        sides.add(out["turn"]["assign"]["left"])
    assert sides == {"sft", "dpo"}  # shuffled
    turn = out["turn"]
    _, left, left_line = run_side(h, "left", turn, out["left"])
    _, right, _ = run_side(h, "right", turn, out["right"])
    assert "after the vote" in left_line
    voted = h.vote("bothbad", turn, left, right)
    assert "SFT" in voted[1] + voted[2] and "DPO" in voted[1] + voted[2]
    assert "implicit reward" in voted[3]
    assert list(ctx.store.iter_pairs(CHAT_VOTES_COLLECTION))[0].pair.meta["winner"] == "both bad"


def test_regenerate_draws_a_new_seed_for_one_side(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = ChatHandlers(ctx)
    out = begin(h, "Hello", str(tiny_model_dir), str(tiny_model_dir))
    side, bot, reward, *votes = h.regenerate("right", out["turn"])
    assert side["answer"] == "" and side["seed"] != out["right"]["seed"]
    assert bot == [{"role": "user", "content": "Hello"}] and all(v["interactive"] is False for v in votes)


def test_model_errors_show_under_the_answer_and_do_not_block_votes_forever(
    ctx: AppContext, tiny_model_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    out = begin(h, "Hello", str(tiny_model_dir), "no-such-org/no-such-model")
    _, right, line = run_side(h, "right", out["turn"], out["right"])
    assert right["done"] and right["error"] and "⚠" in line
    # Both sides ended, so the buttons come back; the vote itself explains what is missing.
    _, left, _ = run_side(h, "left", out["turn"], out["left"])
    assert [u["interactive"] for u in h.after_stream(out["turn"], left, right)] == [True] * 4
    with pytest.raises(gr.Error, match="both answers"):
        h.vote("left", out["turn"], left, right)


def test_chat_needs_the_annotator_role(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", auth=("v:1",), annotators=("someone-else",)).ensure_dirs()
    h = ChatHandlers(AppContext(settings))
    with pytest.raises(gr.Error, match="annotator"):
        begin(h, "Hi", "embedded", "embedded", request=gr.Request(username="v"))


def test_rate_limit_per_user() -> None:
    from ctllm.ui.chat_tab import RateLimiter

    limiter = RateLimiter(per_minute=2)
    limiter.check("a", now=0.0)
    limiter.check("a", now=1.0)
    limiter.check("b", now=1.0)  # another user has their own budget
    with pytest.raises(gr.Error, match="Rate limit"):
        limiter.check("a", now=30.0)
    limiter.check("a", now=60.5)  # the first one left the window


def test_annotators_chat_only_with_the_served_models(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", auth=("ann:1", "boss:2"), admins=("boss",)).ensure_dirs()
    h = ChatHandlers(AppContext(settings))
    with pytest.raises(gr.Error, match="only admins"):
        begin(h, "Hi", "embedded", "ct-llm-sft", request=gr.Request(username="ann"))
    out = begin(h, "Hi", "embedded", "ct-llm-sft", request=gr.Request(username="boss"))
    assert out["turn"]["specs"]["dpo"] == "ct-llm-sft"
    assert begin(h, "Hi", "embedded", "embedded", request=gr.Request(username="ann"))["turn"]["user"] == "Hi"
