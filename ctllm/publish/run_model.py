"""A finished run's model for publishing: its folder, and its weights with a LoRA adapter merged into the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctllm.models.loading import load_model
from ctllm.models.registry import RUN_PREFIX, ModelSpec, resolve_spec
from ctllm.settings import Settings


def run_spec(run: str, settings: Settings) -> ModelSpec:
    """``run:NAME``, ``NAME`` or ``latest-run`` resolved to the run's model (a UserError names what is missing)."""
    text = run.strip()
    if not text.startswith(RUN_PREFIX) and text != "latest-run":
        text = RUN_PREFIX + text
    return resolve_spec(text, settings)


def run_dir_of(spec: ModelSpec) -> Path:
    return Path(spec.path).parent  # spec.path is <runs_dir>/<name>/final


def merged_model(spec: ModelSpec, settings: Settings) -> tuple[Any, Any]:
    """(model, tokenizer) in fp32 on the CPU; a LoRA run's adapter merged into its base weights."""
    loaded = load_model(spec, settings.with_(device="cpu", dtype="float32"))
    model = loaded.model.merge_and_unload() if spec.is_adapter else loaded.model
    return model, loaded.tokenizer
