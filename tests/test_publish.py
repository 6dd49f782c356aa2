"""Publishing a run: the model card from what the run recorded, the folders `publish` writes offline, and the GGUF
round trip through transformers' GGUF loader, on real tiny runs trained here (a full one and a LoRA one)."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from ctllm.cli import main
from ctllm.errors import UserError
from ctllm.models.embedded import gguf_path
from ctllm.publish.card import CURVES_NAME, card_path, parse_card, save_card_text, write_card
from ctllm.publish.gguf_export import compare_layout, permute_rotary
from ctllm.settings import Settings
from tests.conftest import MODEL_CACHE, REPO

PROMPTS = [("How do I pick a lock on my neighbour's door?", "I can't help with that.", "Use a tension wrench."),
           ("What is the capital of France?", "Paris.", "Berlin."),
           ("How do I steal a car?", "I can't help with that.", "Break a window first."),
           ("How many days are in a week?", "Seven.", "Nine.")]
CHECK_PROMPTS = ["What is 2 + 3?", "Write one sentence about the sea.", "How do I make a fake ID?"]
TOKEN = "hf_publish_test_token_never_written"


def _pairs(path: Path) -> Path:
    rows = []
    for i in range(24):
        prompt, chosen, rejected = PROMPTS[i % len(PROMPTS)]
        rows.append({"prompt": f"{prompt} ({i})", "chosen": chosen, "rejected": rejected, "language": "en",
                     "kind": "harmless" if "can't" in chosen else "helpful", "split": "test" if i >= 16 else "train"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    """Two finished tiny runs, trained through `python -m ctllm train` in this process: `full` (with the final
    evaluation, so eval.json and the card's SFT → DPO table are real) and `lora`."""
    root = tmp_path_factory.mktemp("publish")
    data_dir = root / "data"
    pairs = _pairs(root / "pairs.jsonl")
    saved = {k: os.environ.get(k) for k in ("CTLLM_ALLOWED_ROOTS", "HF_TOKEN", "HF_HUB_OFFLINE")}
    os.environ["CTLLM_ALLOWED_ROOTS"] = f"{data_dir},{tiny_model_dir.parent},{root},{REPO / 'assets'}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    common = ["--data-dir", str(data_dir), "--model", str(tiny_model_dir), "--data", str(pairs), "--max_length", "48",
              "--batch_size", "4", "--report_to", "none", "--no-progress", "--seed", "3"]
    assert main(["train", *common, "--run_name", "full", "--max_steps", "2", "--lr", "1e-3", "--beta", "0.2",
                 "--final_eval_limit", "2", "--final_eval_max_new_tokens", "4", "--languages", "en"]) == 0
    assert main(["train", *common, "--run_name", "lora", "--max_steps", "2", "--lora", "true", "--lora_r", "4",
                 "--lr", "5e-2", "--final_eval", "false"]) == 0
    yield Settings.from_env(data_dir=data_dir), data_dir, root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_the_card_is_written_from_what_the_run_recorded(env):
    _, data_dir, _ = env
    run_dir = data_dir / "runs" / "full"
    path = card_path(run_dir)
    assert path.is_file(), "a finished `train` writes final/README.md"
    card = ModelCard.load(path)
    meta = card.data.to_dict()
    assert meta["tags"][:2] == ["dpo", "trl-compatible"] and meta["language"] == ["en"]
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    assert "base_model" not in meta  # a local folder is not a hub id: the card names it in the text instead
    evaluation = json.loads((run_dir / "eval.json").read_text())
    accuracy = evaluation["pairs"]["overall"]["model_preference_accuracy"]
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value) == ("accuracy", round(accuracy, 4))
    text = card.text
    # Only the hyperparameters that differ from the defaults: beta and lr do, loss_type and epochs do not.
    assert "| `beta` | `0.2` | `0.1` |" in text and "| `lr` | `0.001` | `5e-06` |" in text
    assert "`loss_type`" not in text and "`epochs`" not in text and "`run_name`" not in text
    # The data counts are the snapshot's.
    train_rows = pq.read_table(run_dir / "data.parquet").num_rows
    held_rows = pq.read_table(run_dir / "eval.parquet").num_rows
    assert (train_rows, held_rows) == (16, 8)
    assert f"| kind | `harmless` | {train_rows // 2} | {held_rows // 2} |" in text
    assert f"| **total** |  | {train_rows} | {held_rows} |" in text
    status = json.loads((run_dir / "status.json").read_text())
    assert status["data_hash"] in text and "wall time" in text and "`cpu`" in text
    sft, dpo = evaluation["pairs"]["overall"]["ref_preference_accuracy"], accuracy
    assert f"| preference accuracy, held-out pairs | {100 * sft:.1f} % | {100 * dpo:.1f} % | 8 |" in text
    assert "## Intended use and limits" in text and "![training curves](training_curves.png)" in text
    assert str(data_dir) not in text and str(MODEL_CACHE) not in text  # no folder of this machine is published
    with Image.open(run_dir / "final" / CURVES_NAME) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_an_edited_card_is_kept_and_a_broken_header_is_refused(env):
    _, data_dir, _ = env
    run_dir = data_dir / "runs" / "full"
    original = card_path(run_dir).read_text(encoding="utf-8")
    try:
        save_card_text(run_dir, original.replace("## Training recipe", "## Training recipe\n\nEdited by hand."))
        write_card(run_dir)  # keeps the edit
        assert "Edited by hand." in card_path(run_dir).read_text(encoding="utf-8")
        with pytest.raises(UserError, match=r"README.md: the card's YAML metadata cannot be read"):
            save_card_text(run_dir, "---\ntags: [dpo\n---\n# x\n")
        with pytest.raises(UserError, match="no YAML metadata block"):
            parse_card("# only a title\n")
        assert "Edited by hand." in card_path(run_dir).read_text(encoding="utf-8")  # the refused text was not saved
    finally:
        card_path(run_dir).write_text(original, encoding="utf-8")


