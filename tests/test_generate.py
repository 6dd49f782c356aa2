"""Generation: greedy answers of the embedded model, streaming, batching, seeded sampling, and the chat CLI."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ctllm.cli.chat import chat_loop
from ctllm.errors import UserError
from ctllm.models import embedded
from ctllm.models.generate import (
    BASE_ADAPTER,
    THREADS,
    ChatJob,
    GenerationParams,
    batching_pays,
    generate_batch,
    generate_batch_detailed,
    generate_chat,
    on_shared_base,
    sample_tokens,
    stream_chat,
    stream_chats,
)
from ctllm.models.loading import LoadedModel, get_model, load_model
from ctllm.settings import Settings

REPO = Path(__file__).resolve().parent.parent
GREEDY = GenerationParams(temperature=0, max_new_tokens=32)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CONVERSATIONS = [
    QUESTION,
    [{"role": "user", "content": "Name three colors."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 is 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
]


@pytest.fixture(scope="module")
def smol(embedded_model_dir: Path, tmp_path_factory) -> LoadedModel:
    """The embedded model through the 'embedded' spec, its converted folder linked into a fresh models dir."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("smol") / "data").ensure_dirs()
    embedded.embedded_folder(settings.models_dir).symlink_to(embedded_model_dir, target_is_directory=True)
    return get_model("embedded", settings)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path, tmp_path_factory) -> LoadedModel:
    settings = Settings(data_dir=tmp_path_factory.mktemp("tiny") / "data", allowed_roots=(tiny_model_dir.parent,))
    return load_model(str(tiny_model_dir), settings)


def test_embedded_model_answers_through_the_chat_template(smol: LoadedModel) -> None:
    answer = generate_chat(smol, QUESTION, GREEDY)
    assert "Paris" in answer
    assert "<|im_end|>" not in answer and "assistant" not in answer.lower()[:20]


def test_streaming_grows_to_the_non_streamed_greedy_answer(smol: LoadedModel) -> None:
    steps = list(stream_chat(smol, QUESTION, GREEDY))
    assert len(steps) > 1
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.startswith(before) and len(after) > len(before)
    assert steps[-1] == generate_chat(smol, QUESTION, GREEDY)


def test_batched_greedy_equals_one_at_a_time(smol: LoadedModel) -> None:
    params = GenerationParams(temperature=0, max_new_tokens=16)
    one_by_one = [generate_chat(smol, conversation, params) for conversation in CONVERSATIONS]
    assert generate_batch(smol, CONVERSATIONS, params) == one_by_one
    assert generate_batch(smol, CONVERSATIONS, params, batch_size=2) == one_by_one
    assert len(set(one_by_one)) == 3 and all(one_by_one)
    detailed = generate_batch_detailed(smol, CONVERSATIONS[:1], GenerationParams(temperature=0, max_new_tokens=4))
    assert not detailed[0].finished and detailed[0].new_tokens == 4  # cut off at the limit
    assert generate_batch_detailed(smol, CONVERSATIONS[:1], params)[0].finished  # "...is Paris." ends in time


def test_seeded_sampling_is_reproducible_and_seed_dependent(tiny: LoadedModel) -> None:
    params = GenerationParams(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=7)
    first = generate_chat(tiny, QUESTION, params)
    assert generate_chat(tiny, QUESTION, params) == first
    assert list(stream_chat(tiny, QUESTION, params))[-1] == first
    others = {generate_chat(tiny, QUESTION, GenerationParams(1.0, 0.95, 12, seed)) for seed in range(8, 12)}
    assert others - {first}  # other seeds give other answers


