"""A DPO run's configuration: one flat dataclass of plain values, read from and written to YAML.

Precedence when a run is assembled: defaults < preset < config file < ``--key value`` overrides.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ctllm.errors import UserError

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")  # the math of each: ctllm/dpo/losses.py
SCHEDULERS = ("linear", "cosine", "constant")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
COLLECTION_PREFIX = "collection:"
DISTRIBUTED = ("ddp", "fsdp")  # fsdp: FSDP2 full sharding through accelerate (ctllm/dpo/accelerator.py)


@dataclass
class TrainConfig:
    # What to train and on what.
    run_name: str = ""  # empty: dpo-<timestamp>
    output_dir: str = ""  # empty: <runs_dir>/<run_name>
    model: str = "embedded"  # SFT model spec the policy starts from (registry spec, folder, hub id, adapter folder)
    ref_model: str = ""  # empty: the same as model (the DPO default); set it to use a different reference
    data: str = ""  # pairs file (any format the readers accept) or "collection:NAME"
    eval_data: str = ""  # empty: hold out pairs whose meta split == eval_split, else eval_fraction of data
    eval_split: str = "test"
    eval_fraction: float = 0.05
    languages: list[str] = field(default_factory=list)  # keep only pairs in these languages (zh, en, other); []: all
    # Objective.
    loss_type: str = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0  # 0: off; > 0 adds alpha * NLL of the chosen completion
    # Optimisation.
    lr: float = 5e-6
    batch_size: int = 4  # pairs per device per micro-batch
    grad_accum: int = 1
    max_forward_tokens: int = 0  # > 0: split micro-batches so one forward holds at most this many tokens (>= 1 pair);
    # bounds activation memory, the step's gradient stays the same. 0: no limit
    epochs: int = 1
    max_steps: int = 0  # 0: run the epochs; > 0: stop after this many optimizer steps
    max_length: int = 512
    max_prompt_length: int = 0  # 0: no separate prompt limit
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "linear"
    max_grad_norm: float = 1.0  # 0: no clipping (the norm is still logged)
    # LoRA (peft); off means full fine-tuning.
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # Reference.
    precompute_ref: bool = False  # one no-grad pass before training, cached by model + data + max_length
    # Bookkeeping.
    eval_every: int = 0  # optimizer steps between evaluations; 0: only at the end
    eval_batch_size: int = 0  # 0: 2 x batch_size
    save_every: int = 0  # optimizer steps between checkpoints; 0: only at the end (and on SIGTERM)
    save_total_limit: int = 2  # checkpoints kept (oldest removed first)
    logging_every: int = 1
    seed: int = 42
    device: str = ""  # empty: the settings' device (auto | cpu | cuda | cuda:N)
    dtype: str = ""  # empty: the settings' dtype; the trainable weights stay fp32 on a CPU
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA when supported, none on a CPU
    gradient_checkpointing: bool = False
    share_prompt: bool = True  # run each prompt once for both answers (checked against the plain forward first)
    lean_activations: bool = True  # keep fewer activations for backward (ctllm.dpo.lean_model; checked first);
    # used without mixed precision (on a CPU, or a GPU with mixed_precision no)
    num_threads: int = 0  # torch CPU threads; 0: torch's default
    # Several processes: ddp replicates the model; fsdp shards parameters, gradients and optimizer state (FSDP2,
    # full sharding; also chosen by an accelerate config file with distributed_type FSDP). See the README.
    distributed: str = "ddp"
    report_to: str = "tensorboard"  # tensorboard | none
    # The end-of-run evaluation against the reference (ctllm.evaluate, written to <run dir>/eval.json): preference
    # accuracy on the held-out pairs (their log-probs from the last held-out pass, no extra forward), and refusal /
    # answer rates on harmful / benign prompt lists under greedy decoding (the reference's answers are cached).
    final_eval: bool = True
    final_eval_prompts: list[str] = field(default_factory=list)  # [harmful:|benign:]FILE; []: the shipped lists
    # in the run's languages that the model can write
    final_eval_limit: int = 0  # prompts per list; 0: all
    final_eval_max_new_tokens: int = 48

    def reference_spec(self) -> str:
        return self.ref_model or self.model

    def resolved_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def validate(self) -> TrainConfig:
        """Raise UserError naming the first field whose value cannot work; return self."""
        checks: list[tuple[str, bool, str]] = [
            ("model", bool(self.model.strip()), "must name a model (registry spec, folder or hub id)"),
            ("data", bool(self.data.strip()), "must name a pairs file or collection:NAME"),
            ("loss_type", self.loss_type in LOSS_TYPES, f"must be one of {', '.join(LOSS_TYPES)}"),
            ("beta", self.beta > 0, "must be > 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 0.5, "must be in [0, 0.5)"),
            ("rpo_alpha", self.rpo_alpha >= 0, "must be >= 0"),
            ("lr", self.lr > 0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"),
            ("max_forward_tokens", self.max_forward_tokens >= 0, "must be >= 0 (0: no limit)"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("max_steps", self.max_steps >= 0, "must be >= 0 (0: run the epochs)"),
            ("max_length", self.max_length >= 8, "must be >= 8"),
            ("max_prompt_length", 0 <= self.max_prompt_length < self.max_length, "must be in [0, max_length)"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("scheduler", self.scheduler in SCHEDULERS, f"must be one of {', '.join(SCHEDULERS)}"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0: no clipping)"),
            ("lora_r", self.lora_r >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "must be >= 1"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("lora_target_modules", bool(self.lora_target_modules), "must list at least one module name"),
            ("eval_fraction", 0 <= self.eval_fraction < 1, "must be in [0, 1)"),
            ("languages", set(self.languages) <= {"zh", "en", "other"}, "may only hold zh, en and other"),
            ("eval_every", self.eval_every >= 0, "must be >= 0"),
            ("eval_batch_size", self.eval_batch_size >= 0, "must be >= 0"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("save_total_limit", self.save_total_limit >= 1, "must be >= 1"),
            ("logging_every", self.logging_every >= 1, "must be >= 1"),
            ("mixed_precision", self.mixed_precision in MIXED_PRECISION,
             f"must be one of {', '.join(MIXED_PRECISION)}"),
            ("report_to", self.report_to in ("tensorboard", "none"), "must be tensorboard or none"),
            ("run_name", re.fullmatch(r"[A-Za-z0-9._-]*", self.run_name) is not None and ".." not in self.run_name,
             "may hold only letters, digits, '.', '_' and '-'"),
            ("final_eval_max_new_tokens", self.final_eval_max_new_tokens >= 1, "must be >= 1"),
            ("final_eval_limit", self.final_eval_limit >= 0, "must be >= 0 (0: every prompt)"),
            ("num_threads", self.num_threads >= 0, "must be >= 0"),
            ("distributed", self.distributed in DISTRIBUTED, f"must be one of {', '.join(DISTRIBUTED)}"),
        ]
        if self.loss_type == "ipo" and self.label_smoothing:
            checks.append(("label_smoothing", False, "is not used by the ipo loss: set it to 0"))
        for name, ok, message in checks:
            if not ok:
                raise UserError(f"config field '{name}' = {getattr(self, name)!r} {message}")
        return self


_FIELD_TYPES = typing.get_type_hints(TrainConfig)
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
# Earlier names still read (presets and run configs written before the end-of-run evaluation replaced the
# behaviour check): old name -> field.
RENAMED = {"behaviour_check": "final_eval", "behaviour_max_new_tokens": "final_eval_max_new_tokens",
           "behaviour_limit": "final_eval_limit"}


def convert_value(name: str, value: Any, origin: str = "") -> Any:
    """Convert ``value`` (a YAML value or a command-line string) to the type of field ``name``."""
    where = f" ({origin})" if origin else ""
    name = RENAMED.get(name, name)
    if name not in _FIELD_TYPES:
        raise UserError(f"unknown config field '{name}'{where}; known fields: {', '.join(FIELD_NAMES)}")
    kind = _FIELD_TYPES[name]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            number = float(value) if isinstance(value, str) and ("e" in value.lower() or "." in value) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError("expected an integer")
            return int(number)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if kind is str:
            return "" if value is None else str(value)
        if typing.get_origin(kind) is list:
            if isinstance(value, str):
                return [item.strip() for item in value.split(",") if item.strip()]
            if isinstance(value, (list, tuple)):
                return [str(item) for item in value]
            raise ValueError("expected a list or a comma-separated string")
    except (TypeError, ValueError) as error:
        raise UserError(f"config field '{name}'{where}: cannot use {value!r}: {error}") from None
    raise UserError(f"config field '{name}'{where}: unsupported type {kind}")


def merge(base: TrainConfig, values: dict[str, Any], origin: str = "") -> TrainConfig:
    """A copy of ``base`` with ``values`` (keys may use '-' or '_') converted and applied."""
    changes = {}
    names = {key: str(key).replace("-", "_") for key in values}
    # Earlier names first, so a field's own name wins when both are given.
    for key in sorted(values, key=lambda k: names[k] not in RENAMED):
        name = RENAMED.get(names[key], names[key])
        changes[name] = convert_value(name, values[key], origin)
    return dataclasses.replace(base, **changes)


def load_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    data.pop("resolved", None)  # a run's config.yaml carries what the run resolved; not an input
    return data


def from_yaml(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    return merge(base or TrainConfig(), load_yaml(path), origin=str(path))