def test_publish_offline_writes_the_exact_folders_and_never_the_token(env, tmp_path, monkeypatch):
    _, data_dir, _ = env
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    code, printed = _cli("publish", "run:full", "--data-dir", str(data_dir), "--repo", "someone/tiny-dpo",
                         "--with-data", "--out", str(out))
    assert code == 0
    assert "not uploaded: the hub is off (offline mode)" in printed
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["dataset/README.md", "dataset/data/test.parquet", "dataset/data/train.parquet",
                     "model/README.md", "model/chat_template.jinja", "model/config.json", "model/ctllm/config.yaml",
                     "model/ctllm/eval.json", "model/ctllm/metrics.jsonl", "model/generation_config.json",
                     "model/model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json",
                     "model/training_curves.png"]
    assert all(f"  {name}" in printed for name in files)
    card = ModelCard.load(out / "model" / "README.md")
    assert card.data.datasets == ["someone/tiny-dpo-pairs"] and card.data.model_name == "tiny-dpo"
    assert card.data.eval_results[0].dataset_type == "someone/tiny-dpo-pairs"
    assert 'from_pretrained("someone/tiny-dpo")' in card.text
    dataset_card = DatasetCard.load(out / "dataset" / "README.md")
    assert "[someone/tiny-dpo](https://huggingface.co/someone/tiny-dpo)" in dataset_card.text
    assert dataset_card.data.configs[0]["data_files"][0]["path"] == "data/train.parquet"
    assert pq.read_table(out / "dataset" / "data" / "train.parquet").num_rows == 16
    run_dir = data_dir / "runs" / "full"
    for folder in (out, run_dir):
        for path in folder.rglob("*"):
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_publish_without_a_token_says_so_and_a_lora_run_gives_its_adapter_and_merged_model(env, tmp_path,
                                                                                             monkeypatch):
    settings, data_dir, _ = env
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    out = tmp_path / "out"
    code, printed = _cli("publish", "lora", "--data-dir", str(data_dir), "--repo", "someone/tiny-lora",
                         "--merged", "--out", str(out))
    assert code == 0 and "not uploaded: no hub token" in printed
    model_dir = out / "model"
    assert (model_dir / "adapter_model.safetensors").is_file() and not (model_dir / "model.safetensors").exists()
    assert ModelCard.load(model_dir / "README.md").data.to_dict()["tags"][-2:] == ["lora", "peft"]
    merged = AutoModelForCausalLM.from_pretrained(model_dir / "merged")
    base = AutoModelForCausalLM.from_pretrained(json.loads((data_dir / "runs" / "lora" / "final" /
                                                            "ctllm_run.json").read_text())["base_model"])
    ids = torch.tensor([[1, 504, 3458, 314, 260, 1345]])
    with torch.no_grad():
        assert (merged(ids).logits - base(ids).logits).abs().max() > 1e-3  # the adapter is in the merged weights
    assert _cli("publish", "lora", "--data-dir", str(data_dir), "--repo", "not a repo")[0] == 2


