"""Chat tab handlers with real (tiny) models: a turn, both streams, implicit rewards, votes into the store, each
side's own conversation, and the model pickers following runs that finish while the page is open."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import gradio as gr
import pytest

from ctllm.settings import Settings
from ctllm.ui.chat_tab import CHAT_VOTES_COLLECTION, ChatHandlers, Side, Turn, TurnSettings, stored_tally
from ctllm.ui.context import AppContext
from ctllm.ui.i18n import remember_language
from ctllm.ui.pairs_tab import PairFilters, new_view, standalone
from ctllm.ui.render import inert_inline, inert_markdown
from tests.conftest import MODEL_CACHE, REPO


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


def send(
    h: ChatHandlers, text: str, sft: str, dpo: str, turn=None, left=None, right=None, blind=False, request=None
) -> list[dict]:
    """Every update of one send: the echo first, then the streamed answers, then the scores."""
    form = TurnSettings(sft, dpo, blind, 0.5, 1.0, 0.9, 8, 7)
    updates = h.send(text, turn or Turn(), left or Side(), right or Side(), form, request)
    return list(updates)


def merged(updates: list[dict]) -> dict:
    """What the page shows after all ``updates``."""
    out: dict = {}
    for update in updates:
        out.update(update)
    return out


def assistant_texts(bot: list[dict]) -> list[str]:
    return [message["content"] for message in bot if message["role"] == "assistant"]


def test_a_turn_streams_both_sides_scores_them_and_a_vote_becomes_a_pair(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sft, dpo = str(tiny_model_dir), str(policy_dir)
    updates = send(h, "What is 2 + 2?", sft, dpo)
    echo = updates[0]  # shown before any generation: the message in both panes, the input cleared
    assert echo["text"] == "" and echo["left_bot"] == echo["right_bot"] == [
        {"role": "user", "content": "What is 2 + 2?"}
    ]
    assert all(echo[key]["interactive"] is False for key in ("vote_left", "vote_right", "vote_tie", "vote_bothbad"))
    out = merged(updates)
    turn, left, right = out["turn"], out["left"], out["right"]
    assert turn.assign == {"left": "sft", "right": "dpo"} and turn.sampling.seed == 7
    assert left.done and right.done and left.answer and right.answer
    assert out["left_bot"][-1] == {"role": "assistant", "content": inert_markdown(left.answer)}
    # Implicit rewards β·(log π_dpo − log π_sft): the two tiny models differ, so the rewards are not zero.
    assert left.reward != 0 and "implicit reward" in out["left_reward"] and "β = 0.5" in out["right_reward"]
    assert all(out[key]["interactive"] is True for key in ("vote_left", "vote_right", "vote_tie", "vote_bothbad"))

    voted = h.vote("right", turn, left, right)
    assert "1 DPO" in voted["tally"] and "100%" in voted["tally"]
    assert voted["vote_left"]["interactive"] is False
    stored = list(ctx.store.iter_pairs(CHAT_VOTES_COLLECTION))
    assert len(stored) == 1
    pair = stored[0].pair
    assert pair.chosen == right.answer and pair.rejected == left.answer
    assert pair.prompt[-1]["content"] == "What is 2 + 2?" and "rejected_prompt" not in pair.meta
    assert pair.meta["models"] == {"sft": sft, "dpo": dpo} and pair.meta["winner"] == "dpo"
    assert pair.meta["params"]["temperature"] == 1.0 and pair.meta["seeds"]["chosen"] == 7
    label = ctx.store.label_of(stored[0].id, "local")
    assert label.verdict == "second" and label.choice == "chosen"  # right was shown second and won
    with pytest.raises(gr.Error, match="already"):
        h.vote("left", voted["turn"], left, right)

    # The new pair is in the Pairs tab.
    pairs = standalone(ctx)
    browsed = pairs.browse(PairFilters(CHAT_VOTES_COLLECTION, label_state="all"), 1, new_view(), None)
    assert browsed[pairs.ui.view].page_ids == (stored[0].id,)
    assert stored_tally(ctx, sft, dpo) == {"dpo": 1, "sft": 0, "tie": 0, "both bad": 0}


def test_each_side_keeps_its_own_conversation_and_no_pane_shows_the_other_models_words(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sft, dpo = str(tiny_model_dir), str(policy_dir)
    written = {"left": set(), "right": set()}  # every answer text each side's model produced
    shown = {"left": [], "right": []}  # every assistant message each pane ever displayed

    def record(updates: list[dict]) -> dict:
        for update in updates:
            for which in ("left", "right"):
                if which in update:
                    written[which].add(inert_markdown(update[which].answer))
                if f"{which}_bot" in update:
                    shown[which] += assistant_texts(update[f"{which}_bot"])
        return merged(updates)

    first = record(send(h, "Tell me a story.", sft, dpo))
    assert first["left"].answer != first["right"].answer
    voted = h.vote("bothbad", first["turn"], first["left"], first["right"])  # no winner: nobody's answer is shared
    second = record(send(h, "Go on.", sft, dpo, voted["turn"], first["left"], first["right"]))
    for which in ("left", "right"):
        history = second[which].history
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert history[1]["content"] == first[which].answer  # each model sees its own earlier answer
        assert assistant_texts(second[f"{which}_bot"]) == [
            inert_markdown(first[which].answer),
            inert_markdown(second[which].answer),
        ]
    for which, other in (("left", "right"), ("right", "left")):
        assert set(shown[which]) <= written[which]
        assert not set(shown[which]) & (written[other] - written[which])

    # A vote on the second turn keeps each side's own conversation: the rejected one is recorded in the meta.
    h.vote("left", second["turn"], second["left"], second["right"])
    pair = [s.pair for s in ctx.store.iter_pairs(CHAT_VOTES_COLLECTION) if len(s.pair.prompt) == 3][0]
    assert pair.prompt[1]["content"] == first["left"].answer
    assert pair.meta["rejected_prompt"][1]["content"] == first["right"].answer


def test_changing_a_model_starts_a_new_conversation(ctx: AppContext, tiny_model_dir: Path, policy_dir: Path) -> None:
    h = ChatHandlers(ctx)
    sft, dpo = str(tiny_model_dir), str(policy_dir)
    first = merged(send(h, "Hello", sft, dpo))
    second = merged(send(h, "Again", sft, sft, first["turn"], first["left"], first["right"]))
    assert second["left"].history == second["right"].history == ()
    assert second["left_bot"][0] == {"role": "user", "content": "Again"}


def test_votes_wait_for_both_answers(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = ChatHandlers(ctx)
    turn, sides = h.begin_turn(
        "Hi", Turn(), Side(), Side(), TurnSettings(str(tiny_model_dir), str(tiny_model_dir), False, 0.1, 1.0, 0.9, 8, 7)
    )
    with pytest.raises(gr.Error, match="both answers"):
        h.vote("tie", turn, sides["left"], sides["right"])
    with pytest.raises(gr.Error, match="message first"):
        h.vote("tie", Turn(), Side(), Side())


@pytest.mark.parametrize("batch", [True, None], ids=["one batch", "the CPU's default: a thread each"])
def test_same_model_on_both_sides_answers_like_alone(ctx: AppContext, tiny_model_dir: Path, batch: bool | None) -> None:
    """Both sides on one loaded model with the same seed: as one batch of two (each row sampling as it would alone)
    or, the default on a CPU, in a thread each, the answers are those of one side alone."""
    from ctllm.models.generate import ChatJob, GenerationParams, stream_chat, stream_chats
    from ctllm.models.loading import get_model

    loaded = get_model(str(tiny_model_dir), ctx.settings)
    messages = [{"role": "user", "content": "Hello there"}]
    params = GenerationParams(temperature=0, max_new_tokens=12)
    alone = list(stream_chat(loaded, messages, params))[-1]
    steps = list(stream_chats([ChatJob(loaded, messages, params), ChatJob(loaded, messages, params)], batch=batch))
    assert steps[-1] == (alone, alone)
    for before, after in zip(steps, steps[1:], strict=False):  # answers only grow
        assert all(b2.startswith(b1) for b1, b2 in zip(before, after, strict=True))


def test_blind_mode_hides_names_and_rewards_until_the_vote(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sides = set()
    form = TurnSettings(str(tiny_model_dir), str(policy_dir), True, 0.5, 1.0, 0.9, 8, 7)
    for _ in range(12):
        turn, _ = h.begin_turn("Hello", Turn(), Side(), Side(), form)
        sides.add(turn.assign["left"])
    assert sides == {"sft", "dpo"}  # shuffled
    out = merged(send(h, "Hello", str(tiny_model_dir), str(policy_dir), blind=True))
    assert (out["left_name"], out["right_name"]) == ("**Model A**", "**Model B**")
    assert "after the vote" in out["left_reward"]
    voted = h.vote("bothbad", out["turn"], out["left"], out["right"])
    assert "SFT" in voted["left_name"] + voted["right_name"] and "DPO" in voted["left_name"] + voted["right_name"]
    assert "implicit reward" in voted["left_reward"]
    assert list(ctx.store.iter_pairs(CHAT_VOTES_COLLECTION))[0].pair.meta["winner"] == "both bad"


def test_regenerate_draws_a_new_seed_for_one_side(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = ChatHandlers(ctx)
    out = merged(send(h, "Hello", str(tiny_model_dir), str(tiny_model_dir)))
    updates = list(h.regenerate("right", out["turn"], out["left"], out["right"]))
    assert updates[0]["right"].answer == "" and updates[0]["right"].seed != out["right"].seed
    assert updates[0]["right_bot"] == [{"role": "user", "content": "Hello"}] and "left_bot" not in updates[0]
    assert updates[0]["vote_left"]["interactive"] is False
    again = merged(updates)
    assert again["right"].done and again["vote_left"]["interactive"] is True


def test_model_errors_show_under_the_answer_and_do_not_block_votes_forever(
    ctx: AppContext, tiny_model_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    out = merged(send(h, "Hello", str(tiny_model_dir), "no-such-org/no-such-model"))
    assert out["right"].done and out["right"].error and "⚠" in out["right_reward"]
    assert out["left"].done and out["left"].answer
    # Both sides ended, so the buttons come back; the vote itself explains what is missing.
    assert out["vote_left"]["interactive"] is True
    with pytest.raises(gr.Error, match="both answers"):
        h.vote("left", out["turn"], out["left"], out["right"])


def finish_a_run(ctx: AppContext, name: str, model_dir: Path) -> None:
    """A finished run on disk, as the Train tab, the CLI or another user's job leaves it."""
    final = ctx.settings.runs_dir / name / "final"
    final.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.is_file():
            os.link(item, final / item.name)
    (final.parent / "status.json").write_text(json.dumps({"state": "finished"}), encoding="utf-8")