def test_two_concurrent_streams_each_keep_their_seed(tiny: LoadedModel) -> None:
    """The Chat tab streams two sides at once: each side's seed reproduces its answer regardless of the other."""
    seeds = (11, 12)
    alone = {seed: generate_chat(tiny, QUESTION, GenerationParams(1.0, 1.0, 24, seed)) for seed in seeds}
    together: dict[int, list[str]] = {}
    barrier = threading.Barrier(len(seeds))

    def side(seed: int) -> None:
        barrier.wait()
        together[seed] = list(stream_chat(tiny, QUESTION, GenerationParams(1.0, 1.0, 24, seed)))

    threads = [threading.Thread(target=side, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {seed: steps[-1] for seed, steps in together.items()} == alone


@pytest.fixture(scope="module")
def sft_and_lora(tiny_model_dir: Path, tmp_path_factory) -> tuple[LoadedModel, LoadedModel]:
    """The tiny model and a LoRA adapter on it (random, non-zero LoRA weights), loaded as the Chat tab loads them."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("lora") / "adapter"
    settings = Settings(data_dir=folder.parent / "data", allowed_roots=(tiny_model_dir.parent, folder.parent))
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(str(tiny_model_dir), settings).model, config).save_pretrained(folder)
    return get_model(str(tiny_model_dir), settings), get_model(str(folder), settings)


def test_the_sft_model_and_a_lora_run_on_it_can_answer_as_one_batch_like_each_alone(
    sft_and_lora: tuple[LoadedModel, LoadedModel],
) -> None:
    """The Chat tab's usual pair, SFT against a LoRA run on it: one batch of 2 on the LoRA model, the SFT row with
    the adapter off; each answer equals that model's own greedy answer, and the sampled ones their seeds'."""
    sft, lora = sft_and_lora
    jobs = [ChatJob(sft, QUESTION, GREEDY), ChatJob(lora, QUESTION, GREEDY)]
    moved = on_shared_base(jobs)
    assert [job.loaded.model for job in moved] == [lora.model, lora.model]
    assert [job.adapter for job in moved] == [BASE_ADAPTER, lora.model.active_adapter]
    batches: list[int] = []
    hook = lora.model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        together = list(stream_chats(jobs, batch=True))[-1]
    finally:
        hook.remove()
    alone = (generate_chat(sft, QUESTION, GREEDY), generate_chat(lora, QUESTION, GREEDY))
    assert together == alone
    assert alone[0] != alone[1]  # the adapter changes the answer: the rows really ran with different weights
    assert batches and set(batches) == {2}  # every forward pass carried both sides
    sampled = GenerationParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=5)
    pair = list(stream_chats([ChatJob(sft, QUESTION, sampled), ChatJob(lora, QUESTION, sampled)], batch=True))[-1]
    assert pair == (generate_chat(sft, QUESTION, sampled), generate_chat(lora, QUESTION, sampled))
    # On a CPU a batch costs about as much as both alone: by default each side runs alone, in its own thread.
    assert not batching_pays(jobs)
    batches.clear()
    hook = lora.model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        assert list(stream_chats(jobs))[-1] == alone
    finally:
        hook.remove()
    assert batches and set(batches) == {1}


def test_the_chat_tabs_merged_lora_run_answers_as_the_adapter_does(sft_and_lora, tiny_model_dir: Path) -> None:
    """``get_model(..., merged=True)`` (what the Chat tab asks for) folds the adapter into the run's own base copy:
    no LoRA layers left, the SFT model's weights untouched, and the same greedy answer as the adapter beside them."""
    sft, lora = sft_and_lora
    folder = Path(lora.spec.path)
    settings = Settings(data_dir=folder.parent / "data", allowed_roots=(tiny_model_dir.parent, folder.parent))
    merged = get_model(str(folder), settings, merged=True)
    assert not hasattr(merged.model, "peft_config") and hasattr(lora.model, "peft_config")
    assert not any("lora_" in name for name, _ in merged.model.named_parameters())
    assert merged.model is not sft.model and get_model(str(folder), settings, merged=True).model is merged.model
    assert generate_chat(merged, QUESTION, GREEDY) == generate_chat(lora, QUESTION, GREEDY)
    assert generate_chat(merged, QUESTION, GREEDY) != generate_chat(sft, QUESTION, GREEDY)


def test_models_on_other_weights_stay_apart_and_share_the_cores(tiny: LoadedModel, smol: LoadedModel) -> None:
    """Two unrelated models run in two threads, each with half of torch's threads (not all of them each), and
    answer as they do alone."""
    jobs = [ChatJob(tiny, QUESTION, GREEDY), ChatJob(smol, QUESTION, GREEDY)]
    assert [job.adapter for job in on_shared_base(jobs)] == [None, None]
    seen: dict[str, int] = {}

    def threads_of(name: str):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            seen.setdefault(name, torch.get_num_threads())

        return hook

    models = {"tiny": tiny, "smol": smol}
    hooks = [loaded.model.register_forward_pre_hook(threads_of(name)) for name, loaded in models.items()]
    try:
        together = list(stream_chats(jobs))[-1]
    finally:
        for hook in hooks:
            hook.remove()
    assert together == (generate_chat(tiny, QUESTION, GREEDY), generate_chat(smol, QUESTION, GREEDY))
    assert seen == {"tiny": max(1, THREADS // 2), "smol": max(1, THREADS // 2)}


def test_closing_a_stream_stops_its_generation(tiny: LoadedModel) -> None:
    stream = stream_chat(tiny, QUESTION, GenerationParams(temperature=1.0, max_new_tokens=2000, seed=1))
    next(stream)
    stream.close()
    deadline = time.monotonic() + 60
    while any(t.name.startswith("generate:") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("generate:") for t in threading.enumerate())


def test_generation_errors_reach_the_consumer(tiny: LoadedModel) -> None:
    with pytest.raises(UserError, match="empty"):
        list(stream_chat(tiny, [], GREEDY))
    too_long = [{"role": "user", "content": "word " * 3000}]  # the tiny model's limit is 2048 positions
    with pytest.raises(UserError, match="limit is 2048"):
        list(stream_chat(tiny, too_long, GREEDY))


def test_sample_tokens_applies_temperature_and_top_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_tokens(logits, 1.0, 1.0, generator), minlength=4) / 4000
    assert torch.allclose(counts, probs[0], atol=0.03)
    nucleus = sample_tokens(logits, 1.0, 0.7, generator)  # 0.5 + 0.3 reach 0.7: only the first two
    assert set(nucleus.tolist()) == {0, 1}
    assert abs((nucleus == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    assert set(sample_tokens(logits, 1.0, 0.01, generator).tolist()) == {0}
    assert set(sample_tokens(logits, 0.01, 1.0, generator).tolist()) == {0}  # near-zero temperature is argmax


def test_generation_params_are_validated() -> None:
    for bad in ({"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(UserError):
            GenerationParams(**bad)
    assert GenerationParams(seed=None).with_seed().seed is not None
    assert GenerationParams(seed=5).with_seed().seed == 5


def run_chat_cli(args: list[str], stdin: str, data_dir: Path, roots: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CTLLM_ALLOWED_ROOTS": roots}
    command = [sys.executable, "-m", "ctllm", "chat", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_chat_cli_with_piped_stdin(embedded_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    models_dir = Settings(data_dir=data_dir).models_dir
    models_dir.mkdir(parents=True)
    embedded.embedded_folder(models_dir).symlink_to(embedded_model_dir, target_is_directory=True)
    stdin = "What is the capital of France?\n\n/quit\nnever read\n"
    result = run_chat_cli(["--temperature", "0", "--max-new-tokens", "24"], stdin, data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["The capital of France is Paris."]
    assert "cannot write Chinese" in result.stderr and "1 answer(s)" in result.stderr


def test_chat_loop_keeps_history_until_reset(smol: LoadedModel) -> None:
    ask = "What number did I ask you to remember?"
    stdin = io.StringIO(f"Remember the number 42.\n{ask}\n/reset\n{ask}\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    answers = chat_loop(smol, GenerationParams(temperature=0, max_new_tokens=30), "", stdin, stdout, stderr)
    assert len(answers) == 3 and stdout.getvalue() == "".join(answer + "\n" for answer in answers)
    assert "42" in answers[1]  # the earlier turn is part of the conversation
    assert "42" not in answers[2]  # and gone after /reset
    assert "(new conversation)" in stderr.getvalue()


def test_chat_cli_errors_exit_non_zero(tmp_path: Path) -> None:
    result = run_chat_cli(["--model", "run:missing"], "hello\n", tmp_path / "data")
    assert result.returncode == 2
    assert "no run named 'missing'" in result.stderr and "Traceback" not in result.stderr
