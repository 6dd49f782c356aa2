"""``python -m ctllm export-gguf run:NAME --dtype f16|q8_0|f32 --out FILE``: a Llama-family run (a LoRA merged first) as
a GGUF for llama.cpp and Ollama, with an Ollama Modelfile beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctllm.settings import Settings

NAME = "export-gguf"
HELP = "export a finished Llama-family run as a GGUF file (f16, q8_0 or f32) with an Ollama Modelfile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run:NAME, NAME or latest-run")
    # Here the settings' --dtype (the dtype a model loads in) is the file's weight type: the export always loads
    # the model in float32 on the CPU.
    dtype = next(action for action in parser._actions if "--dtype" in action.option_strings)
    dtype.dest, dtype.choices, dtype.default = "gguf_dtype", ("f16", "q8_0", "f32"), "f16"
    dtype.help, dtype.metavar = "weights in the file: f16 (half precision), q8_0 (8-bit blocks) or f32 (exact)", None
    parser.add_argument("--out", type=Path, help="the GGUF file (default: <run>/gguf/<run>-<dtype>.gguf)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Lazy: torch, transformers and gguf take seconds to import; the other commands do not need them.
    from ctllm.publish.gguf_export import export_run_gguf
    from ctllm.publish.run_model import run_dir_of, run_spec

    spec = run_spec(args.run, settings)
    run_dir = run_dir_of(spec)
    out = args.out or run_dir / "gguf" / f"{run_dir.name}-{args.gguf_dtype}.gguf"
    result = export_run_gguf(spec, settings, out, args.gguf_dtype)
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.tensors} tensors, {result.dtype})")
    for note in result.notes:
        print(f"  {note}")
    print(f"wrote {result.modelfile}: ollama create {run_dir.name} -f {result.modelfile}")
    return 0