def test_the_pickers_follow_a_run_that_finishes_while_the_page_is_open(ctx: AppContext, tiny_model_dir: Path) -> None:
    h = ChatHandlers(ctx)
    loaded = h.load()
    sft = ctx.settings.sft_model
    assert loaded["dpo_model"]["value"] == sft
    assert "same model" in loaded["note"] and "No finished training run" in loaded["note"]
    seen = loaded["runs_seen"]
    assert h.poll_models(sft, sft, seen) == {}  # nothing changed: the timer sends nothing

    finish_a_run(ctx, "fresh", tiny_model_dir)
    polled = h.poll_models(sft, sft, seen)
    assert polled["dpo_model"]["value"] == "latest-run"  # the DPO side was still the SFT model: it switches
    assert "latest-run" in [spec for _, spec in polled["dpo_model"]["choices"]]
    assert polled["note"] == "" and polled["runs_seen"] != seen
    # Picked by hand, the note is recomputed from the selection: never the stale "no run yet".
    assert h.models_changed(sft, "run:fresh")["note"] == ""
    same = h.models_changed("run:fresh", "latest-run")["note"]
    assert "same model" in same and "No finished" not in same
    # A DPO side chosen by hand stays when another run finishes.
    assert h.refresh_models(sft, "ct-llm-sft")["dpo_model"]["value"] == "ct-llm-sft"