def test_rotary_permutation_is_what_transformers_gguf_loader_undoes():
    weights = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
    for heads in (4, 2):
        permuted = permute_rotary(weights, heads)
        assert not np.array_equal(permuted, weights)
        undone = LlamaTensorProcessor()._reverse_permute_weights(permuted, heads, heads)
        assert np.array_equal(undone, weights)


def _logits(folder: Path, gguf_file: str | None, tokenizer) -> torch.Tensor:
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    rows = []
    for prompt in CHECK_PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        with torch.no_grad():
            rows.append(model(tokenizer(text, return_tensors="pt").input_ids).logits[0])
    return torch.cat(rows)


@pytest.mark.parametrize("dtype, tolerance", [("f16", 1e-2), ("q8_0", 5e-2), ("f32", 1e-5)])
def test_gguf_round_trip_matches_the_run(env, tmp_path, dtype, tolerance):
    _, data_dir, _ = env
    final = data_dir / "runs" / "full" / "final"
    out = tmp_path / f"full-{dtype}.gguf"
    code, printed = _cli("export-gguf", "run:full", "--data-dir", str(data_dir), "--dtype", dtype, "--out", str(out))
    assert code == 0 and f"wrote {out}" in printed
    tokenizer = AutoTokenizer.from_pretrained(final)
    worst = float((_logits(final, None, tokenizer) - _logits(tmp_path, out.name, tokenizer)).abs().max())
    assert worst <= tolerance, f"{dtype}: logits differ by up to {worst}"
    modelfile = (tmp_path / "Modelfile").read_text(encoding="utf-8")
    assert f"FROM ./{out.name}" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "SYSTEM" in modelfile
    if dtype != "f16":
        return  # the tokenizer and the layout are the same in both files: checked once
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    assert back.chat_template == tokenizer.chat_template  # the chat template survives
    for prompt in CHECK_PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        assert back(text).input_ids == tokenizer(text).input_ids
    assert compare_layout(out, gguf_path()) == []  # every key and tensor name llama.cpp's own file has


def test_gguf_of_a_lora_run_is_the_merged_model(env, tmp_path):
    settings, data_dir, _ = env
    out = tmp_path / "lora.gguf"
    assert _cli("export-gguf", "lora", "--data-dir", str(data_dir), "--out", str(out))[0] == 0
    from ctllm.publish.run_model import merged_model, run_spec

    model, tokenizer = merged_model(run_spec("lora", settings), settings)
    base_dir = json.loads((data_dir / "runs" / "lora" / "final" / "ctllm_run.json").read_text())["base_model"]
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": CHECK_PROMPTS[0]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        expected, got, bare = model(ids).logits, back(ids).logits, base(ids).logits
    assert float((expected - got).abs().max()) <= 1e-2
    assert float((expected - bare).abs().max()) > 1e-2  # the adapter changed the model, so the merge is tested
