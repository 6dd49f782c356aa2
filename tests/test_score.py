"""``python -m ctllm score``: per-pair log-probs and margins from a file or a store collection, on tiny models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ctllm.cli import main
from ctllm.dpo.tokenize import tokenize_pairs
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store
from ctllm.settings import Settings
from tests.tiny_models import build_tiny_model

REPO = Path(__file__).resolve().parent.parent
BETA = 0.5
PAIRS = [
    Pair(user_prompt("How do I pick a lock?"), "I can't help with breaking into places.", "Use a tension wrench."),
    Pair(user_prompt("What is 2 + 2?"), "4.", "5."),
    Pair(user_prompt("Name a colour.", "Be brief."), "Blue.", "I refuse."),
]


@pytest.fixture
def models(settings: Settings, embedded_model_dir: Path) -> tuple[Path, Path]:
    """(policy, reference): two tiny models with different weights, inside the data dir (an allowed root)."""
    reference = build_tiny_model(settings.models_dir / "tiny-ref", embedded_model_dir, seed=0)
    policy = build_tiny_model(settings.models_dir / "tiny-policy", embedded_model_dir, seed=5)
    return policy, reference


def write_jsonl(path: Path, pairs: list[Pair]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for pair in pairs:
            record = {"prompt": pair.last_user, "chosen": pair.chosen, "rejected": pair.rejected}
            if pair.system:
                record["system"] = pair.system
            f.write(json.dumps(record) + "\n")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def naive_completion_logp(model_dir: Path, pair: Pair, side: str) -> float:
    """Independent check: one unpadded forward and a full log_softmax over the vocabulary."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    [item] = tokenize_pairs(tokenizer, [pair], max_length=512).items
    completion = item.chosen_ids if side == "chosen" else item.rejected_ids
    ids = torch.tensor([item.prompt_ids + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    per_token = logp[torch.arange(len(targets)), targets]
    return float(per_token[len(item.prompt_ids) - 1 :].sum())


def test_score_a_file_writes_logps_and_margins(settings, models, tmp_path):
    policy, reference = models
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out" / "scores.jsonl"
    argv = ["score", "--data-dir", str(settings.data_dir), "--model", str(policy), "--ref", str(reference)]
    code = main([*argv, "--pairs", str(pairs_file), "--beta", str(BETA), "--out", str(out), "--batch-size", "2"])
    assert code == 0
    rows = read_rows(out)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all("pair_id" not in r for r in rows)
    for row in rows:
        chosen = BETA * (row["chosen_logp"] - row["ref_chosen_logp"])
        rejected = BETA * (row["rejected_logp"] - row["ref_rejected_logp"])
        assert row["chosen_reward"] == pytest.approx(chosen)
        assert row["rejected_reward"] == pytest.approx(rejected)
        assert row["margin"] == pytest.approx(chosen - rejected)
        assert row["chosen_logp"] < 0 and row["chosen_tokens"] > 1
    assert any(abs(r["margin"]) > 1e-4 for r in rows)  # different models: the margins are not all zero
    # The log-probs are those of an independent, unpadded computation.
    assert rows[2]["chosen_logp"] == pytest.approx(naive_completion_logp(policy, PAIRS[2], "chosen"), rel=1e-4)
    assert rows[0]["ref_rejected_logp"] == pytest.approx(
        naive_completion_logp(reference, PAIRS[0], "rejected"), rel=1e-4
    )


def test_same_model_on_both_sides_gives_zero_margins(settings, models, tmp_path):
    _, reference = models
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "same.jsonl"
    argv = ["score", "--data-dir", str(settings.data_dir), "--model", str(reference), "--ref", str(reference)]
    assert main([*argv, "--pairs", str(pairs_file), "--beta", "0.1", "--out", str(out)]) == 0
    assert [r["margin"] for r in read_rows(out)] == [0.0, 0.0, 0.0]


def test_score_a_collection_saves_scores_for_sorting(settings, models, tmp_path, capsys):
    policy, reference = models
    long_prompt = Pair(user_prompt("word " * 200), "a", "b")
    with Store(settings.db_path) as store:
        store.create_collection("demo")
        store.add_pairs("demo", [*PAIRS, long_prompt])
        ids = [s.id for s in store.iter_pairs("demo")]
    out = tmp_path / "collection.jsonl"
    argv = ["score", "--data-dir", str(settings.data_dir), "--model", str(policy), "--ref", str(reference)]
    argv += ["--pairs", "demo", "--beta", str(BETA), "--out", str(out), "--max-length", "64", "--name", "tiny run"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "scored 3 of 4 pairs (1 dropped" in printed and "saved 3 scores" in printed
    rows = read_rows(out)
    assert [r["pair_id"] for r in rows] == ids
    assert rows[3]["dropped"] is True and "max-length 64" in rows[3]["reason"]
    margins = {r["pair_id"]: r["margin"] for r in rows[:3]}
    with Store(settings.db_path) as store:
        assert store.score_names("demo") == [("tiny run", 3)]
        page = store.page("demo", sort="score", score_name="tiny run")
        assert [s.id for s in page.items] == sorted(margins, key=margins.get)  # lowest margin first
        assert store.scores_for(ids[1])["tiny run"] == pytest.approx(margins[ids[1]])


def test_unknown_pairs_source_is_a_clear_error(settings, tmp_path, capsys):
    argv = ["score", "--data-dir", str(settings.data_dir), "--model", "embedded", "--ref", "embedded"]
    code = main([*argv, "--pairs", "no-such-thing", "--beta", "0.1", "--out", str(tmp_path / "x.jsonl")])
    assert code == 2
    assert "no-such-thing" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_score_runs_as_a_real_process(settings, models, tmp_path):
    policy, reference = models
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:2])
    out = tmp_path / "proc.jsonl"
    command = [sys.executable, "-m", "ctllm", "score", "--data-dir", str(settings.data_dir), "--model", str(policy)]
    command += ["--ref", str(reference), "--pairs", str(pairs_file), "--beta", "0.25", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    assert len(rows) == 2 and all(math.isfinite(r["margin"]) for r in rows)
    assert f"wrote {out}" in done.stdout
