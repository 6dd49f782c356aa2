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

# The math of each: ctllm/dpo/losses.py. Reference-based: TRL 1.16's DPOConfig.loss_type; several may be summed
# (loss_type "sigmoid,bco_pair,sft" with loss_weights, MPO). Reference-free: trl.experimental's CPO, SimPO, AlphaPO
# and ORPO (one at a time; they load no reference model).
REFERENCE_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
                    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
REFERENCE_FREE_LOSSES = ("simpo", "cpo", "orpo", "alphapo")
LOSS_TYPES = REFERENCE_LOSSES + REFERENCE_FREE_LOSSES
LABEL_SMOOTHING_LOSSES = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired", "cpo", "simpo", "alphapo")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# The losses TRL lets an f-divergence other than reverse KL reach (f-DPO's β·log Z(x) cancels only in their margin).
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
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
    loss_weights: list[float] = field(default_factory=list)  # one per loss_type entry when several; []: all 1
    f_divergence_type: str = "reverse_kl"  # f-DPO (arXiv 2309.16240); only with the losses in F_DIVERGENCE_LOSSES
    f_alpha_divergence_coef: float = 0.5  # α of alpha_divergence
    discopop_tau: float = 0.05  # τ of the discopop loss
    ld_alpha: float = 1.0  # LD-DPO (arXiv 2409.06411) weight of tokens past the shorter answer; 1: off
    use_weighting: bool = False  # WPO (arXiv 2406.11827) weights
    simpo_gamma: float = 0.5  # SimPO / AlphaPO target reward margin γ (TRL CPOConfig.simpo_gamma)
    cpo_alpha: float = 1.0  # weight of the chosen NLL in the cpo loss (TRL CPOConfig.cpo_alpha)
    orpo_lambda: float = 0.1  # ORPO's λ on the odds-ratio term (TRL calls it ORPOConfig.beta)
    alphapo_alpha: float = 0.25  # AlphaPO's reward shape α (TRL CPOConfig.alpha); 0 would be SimPO
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
    # Packing: a micro-batch's pairs in one padding-free row, each prompt once (ctllm.dpo.packing; checked first).
    # Off by default until a row-length cap bounds its dense L x L mask (bench/bench_packing.py measures it).
    packing: bool = False
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
            *loss_field_checks(self),
            # The pure losses have both (ctllm.dpo.losses); the training forward does not give per-token values yet.
            ("ld_alpha", self.ld_alpha == 1, "is not supported by the training engine yet (its forward sums the "
             "log-probs before the loss); use 1"),
            ("use_weighting", not self.use_weighting, "is not supported by the training engine yet (WPO needs "
             "log sum p^2 per token from the forward); use false"),
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
        for name, ok, message in checks:
            if not ok:
                raise UserError(f"config field '{name}' = {getattr(self, name)!r} {message}")
        return self


def loss_names(loss_type: str) -> tuple[str, ...]:
    """The losses a loss_type names: one, or several comma-separated (summed with loss_weights)."""
    return tuple(name.strip() for name in loss_type.split(",") if name.strip())


def is_reference_free(loss_type: str) -> bool:
    return any(name in REFERENCE_FREE_LOSSES for name in loss_names(loss_type))


def loss_field_checks(c: Any) -> list[tuple[str, bool, str]]:
    """(field, ok, why) for the objective's fields of ``c`` (a TrainConfig or ctllm.dpo.losses.LossConfig): the one
    place they are validated."""
    names = loss_names(c.loss_type)
    unknown = [n for n in names if n not in LOSS_TYPES]
    free = [n for n in names if n in REFERENCE_FREE_LOSSES]
    weights = list(c.loss_weights)
    checks = [
        ("loss_type", bool(names) and not unknown,
         f"must be one of {', '.join(LOSS_TYPES)} (or several reference-based ones, comma-separated)"),
        ("loss_type", not free or len(names) == 1, "may combine reference-based losses only; "
         f"{', '.join(free)} trains on its own"),
        ("loss_type", len(set(names)) == len(names), "names a loss twice"),
        ("loss_weights", not weights or len(weights) == len(names),
         f"needs one weight per loss_type entry ({len(names)}), got {len(weights)}"),
        ("loss_weights", all(w >= 0 for w in weights), "must be >= 0"),
        ("beta", c.beta > 0, "must be > 0"),
        ("label_smoothing", 0 <= c.label_smoothing < 0.5, "must be in [0, 0.5)"),
        ("label_smoothing", "exo_pair" not in names or c.label_smoothing > 0,
         "must be > 0 for exo_pair (the EXO paper uses 1e-3)"),
        ("label_smoothing", not c.label_smoothing or bool(set(names) & set(LABEL_SMOOTHING_LOSSES)),
         f"is not used by the {c.loss_type} loss: set it to 0"),
        ("rpo_alpha", c.rpo_alpha >= 0, "must be >= 0"),
        ("rpo_alpha", not c.rpo_alpha or not {"cpo", "orpo"} & set(names),
         "must be 0 with cpo and orpo: they have their own NLL term (cpo_alpha; orpo's is always on)"),
        ("f_divergence_type", c.f_divergence_type in F_DIVERGENCES, f"must be one of {', '.join(F_DIVERGENCES)}"),
        ("f_divergence_type", c.f_divergence_type == "reverse_kl" or set(names) <= set(F_DIVERGENCE_LOSSES),
         f"other than reverse_kl works only with {', '.join(F_DIVERGENCE_LOSSES)}"),
        ("f_alpha_divergence_coef", c.f_alpha_divergence_coef > 0, "must be > 0"),
        ("discopop_tau", c.discopop_tau > 0, "must be > 0"),
        ("ld_alpha", 0 <= c.ld_alpha <= 1, "must be in [0, 1] (1: off)"),
        ("ld_alpha", c.ld_alpha == 1 or not free, "is for the reference-based losses"),
        ("use_weighting", not c.use_weighting or not ({"aot", "aot_unpaired"} & set(names)),
         "does not work with aot / aot_unpaired (they sort the pairs, so per-pair weights would not line up)"),
        ("use_weighting", not c.use_weighting or not free, "is for the reference-based losses"),
        ("simpo_gamma", c.simpo_gamma >= 0, "must be >= 0"),
        ("cpo_alpha", c.cpo_alpha >= 0, "must be >= 0"),
        ("orpo_lambda", c.orpo_lambda > 0, "must be > 0"),
        ("alphapo_alpha", c.alphapo_alpha != 0 or "alphapo" not in names, "must not be 0 (that is simpo)"),
    ]
    return checks


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
            item_type = typing.get_args(kind)[0]
            if isinstance(value, str):
                value = [item.strip() for item in value.split(",") if item.strip()]
            if isinstance(value, (list, tuple)):
                if item_type is float and any(isinstance(item, bool) for item in value):
                    raise ValueError("expected numbers")
                return [item_type(item) for item in value]
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
