"""KV caches kept between chat turns: a turn continued from its previous turn's cache answers exactly as a full
re-encoding does (greedy, token for token), prefilling only the new tokens; a prompt that does not start with the
kept tokens falls back safely; caches go with their conversation, their model, and the Chat tab's Clear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctllm.models import embedded
from ctllm.models.generate import ChatJob, GenerationParams, stream_chats
from ctllm.models.kv_reuse import KeptCaches, common_prefix
from ctllm.models.loading import LoadedModel, get_model
from ctllm.models.templates import apply_chat_template
from ctllm.pairs.schema import Message
from ctllm.settings import Settings

GREEDY = GenerationParams(temperature=0, max_new_tokens=12)
SAMPLED = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=11)
FIRST = "Name three colors."
SECOND = "Now name three animals."


@pytest.fixture(scope="module")
def smol(embedded_model_dir: Path, tmp_path_factory) -> LoadedModel:
    settings = Settings(data_dir=tmp_path_factory.mktemp("smol-cache") / "data").ensure_dirs()
    embedded.embedded_folder(settings.models_dir).symlink_to(embedded_model_dir, target_is_directory=True)
    return get_model("embedded", settings)


class Prefills:
    """Records how many tokens the model's first forward of each generation encodes (its prefill)."""

    def __init__(self, loaded: LoadedModel):
        self.lengths: list[int] = []
        self._handle = loaded.model.register_forward_pre_hook(self._seen, with_kwargs=True)
        self._fresh = True

    def _seen(self, module, args, kwargs) -> None:
        if self._fresh:
            self.lengths.append(int(kwargs["input_ids"].shape[1]))
            self._fresh = False

    def next(self) -> None:
        self._fresh = True

    def close(self) -> None:
        self._handle.remove()


def answers(jobs: list[ChatJob], store: KeptCaches) -> tuple[str, ...]:
    """The final answers; chats on one model as one batch (as on a GPU), so its rows' kept caches are tested."""
    return list(stream_chats(jobs, store, batch=True))[-1]


def second_turn(first_answer: str) -> list[Message]:
    return [
        Message(role="user", content=FIRST),
        Message(role="assistant", content=first_answer),
        Message(role="user", content=SECOND),
    ]


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_continued_turn_answers_as_a_full_prefill_does_and_encodes_only_the_new_tokens(
    smol: LoadedModel, params: GenerationParams
) -> None:
    store = KeptCaches()
    first = [Message(role="user", content=FIRST)]
    (answer,) = answers([ChatJob(smol, first, params, cache_key=("chat", "left"))], store)
    assert ("chat", "left") in store
    messages = second_turn(answer)
    (plain,) = answers([ChatJob(smol, messages, params)], KeptCaches())
    prompt = apply_chat_template(smol.tokenizer, messages)
    prefills = Prefills(smol)
    try:
        (continued,) = answers([ChatJob(smol, messages, params, cache_key=("chat", "left"))], store)
    finally:
        prefills.close()
    assert continued == plain and continued
    reused = len(prompt) - prefills.lengths[0]
    assert reused >= len(apply_chat_template(smol.tokenizer, first))  # at least the whole first prompt was cached
    assert prefills.lengths[0] < len(prompt) // 2


def test_both_sides_on_one_model_continue_from_their_own_rows_of_the_batch(smol: LoadedModel) -> None:
    store = KeptCaches()
    params = [SAMPLED, GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=12)]
    first = [Message(role="user", content=FIRST)]
    keys = [("chat", "left"), ("chat", "right")]
    turn1 = answers([ChatJob(smol, first, p, cache_key=k) for p, k in zip(params, keys, strict=True)], store)
    assert turn1[0] != turn1[1] and all(k in store for k in keys)  # one batch of two, kept as two caches
    conversations = [second_turn(a) for a in turn1]
    plain = answers([ChatJob(smol, m, p) for m, p in zip(conversations, params, strict=True)], KeptCaches())
    continued = answers(
        [ChatJob(smol, m, p, cache_key=k) for m, p, k in zip(conversations, params, keys, strict=True)], store
    )
    assert continued == plain


