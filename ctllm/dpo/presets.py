"""Named starting points for a run: ``assets/presets/<name>.yaml``; every value can still be overridden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctllm.dpo.config import TrainConfig, load_yaml, merge
from ctllm.errors import UserError
from ctllm.paths import ASSETS_DIR

PRESETS_DIR = ASSETS_DIR / "presets"


def list_presets(presets_dir: Path = PRESETS_DIR) -> list[str]:
    return sorted(path.stem for path in Path(presets_dir).glob("*.yaml"))


def preset_values(name: str, presets_dir: Path = PRESETS_DIR) -> dict[str, Any]:
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets(presets_dir)) or "none"
        raise UserError(f"unknown preset {name!r}; known presets: {known}")
    return load_yaml(path)


def load_preset(name: str, base: TrainConfig | None = None, presets_dir: Path = PRESETS_DIR) -> TrainConfig:
    """``base`` (default: the defaults) with the preset's values applied."""
    return merge(base or TrainConfig(), preset_values(name, presets_dir), origin=f"preset {name}")


def resolve_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """defaults < preset < config file < overrides, validated."""
    config = TrainConfig()
    if preset:
        config = load_preset(preset, config)
    if config_file:
        file_values = load_yaml(Path(config_file))
        file_preset = file_values.pop("preset", None)
        if file_preset and not preset:
            config = load_preset(str(file_preset), config)
        config = merge(config, file_values, origin=str(config_file))
    if overrides:
        config = merge(config, overrides, origin="command line")
    return config.validate()
