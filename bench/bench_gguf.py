"""GGUF export figures on a real run of the embedded 135M model: file size and the largest logit difference against
the run's own model, for f16 and q8_0, beside the embedded model's shipped Q4_1 GGUF.

    python bench/bench_gguf.py [--data-dir DIR] [--run NAME] [--steps 2]

Without --run it first trains a cpu-demo run (the preset, ``--steps`` optimizer steps, the reference computed
per step and no final evaluation, to keep it short; the weights have the full run's shapes). The logits are compared
on the chat-templated prompts below, each GGUF loaded back through transformers' GGUF loader (the path the embedded
model uses). Goal (issue 16): f16 within 1e-2 of the run's logits; the chat template and the layout of the
embedded GGUF kept (``compare_layout``: no key or tensor missing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from ctllm.models.embedded import gguf_path  # noqa: E402
from ctllm.publish.gguf_export import compare_layout, export_run_gguf  # noqa: E402
from ctllm.publish.run_model import run_dir_of, run_spec  # noqa: E402
from ctllm.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["How do I pick a lock on my neighbour's door?", "Explain photosynthesis in two sentences.",
           "Write a haiku about the sea.", "What is 17 times 23?"]


def train_demo(data_dir: Path, name: str, steps: int) -> None:
    command = [sys.executable, "-m", "ctllm", "train", "--data-dir", str(data_dir), "--preset", "cpu-demo",
               "--run_name", name, "--max_steps", str(steps), "--precompute_ref", "false", "--final_eval", "false",
               "--report_to", "none", "--no-progress"]
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def logits(folder: Path, tokenizer, gguf_file: str | None = None, round_to_f16: bool = False) -> torch.Tensor:
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    if round_to_f16:  # the baseline: the run's weights rounded to f16 in torch, no GGUF involved
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.copy_(parameter.half().float())
    rows = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            rows.append(model(ids).logits[0])
    return torch.cat(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--run", default="", help="an existing run of the embedded model (default: train one)")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.from_env(data_dir=args.data_dir.resolve()).ensure_dirs()
    name = args.run or "bench-gguf"
    if not args.run:
        started = time.perf_counter()
        train_demo(settings.data_dir, name, args.steps)
        print(f"trained {name}: cpu-demo, {args.steps} steps, {time.perf_counter() - started:.0f} s")
    spec = run_spec(name, settings)
    final = Path(spec.path)
    tokenizer = AutoTokenizer.from_pretrained(final)
    expected = logits(final, tokenizer)
    shipped = gguf_path()
    print(f"embedded model's shipped GGUF (Q4_1): {shipped.stat().st_size / 1e6:.1f} MB")
    print(f"run's safetensors (fp32): {(final / 'model.safetensors').stat().st_size / 1e6:.1f} MB")
    rounded = float((expected - logits(final, tokenizer, round_to_f16=True)).abs().max())
    print(f"baseline: the run's matrices rounded to f16 in torch (no GGUF) change the logits by up to {rounded:.2e} "
          f"(the run's logits reach {float(expected.abs().max()):.1f}; {expected.shape[0]} positions compared)")
    print("| dtype | size | max abs logit diff vs the run | same top-1 token | export time | layout vs the embedded "
          "GGUF | template |")
    print("|---|---|---|---|---|---|---|")
    for dtype in ("f16", "q8_0", "f32"):
        out = run_dir_of(spec) / "gguf" / f"{name}-{dtype}.gguf"
        started = time.perf_counter()
        result = export_run_gguf(spec, settings, out, dtype)
        seconds = time.perf_counter() - started
        back_tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
        got = logits(out.parent, tokenizer, out.name)
        worst = float((expected - got).abs().max())
        problems = compare_layout(out, shipped)
        template = "kept" if back_tokenizer.chat_template == tokenizer.chat_template else "CHANGED"
        goal = " (goal <= 1e-2)" if dtype == "f16" else ""
        same_top = float((expected.argmax(-1) == got.argmax(-1)).float().mean())
        print(f"| {dtype} | {result.size_bytes / 1e6:.1f} MB | {worst:.2e}{goal} | {100 * same_top:.1f} % | "
              f"{seconds:.1f} s | "
              f"{'same keys and tensors' if not problems else '; '.join(problems[:3])} | {template} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