def test_a_prompt_that_does_not_start_with_the_kept_tokens_falls_back(smol: LoadedModel) -> None:
    store = KeptCaches()
    key = ("chat", "left")
    (answer,) = answers([ChatJob(smol, [Message(role="user", content=FIRST)], GREEDY, cache_key=key)], store)
    other = [Message(role="system", content="Answer briefly."), *second_turn(answer)]  # differs from the start
    prompt = apply_chat_template(smol.tokenizer, other)
    (plain,) = answers([ChatJob(smol, other, GREEDY)], KeptCaches())
    kept = store._entries[key].ids
    prefills = Prefills(smol)
    try:
        (continued,) = answers([ChatJob(smol, other, GREEDY, cache_key=key)], store)
    finally:
        prefills.close()
    assert continued == plain
    shared = common_prefix(kept, prompt)  # the chat template's opening tokens: the cache was cropped to them
    assert 0 < shared < len(kept) and prefills.lengths[0] == len(prompt) - shared


def test_take_crops_to_the_common_prefix_and_never_hands_out_one_cache_twice(smol: LoadedModel) -> None:
    store = KeptCaches()
    key = ("chat", "left")
    answers([ChatJob(smol, [Message(role="user", content=FIRST)], GREEDY, cache_key=key)], store)
    kept = list(store._entries[key].ids)
    changed = kept[:5] + [kept[5] + 1] + kept[6:]
    cache, n = store.take(smol.model, key, changed)
    assert n == 5 and cache.get_seq_length() == 5
    assert store.take(smol.model, key, changed) == (None, 0)  # taken: gone until the generation keeps it again
    store.keep(smol.model, key, kept[:5], cache)
    assert store.take(smol.model, key, kept[:5])[1] == 4  # the whole prompt cached: the last token is re-encoded
    store.keep(smol.model, key, kept, object())
    assert store.take(smol.model, key, [kept[0] + 1, *kept[1:]]) == (None, 0)  # nothing in common: no cache


def test_caches_go_with_their_model_their_conversation_and_the_capacity(smol: LoadedModel) -> None:
    store = KeptCaches(capacity=2)
    ids = [1, 2, 3, 4]
    store.keep(smol.model, ("a", "left"), ids, object())
    assert store.take(torch.nn.Linear(1, 1), ("a", "left"), ids) == (None, 0)  # another model: dropped
    assert ("a", "left") not in store
    for key in (("a", "left"), ("a", "right"), ("b", "left")):
        store.keep(smol.model, key, ids, object())
    assert ("a", "left") not in store and len(store) == 2  # least recently used went first
    store.forget("a")
    assert list(store._entries) == [("b", "left")]
    dead = torch.nn.Linear(1, 1)
    store.keep(dead, ("c", "left"), ids, object())
    del dead
    store.keep(smol.model, ("d", "left"), ids, object())
    assert ("c", "left") not in store  # its model is gone: never kept alive by its cache


def test_the_chat_tab_keeps_each_sides_cache_and_forgets_it_on_clear_and_on_a_new_conversation(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from ctllm.models.kv_reuse import CHAT_CACHES
    from ctllm.ui.chat_tab import ChatHandlers, Side, Turn, TurnSettings
    from ctllm.ui.context import AppContext

    settings = Settings(data_dir=tmp_path / "data", allowed_roots=(tmp_path, tiny_model_dir.parent)).ensure_dirs()
    context = AppContext(settings)
    h = ChatHandlers(context)
    model = str(tiny_model_dir)

    def send(text: str, turn: Turn, left: Side, right: Side, blind: bool = False) -> tuple[Turn, Side, Side]:
        for update in h.send(text, turn, left, right, TurnSettings(model, model, blind, 0.1, 0.0, 1.0, 6, 3)):
            turn, left, right = update.get("turn", turn), update.get("left", left), update.get("right", right)
        return turn, left, right

    try:
        turn, left, right = send(FIRST, Turn(), Side(), Side())
        keys = [(turn.chat_id, "left"), (turn.chat_id, "right")]
        assert turn.chat_id and all(key in CHAT_CACHES for key in keys)
        later, left, right = send(SECOND, turn, left, right)
        assert later.chat_id == turn.chat_id and all(key in CHAT_CACHES for key in keys) and left.answer
        h.clear(later)
        assert not any(key in CHAT_CACHES for key in keys)

        turn, left, right = send(FIRST, Turn(), Side(), Side())
        later, left, right = send(SECOND, turn, left, right, blind=True)  # blind mode on: a new conversation
        assert later.chat_id != turn.chat_id and (turn.chat_id, "left") not in CHAT_CACHES
        assert (later.chat_id, "left") in CHAT_CACHES
    finally:
        context.close()
