"""Synthesis: prompt files, the filters as pure functions, end-to-end runs on scripted tiny models (every filter
exercised), resume without duplicates, and a real background job writing status.json."""

from __future__ import annotations

import argparse
import json
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ctllm.cli import main
from ctllm.errors import UserError
from ctllm.pairs.store import Store
from ctllm.settings import Settings
from ctllm.synth import (
    Answer,
    SynthOptions,
    edit_distance,
    near_identical,
    normalised_edit_distance,
    pair_problem,
    read_prompt_file,
    synth_command,
    synthesize,
)
from ctllm.synth.filters import wrong_language
from tests.scripted_model import build_scripted_model

BLUE = "Blue sky."
GREEN = "Green grass."


@pytest.fixture(scope="session")
def scripted(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Models whose answer to anything is known: blue ("Blue sky."), green ("Green grass."), empty ("")."""
    root = tmp_path_factory.mktemp("scripted")
    return {
        "blue": build_scripted_model(root / "blue", tiny_model_dir, BLUE),
        "green": build_scripted_model(root / "green", tiny_model_dir, GREEN),
        "empty": build_scripted_model(root / "empty", tiny_model_dir, ""),
    }


@pytest.fixture
def env(tmp_path: Path, scripted: dict[str, Path]) -> Settings:
    roots = (tmp_path, next(iter(scripted.values())).parent)
    return Settings(data_dir=tmp_path / "data", allowed_roots=roots).ensure_dirs()


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def stored(settings: Settings, collection: str) -> list:
    with Store(settings.db_path) as store:
        return list(store.iter_pairs(collection))


# ---------------------------------------------------------------------------------------------------------------
# Filters as pure functions


def naive_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


@hsettings(max_examples=300, deadline=None)
@given(st.text("abc ", max_size=14), st.text("abc ", max_size=14), st.integers(0, 16))
def test_banded_edit_distance_matches_the_full_table(a: str, b: str, limit: int) -> None:
    exact = naive_distance(a, b)
    assert edit_distance(a, b) == exact
    assert edit_distance(a, b, limit) == (exact if exact <= limit else limit + 1)


def test_edit_distance_known_values() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert normalised_edit_distance("Hello  World", "hello world") == 0.0  # case and spacing folded
    assert normalised_edit_distance("abcd", "abcx") == pytest.approx(0.25)
    assert normalised_edit_distance("", "") == 0.0


def test_near_identical_threshold_is_strict() -> None:
    ten = "abcdefghij"
    one_off = "abcdefghiX"  # distance 1 of 10 = 0.1
    assert not near_identical(ten, one_off, threshold=0.1)
    assert near_identical(ten, one_off, threshold=0.11)
    assert near_identical("The answer is 4.", "the answer is  4.")
    assert not near_identical("Paris is the capital.", "I don't know.")
    assert near_identical("", "   ")


def test_language_and_filter_order() -> None:
    assert wrong_language("天空是什么颜色？", "The sky is blue.")
    assert wrong_language("What colour is the sky?", "天空是蓝色的。")
    assert not wrong_language("What is 2+2?", "4")  # digits: language unknown, let through
    assert not wrong_language("天空是什么颜色？", "蓝色。")
    prompt = "What colour is the sky?"
    assert pair_problem(prompt, Answer("Blue."), Answer("  ")) == "empty"
    assert pair_problem(prompt, Answer("Blue."), Answer("Red and", finished=False)) == "cut_off"
    assert pair_problem(prompt, Answer("蓝色的。"), Answer("Red.")) == "wrong_language"
    assert pair_problem(prompt, Answer("It is blue."), Answer("it is  BLUE.")) == "near_identical"
    assert pair_problem(prompt, Answer("It is blue."), Answer("It is green, always.")) is None


# ---------------------------------------------------------------------------------------------------------------
# Prompt files


def test_prompt_files_of_every_kind(tmp_path: Path) -> None:
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate", "input": "hello", "output": "Bonjour", "category": "lang"},
        {"instruction": "Be brief.", "input": "", "output": ["Best.", "Worse."], "system": "S",
         "history": [["q", "a"]]},
        {"instruction": "No answer here", "output": ""},
        {"instruction": "Translate", "input": "hello", "output": "Bonjour", "category": "lang"},  # repeated
        {"instruction": 7},
        {"text": "hi"},
    ])
    result = read_prompt_file(alpaca)
    assert [i.text for i in result.items] == ["Translate\nhello", "Be brief.", "No answer here", "hi"]
    assert [i.answer for i in result.items] == ["Bonjour", "Best.", None, None]
    assert result.items[0].meta == {"category": "lang"}
    assert [m["role"] for m in result.items[1].prompt] == ["system", "user", "assistant", "user"]
    assert result.repeated == 1 and result.rows == 6
    [error] = result.errors
    assert (error.line, error.field) == (5, "instruction") and "expected text" in error.reason

    sharegpt = tmp_path / "share.json"
    sharegpt.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "human", "value": "Only a question"}]},
        {"messages": [{"role": "user", "content": "OpenAI style"}, {"role": "assistant", "content": "Yes."}]},
        {"conversations": [{"from": "gpt", "value": "no user turn"}]},
    ]), encoding="utf-8")
    result = read_prompt_file(sharegpt)
    assert [(i.text, i.answer) for i in result.items] == [
        ("Hi", "Hello!"), ("Only a question", None), ("OpenAI style", "Yes.")
    ]
    assert result.errors[0].row == 4 and "end with a user turn" in result.errors[0].reason

    text = tmp_path / "plain.txt"
    text.write_text("# a comment\nFirst prompt\n\n天空是什么颜色？\n", encoding="utf-8")
    result = read_prompt_file(text)
    assert [(i.text, i.line, i.answer) for i in result.items] == [
        ("First prompt", 2, None), ("天空是什么颜色？", 4, None)
    ]

    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("prompt,response\nWhy?,Because.\n", encoding="utf-8")
    assert [(i.text, i.answer) for i in read_prompt_file(csv_file).items] == [("Why?", "Because.")]

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{not json\n', encoding="utf-8")
    result = read_prompt_file(broken)
    assert len(result.items) == 1 and result.errors[0].line == 2 and "invalid JSON" in result.errors[0].reason
    with pytest.raises(UserError, match="no usable prompts"):
        read_prompt_file(write_jsonl(tmp_path / "bad.jsonl", [{"nothing": 1}]))
    xml = tmp_path / "x.xml"
    xml.write_text("<a/>", encoding="utf-8")
    with pytest.raises(UserError, match="unknown prompts file type"):
        read_prompt_file(xml)


# ---------------------------------------------------------------------------------------------------------------
# End to end


def test_synthesis_end_to_end_exercises_every_filter(env: Settings, scripted: dict[str, Path], tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Name a colour.", "output": "Red is a warm colour.", "category": "colours"},  # kept
        {"instruction": "What colour is the sky?", "output": "  blue SKY. "},  # = the weak answer: near_identical
        {"instruction": "天空是什么颜色？", "output": "天空是蓝色的。"},  # weak answers in English: wrong_language
        {"instruction": "What grows on a lawn?"},  # no answer: the strong model writes chosen, kept
    ])
    options = SynthOptions(str(prompts), "synth-a", weak=str(scripted["blue"]), strong=str(scripted["green"]),
                           batch_size=3, max_new_tokens=16, temperature=0.7, top_p=0.9, seed=11)
    summary = synthesize(options, env, show_progress=False)
    assert summary.processed == 4 and summary.added == 2 and summary.duplicates == 0
    assert summary.filtered == {"empty": 0, "cut_off": 0, "wrong_language": 1, "near_identical": 1, "too_long": 0}
    pairs = {s.pair.last_user: s for s in stored(env, "synth-a")}
    kept = pairs["Name a colour."]
    assert (kept.pair.chosen, kept.pair.rejected, kept.split) == ("Red is a warm colour.", BLUE, "train")
    meta = kept.pair.meta
    assert meta["category"] == "colours" and meta["chosen_from"] == "file"
    assert (meta["temperature"], meta["top_p"], meta["max_new_tokens"], meta["seed"]) == (0.7, 0.9, 16, 11)
    assert meta["weak_model"] == str(scripted["blue"]) and meta["strong_model"] == str(scripted["green"])
    assert isinstance(meta["batch_seed"], int) and meta["synth_key"] == options.key
    lawn = pairs["What grows on a lawn?"].pair
    assert (lawn.chosen, lawn.rejected, lawn.meta["chosen_from"]) == (GREEN, BLUE, "strong")
    with Store(env.db_path) as store:
        collection = store.get_collection("synth-a")
    assert collection.kind == "synth"
    assert collection.meta["synth"][options.key]["counts"]["near_identical"] == 1

    # Cut off at the token limit, a prompt too long for the context, and empty answers (another weak model).
    long_prompt = {"instruction": "word " * 2100, "output": "Fine."}
    short = write_jsonl(tmp_path / "short.jsonl", [{"instruction": "Name a colour.", "output": "Red."}, long_prompt])
    cut = synthesize(SynthOptions(str(short), "synth-b", weak=str(scripted["blue"]), max_new_tokens=2,
                                  temperature=0), env, show_progress=False)
    assert (cut.filtered["cut_off"], cut.filtered["too_long"], cut.added) == (1, 1, 0)
    empty = synthesize(SynthOptions(str(short), "synth-c", weak=str(scripted["empty"]), limit=1), env,
                       show_progress=False)
    assert (empty.filtered["empty"], empty.added) == (1, 0)

    without_answers = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": "Hello?"}])
    with pytest.raises(UserError, match="--strong"):
        synthesize(SynthOptions(str(without_answers), "synth-d", weak=str(scripted["blue"])), env)


def test_resume_continues_without_duplicates(
    env: Settings, scripted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTLLM_ALLOWED_ROOTS", ",".join(str(root) for root in env.allowed_roots))
    rows = [{"instruction": f"Question {i}?", "output": f"Answer number {i}, in full."} for i in range(7)]
    rows.insert(3, {"instruction": "Sky?", "output": BLUE})  # dropped as near identical: must not be redone
    prompts = write_jsonl(tmp_path / "many.jsonl", rows)
    base = ["synth", "--data-dir", str(env.data_dir), "--prompts", str(prompts), "--collection", "resumable",
            "--weak", str(scripted["blue"]), "--batch-size", "2", "--max-new-tokens", "12", "--no-progress"]
    assert main([*base, "--limit", "3"]) == 0  # stopped after 3 prompts
    assert len(stored(env, "resumable")) == 3

    # Interrupted from outside (the stop event a SIGTERM sets) after the first batch of the rest.
    stop = threading.Event()
    options = SynthOptions(str(prompts), "resumable", weak=str(scripted["blue"]), batch_size=2, max_new_tokens=12)
    first = synthesize(options, env, show_progress=False, stop=stop, progress=lambda s: stop.set())
    assert (first.state, first.already_done, first.processed) == ("cancelled", 3, 2)
    assert first.filtered["near_identical"] == 1

    second = synthesize(options, env, show_progress=False)
    assert (second.state, second.already_done, second.processed, second.added) == ("finished", 5, 3, 3)
    pairs = stored(env, "resumable")
    assert len(pairs) == 7 and len({s.pair.content_hash() for s in pairs}) == 7
    assert len({s.pair.meta["seed"] for s in pairs}) == 1  # the first run's seed was reused

    # A run killed after storing its pairs but before recording its progress: the pairs' meta still tell.
    with Store(env.db_path) as store:
        store.update_collection_meta("resumable", synth={})
    again = synthesize(options, env, show_progress=False)
    assert (again.already_done, again.processed, again.added, again.duplicates) == (7, 1, 0, 0)
    assert len(stored(env, "resumable")) == 7


def test_background_job_writes_status(env: Settings, scripted: dict[str, Path], tmp_path: Path) -> None:
    from ctllm.jobs import JobManager

    prompts = write_jsonl(tmp_path / "job.jsonl", [{"instruction": f"Q{i}", "output": f"Long answer {i}."}
                                                   for i in range(3)])
    options = SynthOptions(str(prompts), "from-job", weak=str(scripted["blue"]), batch_size=2, max_new_tokens=8,
                           threads=1)
    run_dir = env.runs_dir / "synth-job"
    manager = JobManager(env)
    job = manager.start(synth_command(options, run_dir), run_dir, kind="synth")
    job = manager.wait(job.id, timeout=300)
    view = manager.watch(job.id)
    assert job.state == "finished", view.log_tail
    assert view.status["state"] == "finished" and view.status["kind"] == "synth"
    assert view.status["options"] == {**asdict(options), "prompts": str(prompts)}
    assert (view.status["step"], view.status["total_steps"]) == (3, 3)
    assert view.status["summary"]["added"] == 3 and view.status["pairs_per_minute"] > 0
    assert "synth: 100%" in (run_dir / "train.log").read_text(encoding="utf-8")
    assert len(stored(env, "from-job")) == 3


def test_options_survive_the_command_line() -> None:
    from ctllm.cli import synth as synth_cli

    options = SynthOptions("p.jsonl", "c", weak="w", strong="s", batch_size=3, max_new_tokens=9, temperature=0.0,
                           top_p=0.5, seed=7, limit=4, near_threshold=0.2, split="test", threads=1)
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    argv = synth_command(options, "/tmp/run")
    assert argv[1:4] == ["-m", "ctllm", "synth"]
    args = parser.parse_args(argv[4:])
    assert synth_cli.options_from_args(args) == options and args.run_dir == Path("/tmp/run")
    with pytest.raises(UserError, match="--top-p"):
        SynthOptions("p", "c", top_p=0).validate()
