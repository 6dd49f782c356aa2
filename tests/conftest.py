"""Shared fixtures: isolated settings, the embedded model (converted once per machine), tiny models."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctllm.settings import Settings

REPO = Path(__file__).resolve().parent.parent
# Converted models survive between test runs on one machine (CI converts once, ~30 s).
MODEL_CACHE = Path(os.environ.get("CTLLM_TEST_MODEL_CACHE", REPO / ".cache" / "test-models")).resolve()
ARTIFACTS = REPO / "tests" / "artifacts"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data").ensure_dirs()


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder (converted from its GGUF once)."""
    from ctllm.models.embedded import ensure_embedded

    return ensure_embedded(MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path) -> Path:
    """A 2-layer, 32-wide Llama with the embedded model's tokenizer and chat template."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(MODEL_CACHE / "tiny-llama", embedded_model_dir)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def english_until_told() -> Iterator[None]:
    """Each test starts in English: a handler called directly sets its session's language for the rest of the thread
    (``ctllm.ui.i18n.use_language``), so a 中文 request in one test made the next test's texts Chinese."""
    i18n = sys.modules.get("ctllm.ui.i18n")  # not imported for tests without the UI (it imports gradio)
    if i18n is None:
        yield
        return
    with i18n.speaking("en"):
        yield
