"""Chat generation: streamed (one conversation) or batched (many), greedy or sampled with a seed.

Sampling draws from a ``torch.Generator`` owned by the call, not from torch's global random state, so two chats
streaming at once in two threads each reproduce their own seed. transformers' own sampler has no generator
argument, so generation runs greedy over logits that a final processor has already reduced to the one token it
sampled (temperature, then top-p).
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, StoppingCriteria, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from ctllm.errors import UserError
from ctllm.models.kv_reuse import CHAT_CACHES, KeptCaches, croppable
from ctllm.models.loading import LoadedModel
from ctllm.models.templates import apply_chat_template
from ctllm.pairs.schema import Message

# torch's intra-op threads as the process started (before any generation thread changed its own); threads that
# generate at the same time share them (see _threads_each).
THREADS = torch.get_num_threads()
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a batch of mixed adapters


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int | None = None  # None: a fresh random seed per call (use with_seed() to know and record it)

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise UserError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if int(self.max_new_tokens) < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_seed(self) -> GenerationParams:
        """These parameters with a concrete seed (drawn now when none was given), to record next to an answer."""
        return self if self.seed is not None else replace(self, seed=random.randrange(2**31))


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token id per row of ``logits`` (batch, vocab): softmax at ``temperature``, restricted to the smallest
    set of most likely tokens whose probability reaches ``top_p`` (always at least the top one)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


class _SeededSampler(LogitsProcessor):
    def __init__(self, temperature: float, top_p: float, generator: torch.Generator):
        self.temperature, self.top_p, self.generator = temperature, top_p, generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = sample_tokens(scores, self.temperature, self.top_p, self.generator)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(-1, chosen.unsqueeze(-1), 0.0)


class StopRequested(Exception):
    """Batched generation ended early: its ``stop`` event was set (a cancelled evaluation)."""


class _StopWhenSet(StoppingCriteria):
    """Ends generation early, after the current token, once ``event`` is set (a closed stream, a cancelled chat or
    evaluation)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _generate_kwargs(loaded: LoadedModel, params: GenerationParams, stop: threading.Event | None) -> dict[str, Any]:
    tokenizer = loaded.tokenizer
    config = GenerationConfig(
        max_new_tokens=int(params.max_new_tokens),
        do_sample=False,
        num_beams=1,
        eos_token_id=list(loaded.stop_token_ids) or tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs: dict[str, Any] = {"generation_config": config}
    if not params.greedy:
        seed = params.with_seed().seed
        generator = torch.Generator(device=loaded.device).manual_seed(int(seed))  # type: ignore[arg-type]
        kwargs["logits_processor"] = [_SeededSampler(params.temperature, params.top_p, generator)]
    if stop is not None:
        kwargs["stopping_criteria"] = [_StopWhenSet(stop)]
    return kwargs


def _prompt_ids(loaded: LoadedModel, messages: Sequence[Message]) -> list[int]:
    if not messages:
        raise UserError("nothing to answer: the conversation is empty")
    ids = apply_chat_template(loaded.tokenizer, messages)
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and len(ids) >= limit:
        raise UserError(f"the conversation is {len(ids)} tokens long, the model's limit is {limit}: start a new one")
    return ids


def stream_chat(loaded: LoadedModel, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
    """Yield the answer so far (cumulative text) as it grows; the last value is the whole answer.

    Generation runs in its own thread; closing the iterator early stops it after the current token.
    """
    ids = torch.tensor([_prompt_ids(loaded, messages)], device=loaded.device)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        torch.set_num_threads(THREADS)  # a new thread takes the count the last one set: make it explicit
        try:
            with torch.inference_mode():
                loaded.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=streamer,
                    **_generate_kwargs(loaded, params, stop),
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer's thread below
            errors.append(error)
            streamer.on_finalized_text("", stream_end=True)

    thread = threading.Thread(target=work, name=f"generate:{loaded.spec.label}", daemon=True)
    thread.start()
    text = ""
    yielded = False
    try:
        for piece in streamer:
            if piece:
                text += piece
                yielded = True
                yield text
    finally:
        stop.set()
    thread.join()
    if errors:
        raise errors[0]
    if not yielded:
        yield text


@dataclass(frozen=True)
class ChatJob:
    """One conversation to answer in :func:`stream_chats`: its model, messages and sampling (seed included).

    ``cache_key`` (a conversation side, ``(chat id, side)``): keep this chat's KV cache for its next turn, and reuse
    the one its previous turn kept when the prompt still starts with the same tokens. ``adapter``: the peft adapter
    a row of a mixed batch runs with (``BASE_ADAPTER``: none); set by :func:`on_shared_base`, not by callers.
    """

    loaded: LoadedModel
    messages: Sequence[Message]
    params: GenerationParams
    cache_key: Hashable | None = None
    adapter: str | None = None


def _lora_base_of(adapted: LoadedModel, plain: LoadedModel) -> bool:
    """Whether ``adapted`` is a LoRA model whose base is ``plain``'s weights (the same files, dtype and vocabulary),
    so ``plain``'s answers can come from ``adapted`` with its adapter switched off, row by row."""
    peft_config = getattr(adapted.model, "peft_config", None)
    if not peft_config or getattr(plain.model, "peft_config", None) or len(peft_config) != 1:
        return False
    if any(config.peft_type != "LORA" for config in peft_config.values()):
        return False
    base = adapted.model.get_base_model()
    return (
        type(base) is type(plain.model)
        and getattr(base.config, "_name_or_path", None) == getattr(plain.model.config, "_name_or_path", "")
        and adapted.dtype == plain.dtype
        and adapted.device == plain.device
        and adapted.stop_token_ids == plain.stop_token_ids
        and adapted.tokenizer.pad_token_id == plain.tokenizer.pad_token_id
        and adapted.tokenizer.get_vocab() == plain.tokenizer.get_vocab()
    )


def on_shared_base(jobs: Sequence[ChatJob]) -> list[ChatJob]:
    """``jobs`` with every chat on a plain model moved onto a LoRA model of the same jobs built on those very
    weights, as a row with the adapter switched off: the SFT model and a LoRA run then answer as ONE batch.
    Deterministic, so a side's kept cache is found under the same model on its next turn."""
    moved = list(jobs)
    adapted = [job.loaded for job in jobs if getattr(job.loaded.model, "peft_config", None)]
    for index, job in enumerate(jobs):
        host = next((lora for lora in adapted if _lora_base_of(lora, job.loaded)), None)
        if host is not None:
            moved[index] = replace(job, loaded=host, adapter=BASE_ADAPTER)
    hosts = {id(job.loaded.model) for job in moved if job.adapter == BASE_ADAPTER}
    for index, job in enumerate(moved):
        if job.adapter is None and id(job.loaded.model) in hosts:
            moved[index] = replace(job, adapter=job.loaded.model.active_adapter)
    return moved


class _RowSampler(LogitsProcessor):
    """Seeded sampling with one generator per batch row, so each row draws what it would draw alone."""

    def __init__(self, temperature: float, top_p: float, generators: Sequence[torch.Generator]):
        self.temperature, self.top_p, self.generators = temperature, top_p, generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = torch.cat(
            [
                sample_tokens(scores[row : row + 1], self.temperature, self.top_p, generator)
                for row, generator in enumerate(self.generators)
            ]
        )
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(-1, chosen.unsqueeze(-1), 0.0)


class _RowsStreamer(BaseStreamer):
    """Hands each decoding step's new token of every row to a queue as ``(job indexes, token ids)``."""

    def __init__(self, jobs: Sequence[int], out: queue.Queue):
        self.jobs, self.out, self.prompt_seen = tuple(jobs), out, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call passes the prompt
            self.prompt_seen = True
            return
        self.out.put((self.jobs, value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


def _same_group(a: ChatJob, b: ChatJob) -> bool:
    """Whether two chats can share one batch: the same loaded weights and sampling settings (seeds aside)."""
    return a.loaded.model is b.loaded.model and replace(a.params, seed=None) == replace(b.params, seed=None)


def _batches(jobs: Sequence[ChatJob], alone: Sequence[bool]) -> list[list[int]]:
    """Rows that generate together; a row marked ``alone`` (it continues from its own kept cache) runs by itself."""
    groups: list[list[int]] = []
    for index, job in enumerate(jobs):
        for group in groups:
            if not alone[index] and not alone[group[0]] and _same_group(jobs[group[0]], job):
                group.append(index)
                break
        else:
            groups.append([index])
    return groups


def _threads_each(parallel: int) -> int:
    """torch threads for each of ``parallel`` generations running at once: together they use the cores once. Two
    threads each running torch's full thread count on a 2-core CPU make four busy threads that wait on each
    other at every operation; one thread each runs both sides side by side without that contention."""
    return max(1, THREADS // max(1, parallel))


def _row_cache(cache: DynamicCache, row: int, start: int) -> DynamicCache:
    """Row ``row`` of a batch's cache from position ``start`` on (its left padding cut off)."""
    return DynamicCache([(layer.keys[row : row + 1, :, start:], layer.values[row : row + 1, :, start:])
                         for layer in cache.layers])


def _keep_caches(
    jobs: Sequence[ChatJob], rows: list[int], prompts: Sequence[list[int]], output: torch.Tensor,
    cache: DynamicCache, store: KeptCaches,
) -> None:
    """Keep each keyed row's cache with the ids it covers (its prompt and the answer tokens fed back so far)."""
    if not croppable(cache):
        return
    width, length = max(len(prompts[row]) for row in rows), cache.get_seq_length()
    for position, row in enumerate(rows):
        job = jobs[row]
        if job.cache_key is None:
            continue
        pad = width - len(prompts[row])
        ids = output[position, pad:length].tolist()
        kept = cache if len(rows) == 1 else _row_cache(cache, position, pad)
        store.keep(job.loaded.model, job.cache_key, ids, kept)


def _generate_rows(
    jobs: Sequence[ChatJob],
    rows: list[int],
    prompts: Sequence[list[int]],
    cache: DynamicCache | None,
    out: queue.Queue,
    stop: threading.Event,
    store: KeptCaches,
) -> None:
    """Generate the chats ``rows`` of ``jobs`` as one left-padded batch, streaming tokens to ``out``.

    ``cache``: a single row's kept cache over a prefix of its prompt; only the rest of the prompt is prefilled.
    """
    first = jobs[rows[0]]
    loaded, params = first.loaded, first.params
    width = max(len(prompts[row]) for row in rows)
    pad = loaded.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(prompts[row])) + prompts[row] for row in rows], device=loaded.device)
    mask = torch.tensor([[0] * (width - len(prompts[row])) + [1] * len(prompts[row]) for row in rows],
                        device=loaded.device)
    kwargs = _generate_kwargs(loaded, replace(params, temperature=0), stop)
    if any(jobs[row].adapter for row in rows):  # a mixed batch: the base model's rows run with the adapter off
        kwargs["adapter_names"] = [jobs[row].adapter for row in rows]
    if not params.greedy:
        generators = [
            torch.Generator(device=loaded.device).manual_seed(int(jobs[row].params.with_seed().seed))  # type: ignore[arg-type]
            for row in rows
        ]
        kwargs["logits_processor"] = [_RowSampler(params.temperature, params.top_p, generators)]
    keyed = any(jobs[row].cache_key is not None for row in rows)
    if cache is None and keyed:
        cache = DynamicCache(config=loaded.model.config)
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids, attention_mask=mask, past_key_values=cache, streamer=_RowsStreamer(rows, out), **kwargs
        )
    if keyed:
        _keep_caches(jobs, rows, prompts, output, cache, store)


class _Answer:
    """One chat's tokens as they arrive, decoded to text that only grows (up to its first stop token)."""

    def __init__(self, loaded: LoadedModel):
        self.tokenizer, self.stops = loaded.tokenizer, set(loaded.stop_token_ids)
        self.tokens: list[int] = []
        self.stopped = False
        self.text = ""

    def add(self, token: int) -> bool:
        """Take the next token; True when the visible text grew."""
        if self.stopped:
            return False
        if token in self.stops:
            self.stopped = True
            return False
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character cut in the middle of its bytes: wait for the rest
            return False
        grew, self.text = len(text) > len(self.text), text
        return grew


def batching_pays(jobs: Sequence[ChatJob]) -> bool:
    """Whether to batch chats on shared weights: not on a CPU. There a batch of 2 costs about twice one chat (a
    matrix product of 2 rows packs the weights that a single row's streams once), and peft's mixed-adapter batch
    more; a thread per chat, each with its share of the cores, costs about 1.15x one chat (bench/bench_app.py)."""
    return all(job.loaded.device.type != "cpu" for job in jobs)


def stream_chats(
    jobs: Sequence[ChatJob], store: KeptCaches = CHAT_CACHES, *, batch: bool | None = None
) -> Iterator[tuple[str, ...]]:
    """Answer several chats at once, yielding every answer so far (a tuple in ``jobs`` order) whenever one grows.

    With ``batch`` (default: :func:`batching_pays`), chats on the same loaded weights with the same sampling
    settings run as ONE left-padded batch, and so do a plain model and a LoRA model on it (the plain model's rows
    run with the adapter off: :func:`on_shared_base`); the other chats run in a thread each, the threads sharing
    torch's threads between them. Each chat samples from its own seeded generator. Closing the iterator stops
    generation after the current token.

    A chat with a ``cache_key`` keeps its KV cache in ``store``; when its previous turn's cache covers the start of
    its prompt, it runs alone (not batched) from that cache, prefilling only the new tokens: on a 2-core CPU that
    reaches the first token far sooner than re-encoding the whole conversation of both sides in one batch.
    """
    prompts = [_prompt_ids(job.loaded, job.messages) for job in jobs]
    batch = batching_pays(jobs) if batch is None else batch
    jobs = on_shared_base(jobs) if batch else list(jobs)
    caches = [
        store.take(job.loaded.model, job.cache_key, ids)[0] if job.cache_key is not None else None
        for job, ids in zip(jobs, prompts, strict=True)
    ]
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    answers = [_Answer(job.loaded) for job in jobs]
    errors: list[BaseException] = []
    done = object()

    def work(rows: list[int]) -> None:
        torch.set_num_threads(threads)
        try:
            _generate_rows(jobs, rows, prompts, caches[rows[0]], out, stop, store)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer's thread below
            errors.append(error)
        finally:
            out.put(done)

    groups = _batches(jobs, [cache is not None or not batch for cache in caches])
    threads = _threads_each(len(groups))
    workers = [threading.Thread(target=work, args=(rows,), name="generate:chat", daemon=True) for rows in groups]
    for worker in workers:
        worker.start()
    running = len(workers)
    try:
        while running:
            item = out.get()
            if item is done:
                running -= 1
                continue
            rows, tokens = item
            grew = [answers[row].add(token) for row, token in zip(rows, tokens, strict=True)]
            if any(grew) and not errors:
                yield tuple(answer.text for answer in answers)
    finally:  # also when the consumer closes early: no orphan generation keeps the cores busy
        stop.set()
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    yield tuple(answer.text for answer in answers)


def generate_chat(loaded: LoadedModel, messages: Sequence[Message], params: GenerationParams) -> str:
    """The whole answer to one conversation, without streaming."""
    return generate_batch(loaded, [messages], params)[0]


@dataclass(frozen=True)
class Generated:
    """One generated answer: ``finished`` is False when it was cut off at max_new_tokens (no stop token)."""

    text: str
    finished: bool
    new_tokens: int  # generated tokens before the stop token


def _decode_until_stop(loaded: LoadedModel, tokens: list[int]) -> Generated:
    stops = set(loaded.stop_token_ids)
    finished = False
    for index, token in enumerate(tokens):
        if token in stops:
            tokens, finished = tokens[:index], True
            break
    return Generated(loaded.tokenizer.decode(tokens, skip_special_tokens=True), finished, len(tokens))


def generate_batch(
    loaded: LoadedModel,
    conversations: list[Sequence[Message]],
    params: GenerationParams,
    *,
    batch_size: int | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """Answers to several conversations, generated together (left-padded) ``batch_size`` at a time (default: all).

    Greedy answers equal one-at-a-time generation. With sampling, one generator seeded once serves every batch,
    so a seed reproduces the whole list for the same conversations and batch size. ``stop``: once set, generation
    ends after the current token and ``StopRequested`` is raised (no partial answers are returned).
    """
    return [g.text for g in generate_batch_detailed(loaded, conversations, params, batch_size=batch_size, stop=stop)]


def generate_batch_detailed(
    loaded: LoadedModel,
    conversations: list[Sequence[Message]],
    params: GenerationParams,
    *,
    batch_size: int | None = None,
    stop: threading.Event | None = None,
) -> list[Generated]:
    """As :func:`generate_batch`, with whether each answer ended on a stop token within max_new_tokens."""
    if not conversations:
        return []
    size = batch_size or len(conversations)
    pad = loaded.tokenizer.pad_token_id
    params = params if params.greedy else params.with_seed()
    kwargs = _generate_kwargs(loaded, params, stop)
    answers: list[Generated] = []
    for start in range(0, len(conversations), size):
        if stop is not None and stop.is_set():
            raise StopRequested(f"generation stopped after {start} of {len(conversations)} conversations")
        rows = [_prompt_ids(loaded, messages) for messages in conversations[start : start + size]]
        width = max(len(row) for row in rows)
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=loaded.device)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=loaded.device)
        with torch.inference_mode():
            output = loaded.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        if stop is not None and stop.is_set():  # this batch was cut short (or finished as the event came)
            raise StopRequested(f"generation stopped in the batch of conversations {start + 1} to {start + len(rows)}"
                                f" of {len(conversations)}")
        answers += [_decode_until_stop(loaded, row[width:].tolist()) for row in output]
    return answers