def test_chat_needs_the_annotator_role(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", auth=("v:1",), annotators=("someone-else",)).ensure_dirs()
    h = ChatHandlers(AppContext(settings))
    with pytest.raises(gr.Error, match="annotator"):
        send(h, "Hi", "embedded", "embedded", request=gr.Request(username="v"))


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
    other = TurnSettings("embedded", "ct-llm-sft", True, 0.5, 1.0, 0.9, 8, 7)
    same = TurnSettings("embedded", "embedded")
    with pytest.raises(gr.Error, match="only admins"):
        h.begin_turn("Hi", Turn(), Side(), Side(), other, gr.Request(username="ann"))
    turn, _ = h.begin_turn("Hi", Turn(), Side(), Side(), other, gr.Request(username="boss"))
    assert turn.dpo_spec == "ct-llm-sft"
    turn, _ = h.begin_turn("Hi", Turn(), Side(), Side(), same, gr.Request(username="ann"))
    assert turn.user == "Hi"


def test_closing_the_stream_early_stops_generation(ctx: AppContext, tiny_model_dir: Path) -> None:
    """A cancelled turn (the page closed, a new message) leaves no generation running in the background."""
    import threading

    from ctllm.models.generate import ChatJob, GenerationParams, stream_chats
    from ctllm.models.loading import get_model

    loaded = get_model(str(tiny_model_dir), ctx.settings)
    params = GenerationParams(temperature=1.0, max_new_tokens=500, seed=3)
    stream = stream_chats([ChatJob(loaded, [{"role": "user", "content": "Hi"}], params)])
    next(stream)
    stream.close()
    assert not [thread for thread in threading.enumerate() if thread.name == "generate:chat"]


# Words a Chinese page may keep in Latin letters: the model roles and the reward formula's subscripts.
ALLOWED_LATIN = {"SFT", "DPO", "log", "sft", "dpo"}


def english_words(text: str, names: tuple[str, ...] = ()) -> set[str]:
    """Latin-letter words of ``text`` outside the allow-list, once the data in it (model and run names) is cut."""
    for name in names:
        text = text.replace(inert_inline(name), " ").replace(name, " ")
    return set(re.findall(r"[A-Za-z]{2,}", text)) - ALLOWED_LATIN


def test_what_the_chat_handlers_write_is_chinese_after_the_switch(
    ctx: AppContext, tiny_model_dir: Path, policy_dir: Path
) -> None:
    h = ChatHandlers(ctx)
    sft, dpo = str(tiny_model_dir), str(policy_dir)
    names = (sft, dpo, ctx.settings.sft_model, "run:fresh", "fresh", CHAT_VOTES_COLLECTION)
    page = gr.Request(session_hash="a-page-switched-to-chinese")
    remember_language(page, "zh")  # what the language radio's handler records
    written: dict[str, str] = {}
    written["note, no run yet"] = h.load(page)["note"]
    updates = send(h, "你好", sft, dpo, blind=True, request=page)
    out = merged(updates)
    written["blind names"] = out["left_name"] + " " + out["right_name"]
    written["blind reward"] = out["left_reward"]
    written["scoring"] = next(u["left_reward"] for u in updates[:-1] if u.get("left_reward"))
    voted = h.vote("tie", out["turn"], out["left"], out["right"], page)
    written["reward"], written["tally and note"] = voted["left_reward"], voted["tally"]
    for name, call in {
        "empty message": lambda: h.begin_turn(" ", Turn(), Side(), Side(), TurnSettings(sft, dpo), page),
        "no models": lambda: h.begin_turn("你好", Turn(), Side(), Side(), TurnSettings("", dpo), page),
        "vote first": lambda: h.vote("tie", Turn(), Side(), Side(), page),
        "regenerate first": lambda: list(h.regenerate("left", Turn(), Side(), Side(), page)),
    }.items():
        with pytest.raises(gr.Error) as error:
            call()
        written[name] = error.value.message
    finish_a_run(ctx, "fresh", tiny_model_dir)
    written["choices"] = h.refresh_models(sft, sft, page)["dpo_model"]["choices"][0][0]
    written["note, same run"] = h.models_changed("run:fresh", "latest-run", page)["note"]
    assert "模型 A" in written["blind names"] and "隐式奖励" in written["reward"]
    assert "胜率" in written["tally and note"] and "已保存" in written["tally and note"]
    assert "最新完成的运行" in written["choices"] and "同一个模型" in written["note, same run"]
    assert all(written.values()), written
    assert {name: english_words(text, names) for name, text in written.items()} == {name: set() for name in written}
