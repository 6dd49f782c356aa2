"""The DPO training loop on accelerate: plain PyTorch, read top to bottom (see :func:`train`).

One optimizer step takes ``batch_size x grad_accum x processes`` pairs, planned up front from the seed, so
the step contents depend only on that product: batch 8 x accumulation 1 trains exactly like batch 1 x
accumulation 8, two processes like one with the same global batch, and a resumed run like an uninterrupted
one. Each micro-batch's mean loss is scaled by its share of the step's pairs, so the gradient is the mean
over the step's pairs however they are split.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ctllm.dpo.batching import length_grouped_batches
from ctllm.dpo.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from ctllm.dpo.config import COLLECTION_PREFIX, TrainConfig, merge
from ctllm.dpo.heap import Heap
from ctllm.dpo.lean_model import LeanModel, check_lean
from ctllm.dpo.losses import LossConfig, compute_loss
from ctllm.dpo.reference import precompute_reference_logps, reference_cache_key
from ctllm.dpo.shared_prompt import check_shared_prompt, pair_forward, tokens_seen
from ctllm.dpo.snapshot import read_snapshot, write_snapshot
from ctllm.dpo.tokenize import TokenizedPair, tokenize_pairs
from ctllm.errors import UserError
from ctllm.pairs.schema import Pair
from ctllm.paths import REPO_ROOT
from ctllm.runs import RunDir, now_iso, read_config, read_status
from ctllm.settings import Settings

# Fields whose change would make a resumed run differ from the one it continues.
RESUME_FIELDS = (
    "model", "ref_model", "data", "eval_data", "eval_split", "eval_fraction", "languages", "loss_type", "beta",
    "label_smoothing", "rpo_alpha", "lr", "batch_size", "grad_accum", "epochs", "max_steps", "max_length",
    "max_prompt_length", "warmup_ratio", "weight_decay", "scheduler", "max_grad_norm", "lora", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "seed",
)


class TrainingStopped(Exception):
    """The run ended early; ``state`` is "failed" or "cancelled"."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


@dataclass
class RunResult:
    state: str  # finished | failed | cancelled
    run_dir: Path
    step: int
    total_steps: int
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # last train metrics, eval_* ones and behaviour


# --------------------------------------------------------------------------------------------------------------
# Data


def _find_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # presets name shipped assets relative to the repository
    if not path.exists():
        raise UserError(f"config field 'data': file {text!r} does not exist")
    return path


def load_pairs(source: str, settings: Settings, field_name: str = "data") -> list[Pair]:
    """Pairs from a file any reader accepts, or from ``collection:NAME`` in the store."""
    if source.startswith(COLLECTION_PREFIX):
        from ctllm.pairs.store import Store

        name = source[len(COLLECTION_PREFIX):].strip()
        if not settings.db_path.exists():
            raise UserError(f"config field '{field_name}': there is no pairs store at {settings.db_path}")
        with Store(settings.db_path) as store:
            if store.find_collection(name) is None:
                known = ", ".join(c.name for c in store.list_collections()) or "none"
                raise UserError(f"config field '{field_name}': no collection named {name!r} (collections: {known})")
            pairs = store.collection_pairs(name)  # latest versions with annotators' labels applied
        if not pairs:
            raise UserError(f"config field '{field_name}': collection {name!r} holds no pairs")
        return pairs
    from ctllm.pairs.readers import read_pairs

    path = _find_file(source)
    result = read_pairs(path)
    if not result.pairs:
        detail = f"; first problem: {result.errors[0]}" if result.errors else ""
        raise UserError(f"config field '{field_name}': {path} holds no usable pairs{detail}")
    return list(result.pairs)


def split_eval(pairs: list[Pair], config: TrainConfig, settings: Settings) -> tuple[list[Pair], list[Pair], str]:
    """(train pairs, held-out pairs, how the split was made), both limited to ``config.languages`` if given."""
    if config.languages:
        train, held, how = split_eval(pairs, merge(config, {"languages": []}), settings)
        keep = set(config.languages)
        train, held = [p for p in train if p.language in keep], [p for p in held if p.language in keep]
        if not train:
            raise UserError(f"config field 'languages' = {config.languages}: no training pair is in these languages")
        return train, held, f"{how}; languages {', '.join(config.languages)} only"
    if config.eval_data:
        return pairs, load_pairs(config.eval_data, settings, "eval_data"), f"eval_data {config.eval_data}"
    held = [p for p in pairs if str(p.meta.get("split", "")) == config.eval_split]
    if held:
        rest = [p for p in pairs if str(p.meta.get("split", "")) != config.eval_split]
        return rest, held, f"pairs with split == {config.eval_split!r}"
    if config.eval_fraction <= 0 or len(pairs) < 2:
        return pairs, [], "no held-out pairs"
    count = max(1, round(len(pairs) * config.eval_fraction))
    chosen = set(random.Random(f"ctllm-eval:{config.seed}").sample(range(len(pairs)), count))
    train = [p for i, p in enumerate(pairs) if i not in chosen]
    held = [p for i, p in enumerate(pairs) if i in chosen]
    return train, held, f"{config.eval_fraction:.0%} of the pairs drawn with seed {config.seed}"


# --------------------------------------------------------------------------------------------------------------
# The step plan


@dataclass(frozen=True)
class PlannedStep:
    epoch: int
    positions: tuple[int, ...]  # indices into the tokenized train items
    epoch_progress: float  # epoch as a float after this step (TRL's "epoch")


def plan_steps(items: Sequence[TokenizedPair], config: TrainConfig, world_size: int) -> list[PlannedStep]:
    """Every optimizer step of the run, in order; a function of the seed, the data and the global batch only."""
    global_batch = config.batch_size * config.grad_accum * world_size
    steps: list[PlannedStep] = []
    epoch = 0
    while True:
        batches = length_grouped_batches(items, global_batch, config.seed, epoch)
        # Every process needs at least one pair of the step (a short last step may not have enough).
        batches = [b for b in batches if len(b) >= world_size]
        for k, batch in enumerate(batches):
            steps.append(PlannedStep(epoch, tuple(batch), epoch + (k + 1) / len(batches)))
        epoch += 1
        if not batches:
            break
        if config.max_steps and len(steps) >= config.max_steps:
            return steps[: config.max_steps]
        if not config.max_steps and epoch >= config.epochs:
            return steps
    return steps


def rank_micro_batches(step: PlannedStep, items: Sequence[TokenizedPair], world_size: int, rank: int,
                       batch_size: int, max_tokens: int = 0, shared: bool = False) -> list[list[int]]:
    """This process's share of a step, cut into micro-batches of similar lengths (little padding).

    A micro-batch holds at most ``batch_size`` pairs and, with ``max_tokens``, at most that many tokens (but at
    least one pair): a bound on activation memory that leaves the step's gradient unchanged.
    """
    ordered = sorted(step.positions, key=lambda p: -items[p].length)
    mine = ordered[rank::world_size]
    batches: list[list[int]] = [[]]
    for position in mine:
        current = batches[-1]
        grown = [items[p] for p in current + [position]]
        if current and (len(current) >= batch_size or (max_tokens and tokens_seen(grown, shared) > max_tokens)):
            batches.append([position])
        else:
            current.append(position)
    return [b for b in batches if b]


# --------------------------------------------------------------------------------------------------------------
# Models and the reference


def _resolve_dtype(config: TrainConfig, settings: Settings, device: torch.device) -> torch.dtype:
    name = (config.dtype or settings.dtype or "auto").lower()
    if name in ("auto", "float32", "fp32"):
        return torch.float32  # trainable weights stay fp32; on CUDA bf16 comes from autocast (mixed_precision)
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise UserError(f"config field 'dtype' = {name!r} must be auto, float32, bfloat16 or float16")
    if device.type == "cpu":
        return torch.float32  # no fast half precision on a CPU (bf16 is ~400x slower here)
    return table[name]


def disable_dropout(model: torch.nn.Module) -> None:
    """DPO trains with dropout off (the policy and reference log-probs must be comparable)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout_rate"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


@dataclass
class Reference:
    """Where the reference log-probs come from; ``description`` goes into config.yaml and status.json."""

    description: str
    identity: str = ""  # what the reference cache key names: spec, folder and its time stamp
    model: torch.nn.Module | None = None  # a separate frozen model
    adapter_disabled: bool = False  # the policy with its LoRA adapter disabled
    tables: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # precomputed, by split

    def logps(self, split: str, items: Sequence[TokenizedPair], policy: torch.nn.Module, accelerator: Any,
              pad_id: int, shared: bool) -> tuple[torch.Tensor, ...]:
        """(chosen, rejected, chosen_tokens, rejected_tokens) for ``items``."""
        table = self.tables.get(split)
        if table is not None:
            index = torch.tensor([item.index for item in items], device=accelerator.device)
            return tuple(table[key][index] for key in ("chosen", "rejected", "chosen_tokens", "rejected_tokens"))
        with torch.no_grad(), accelerator.autocast():
            if self.adapter_disabled:
                with policy.disable_adapter():
                    out = pair_forward(policy, items, pad_id, shared)
            else:
                out = pair_forward(self.model, items, pad_id, shared)
        return out.chosen_logps.detach(), out.rejected_logps.detach(), out.chosen_tokens, out.rejected_tokens


# --------------------------------------------------------------------------------------------------------------
# Signals


class StopSignal:
    """SIGTERM/SIGINT: during training steps, stop at the end of the step (then checkpoint); otherwise at once."""

    def __init__(self) -> None:
        self.requested = False
        self.defer = False
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.defer:
            raise TrainingStopped("cancelled", f"stopped by {signal.Signals(signum).name}")


# --------------------------------------------------------------------------------------------------------------
# Logging


def _setup_logger(run_dir: RunDir, is_main: bool) -> logging.Logger:
    logger = logging.getLogger("ctllm.dpo.train")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    logger.addHandler(stream)
    if is_main and not _stderr_is(run_dir.log_path):
        file_handler = logging.FileHandler(run_dir.log_path, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


def _stderr_is(path: Path) -> bool:
    """True when stderr already goes to ``path`` (a job started with its output in train.log)."""
    try:
        return path.exists() and os.path.samestat(os.fstat(sys.stderr.fileno()), path.stat())
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------------------------
# Metrics across micro-batches and processes

TOKEN_WEIGHTED = {"logits/chosen": "chosen_tokens", "logits/rejected": "rejected_tokens"}


class MetricSums:
    """Weighted sums of per-micro-batch means, reduced over processes into per-step means."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.pairs = 0
        self.tokens = 0

    def add(self, metrics: dict[str, float], pairs: int, counts: dict[str, int], tokens: int) -> None:
        for key, value in metrics.items():
            weight = counts[TOKEN_WEIGHTED[key]] if key in TOKEN_WEIGHTED else pairs
            self.values[key] = self.values.get(key, 0.0) + value * weight
            self.weights[key] = self.weights.get(key, 0.0) + weight
        self.pairs += pairs
        self.tokens += tokens

    def reduce(self, accelerator: Any, keys: Sequence[str]) -> tuple[dict[str, float], int, int]:
        """(means over every process, total pairs, total tokens). ``keys`` must be the same on every process."""
        flat = [self.values.get(k, 0.0) for k in keys] + [self.weights.get(k, 0.0) for k in keys]
        local = torch.tensor(flat + [self.pairs, self.tokens], dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum").cpu().tolist()
        n = len(keys)
        means = {k: (total[i] / total[n + i] if total[n + i] else 0.0) for i, k in enumerate(keys)}
        return means, int(total[2 * n]), int(total[2 * n + 1])


def _run_micro_batch(
    model: Any, unwrapped: Any, reference: Reference, split: str, items: Sequence[TokenizedPair], pad_id: int,
    loss_cfg: LossConfig, accelerator: Any, shared: bool, collect: list[tuple] | None = None,
) -> tuple[torch.Tensor, dict[str, float], dict[str, int], int]:
    """Forward the policy (and the reference if not precomputed) on one micro-batch; return loss and metrics.

    The token count is that of the pairs' rows (prompt twice), whichever forward ran: tokens/s compare across
    engines. ``collect``: gets one row per pair, (index, chosen, rejected, ref chosen, ref rejected log-probs,
    chosen tokens, rejected tokens).
    """
    out = pair_forward(model, items, pad_id, shared)
    ref_c, ref_r, ref_ct, ref_rt = reference.logps(split, items, unwrapped, accelerator, pad_id, shared)
    loss, metrics = compute_loss(out, ref_c, ref_r, loss_cfg, ref_ct, ref_rt)
    if collect is not None:
        columns = [t.detach().float().cpu().tolist() for t in (out.chosen_logps, out.rejected_logps, ref_c, ref_r)]
        counts = [t.cpu().tolist() for t in (out.chosen_tokens, out.rejected_tokens)]
        collect += [(item.index, *(c[i] for c in columns), *(int(n[i]) for n in counts))
                    for i, item in enumerate(items)]
    counts = {"chosen_tokens": int(out.chosen_tokens.sum()), "rejected_tokens": int(out.rejected_tokens.sum())}
    return loss, metrics, counts, tokens_seen(items, shared=False)


def evaluate(model: Any, reference: Reference, items: Sequence[TokenizedPair], pad_id: int, batch_size: int,
             loss_cfg: LossConfig, accelerator: Any, keys: Sequence[str], shared: bool,
             collect: list[tuple] | None = None) -> dict[str, float]:
    """Held-out metrics (``eval_`` prefixed) over all eval items, batches shared round-robin by the processes.

    ``collect``: gets every pair's log-probs (see ``_run_micro_batch``), from all processes.
    """
    unwrapped = accelerator.unwrap_model(model)
    batches = length_grouped_batches(items, batch_size, seed=0, epoch=0, shuffle=False)
    sums = MetricSums()
    rows: list[tuple] | None = [] if collect is not None else None
    was_training = unwrapped.training
    unwrapped.eval()
    with torch.no_grad():
        for i, positions in enumerate(batches):
            if i % accelerator.num_processes != accelerator.process_index:
                continue
            with accelerator.autocast():
                _, metrics, counts, tokens = _run_micro_batch(
                    unwrapped, unwrapped, reference, "eval", [items[p] for p in positions], pad_id, loss_cfg,
                    accelerator, shared, rows)
            sums.add(metrics, len(positions), counts, tokens)
    if was_training:
        unwrapped.train()
    means, _, _ = sums.reduce(accelerator, keys)
    if collect is not None and rows is not None:
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        collect += rows
    return {f"eval_{k}": v for k, v in means.items()}


# --------------------------------------------------------------------------------------------------------------
# Setup helpers


def metric_keys(config: TrainConfig) -> list[str]:
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]
    return keys + (["nll_loss"] if config.rpo_alpha > 0 else [])


def make_accelerator(config: TrainConfig, settings: Settings) -> tuple[Any, TrainConfig, Path]:
    """(Accelerator, config with run_name and output_dir filled in, run dir).

    On a CUDA-less machine the processes use the CPU and gloo. ``cpu=True`` matters there: without it, processes
    started by ``accelerate launch --multi_gpu`` each believe they are alone (world size 1) and train independently.
    """
    from accelerate import Accelerator, PartialState

    device = (config.device or settings.device or "auto").lower()
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config field 'device' = {device!r}: CUDA is not available here; use cpu or auto")
    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(int(device.split(":", 1)[1]))
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_bf16_supported() else "no"
    if use_cpu and precision != "no":
        raise UserError(f"config field 'mixed_precision' = {precision!r} needs CUDA; use no or auto on a CPU")
    state = PartialState(cpu=use_cpu)
    name = config.run_name or _agree(state, time.strftime("dpo-%Y%m%d-%H%M%S"))
    path = (Path(config.output_dir).expanduser() if config.output_dir else settings.runs_dir / name).resolve()
    config = merge(config, {"run_name": name, "output_dir": str(path)})
    log_with = None
    if config.report_to == "tensorboard":
        from accelerate.utils import is_tensorboard_available

        log_with = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=precision, log_with=log_with, project_dir=str(path))
    return accelerator, config, path


def _agree(state: Any, value: Any) -> Any:
    """The main process's value on every process (e.g. a run name made from the clock)."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _check_fresh(run_dir: RunDir) -> None:
    """A new run may only use an empty folder, or one a job prepared (status queued, nothing trained)."""
    state = read_status(run_dir.path).get("state")
    trained = run_dir.metrics_path.exists() or latest_checkpoint(run_dir.checkpoints_dir) or run_dir.final_dir.exists()
    if trained or state not in (None, "queued"):
        raise UserError(f"run folder {run_dir.path} already holds a run (state {state or 'unknown'}): "
                        "resume it with --resume, or choose another run_name")


def _check_resumable(run_dir: RunDir, config: TrainConfig, world_size: int) -> None:
    stored = read_config(run_dir.path)
    if not stored:
        raise UserError(f"cannot resume: {run_dir.config_path} is missing")
    changed = [k for k in RESUME_FIELDS if k in stored and merge(TrainConfig(), {k: stored[k]}).to_dict()[k]
               != config.to_dict()[k]]
    if changed:
        detail = ", ".join(f"{k}: {stored[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise UserError(f"cannot resume {run_dir.path}: these fields differ from the run's config.yaml: {detail}")
    stored_world = (stored.get("resolved") or {}).get("world_size")
    if stored_world and int(stored_world) != world_size:
        raise UserError(f"cannot resume {run_dir.path}: it ran on {stored_world} process(es), this is {world_size}; "
                        "the global batch and data order depend on it")


def _load_data(config: TrainConfig, settings: Settings, run_dir: RunDir, resume: bool,
               accelerator: Any, log: logging.Logger) -> tuple[list[Pair], list[Pair], dict[str, Any]]:
    """Train and held-out pairs. A new run snapshots them into the run dir; a resumed one reads its snapshots."""
    if resume and run_dir.data_path.exists():
        train_pairs = read_snapshot(run_dir.data_path)
        eval_pairs = read_snapshot(run_dir.eval_data_path) if run_dir.eval_data_path.exists() else []
        how = "read back from the run's snapshots"
    else:
        train_pairs, eval_pairs, how = split_eval(load_pairs(config.data, settings), config, settings)
    from ctllm.dpo.snapshot import pairs_hash

    info = {"data_hash": pairs_hash(train_pairs), "eval_data_hash": pairs_hash(eval_pairs) if eval_pairs else None,
            "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "eval_split": how}
    if accelerator.is_main_process and not (resume and run_dir.data_path.exists()):
        write_snapshot(train_pairs, run_dir.data_path)
        if eval_pairs:
            write_snapshot(eval_pairs, run_dir.eval_data_path)
    log.info("data: %d train pairs, %d held out (%s); data hash %s", len(train_pairs), len(eval_pairs), how,
             info["data_hash"][:16])
    return train_pairs, eval_pairs, info


def _load_models(config: TrainConfig, settings: Settings, accelerator: Any, log: logging.Logger,
                 ) -> tuple[torch.nn.Module, Any, Reference, Any]:
    """(policy, tokenizer, reference, policy spec). The reference is chosen as DESIGN.md says, never silently.

    With precompute_ref and the SFT model as reference, no copy is made: the untrained policy computes them.
    """
    from ctllm.models.loading import load_model
    from ctllm.models.registry import resolve_spec

    dtype = _resolve_dtype(config, settings, accelerator.device)
    load_settings = settings.with_(device="cpu", dtype=str(dtype).replace("torch.", ""))  # accelerate places it
    spec = resolve_spec(config.model, settings)
    ref_spec = resolve_spec(config.reference_spec(), settings)
    loaded = load_model(spec, load_settings, trainable=True)
    policy, tokenizer = loaded.model, loaded.tokenizer
    same_reference = not config.ref_model or config.ref_model == config.model
    identity = _model_identity(ref_spec if not same_reference else spec)
    if not same_reference:
        ref_model = _freeze(load_model(ref_spec, load_settings, trainable=False).model)
        reference = Reference(f"frozen copy of {ref_spec.label} ({ref_spec.ref}), given as ref_model", model=ref_model)
    elif spec.is_adapter:
        ref_model = _freeze(load_model(spec, load_settings, trainable=False).model)
        reference = Reference(
            f"frozen copy of the starting SFT adapter {spec.path} on its base {spec.base} "
            "(not the bare base: the policy starts from the adapter)", model=ref_model)
    elif config.lora:
        reference = Reference(f"{spec.label} ({spec.ref}): the policy's base with the LoRA adapter disabled",
                              adapter_disabled=True)
    else:
        reference = Reference(f"frozen copy of the SFT model {spec.label} ({spec.ref})")
        if not config.precompute_ref:
            reference.model = _freeze(copy.deepcopy(policy))
    if spec.is_adapter and not config.lora:
        policy = policy.merge_and_unload()  # full fine-tuning of SFT base + adapter
        log.info("model: %s merged into its base for full fine-tuning", spec.path)
    reference.identity = f"{identity}|{'lora-disabled' if reference.adapter_disabled else 'model'}"
    log.info("policy: %s; reference: %s", spec.label, reference.description)
    return policy, tokenizer, reference, spec


def _model_identity(spec: Any) -> str:
    stamp = ""
    if spec.kind != "hub":
        for name in ("adapter_config.json", "config.json"):
            if (Path(spec.path) / name).is_file():
                stamp = str((Path(spec.path) / name).stat().st_mtime_ns)
                break
    return f"{spec.ref}|{spec.path}|{spec.base}|{stamp}"


def _apply_lora(policy: torch.nn.Module, config: TrainConfig, log: logging.Logger) -> torch.nn.Module:
    if not config.lora:
        return policy
    if hasattr(policy, "peft_config"):
        log.info("LoRA: training the starting adapter's own weights (its r/alpha/targets; lora_* fields unused)")
        return policy
    from peft import LoraConfig, get_peft_model

    targets: Any = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")
    model = get_peft_model(policy, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%d on %s: %s trainable of %s parameters", config.lora_r, config.lora_alpha,
             targets, f"{trainable:,}", f"{total:,}")
    return model


def reference_layout(steps: list[PlannedStep], items: Sequence[TokenizedPair], config: TrainConfig, world: int,
                     shared: bool) -> list[list[int]]:
    """The first epoch's micro-batches of every process, then any pair they leave out (max_steps, a short last step).

    Reference log-probs computed in the very batches the policy sees give bit-identical numbers at step 1, so a
    run starts at exactly ln 2 with accuracy 0, as without precomputation.
    """
    batches: list[list[int]] = []
    for step in (s for s in steps if s.epoch == 0):
        for rank in range(world):
            batches += rank_micro_batches(step, items, world, rank, config.batch_size, config.max_forward_tokens,
                                          shared)
    covered = {p for batch in batches for p in batch}
    rest = [p for p in range(len(items)) if p not in covered]
    return batches + [rest[i: i + config.batch_size] for i in range(0, len(rest), config.batch_size)]


def _precompute(reference: Reference, policy: torch.nn.Module, split_items: dict[str, list[TokenizedPair]],
                layouts: dict[str, list[list[int]]], pad_id: int, config: TrainConfig, settings: Settings,
                info: dict[str, Any], accelerator: Any, log: logging.Logger, shared: bool) -> None:
    """One no-grad pass per split; the main process computes and caches, the others read its cache."""
    model = reference.model if reference.model is not None else policy  # LoRA not applied yet: the bare base
    model.to(accelerator.device)
    cache_dir = settings.data_dir / "cache" / "reference"
    for split, items in split_items.items():
        if not items:
            continue
        data_hash = info["data_hash"] if split == "train" else info["eval_data_hash"]
        layout = hashlib.sha256(json.dumps(layouts[split]).encode()).hexdigest()[:16]
        key = reference_cache_key(reference.identity, data_hash, config.max_length,
                                  max_prompt_length=config.max_prompt_length, layout=layout, shared=shared)
        started = time.perf_counter()
        with accelerator.main_process_first(), accelerator.autocast():
            table = precompute_reference_logps(
                model, items, pad_id, config.batch_size, cache_dir, key, batches=layouts[split],
                forward=lambda m, chunk: pair_forward(m, chunk, pad_id, shared))
        reference.tables[split] = {k: v.to(accelerator.device) for k, v in table.items()}
        log.info("reference log-probs for %d %s pairs ready in %.1f s (cache %s)", len(items), split,
                 time.perf_counter() - started, key)
    if reference.model is not None:
        reference.model = None  # no longer needed: free its memory
    reference.description += "; its log-probs precomputed once and cached"


def _make_lean(policy: torch.nn.Module, reference: Reference, items: Sequence[TokenizedPair], pad_id: int,
               config: TrainConfig, accelerator: Any, log: logging.Logger) -> LeanModel:
    """Lean activations on the policy (and a separate reference, so both give the same numbers) when they fit.

    The reference's identity (its log-probs' cache key) records whether the model computing them is lean: the two
    forwards agree only to float rounding, and a run starts at exactly ln 2 only with the same one.
    """
    if not config.lean_activations or accelerator.mixed_precision != "no":
        reason = "off in the config" if not config.lean_activations else "not used with mixed precision"
        log.info("activations: the model's own autograd (%s)", reason)
        return LeanModel(policy)
    lean, how = check_lean(policy, items, pad_id)
    log.info("activations: %s", f"lean ({how})" if lean.active else f"the model's own autograd ({how})")
    reference_lean = lean.active
    if lean.active and reference.model is not None:  # another model may not fit: checked on its own
        reference_swap, ref_how = check_lean(reference.model.to(accelerator.device), items, pad_id)
        reference_lean = reference_swap.active
        log.info("reference activations: %s", ref_how)
    if reference_lean:
        reference.identity += "|lean"
    return lean


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D tensors), as HF Trainer and nanoGPT do."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates in place: the per-tensor loop's temporaries (two of the embedding's size) would
    # add to the step's peak on a CPU.
    fused = all(p.device.type == "cpu" for p in params) or None
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.999), eps=1e-8,
                             fused=fused)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(config.scheduler, config.scheduler)
    warmup = math.ceil(config.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _save_final(run_dir: RunDir, model: torch.nn.Module, tokenizer: Any, config: TrainConfig,
                resolved: dict[str, Any]) -> None:
    final = run_dir.final_dir
    tmp = final.with_name("final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base_config = getattr(model, "config", None)
    if base_config is not None and hasattr(base_config, "use_cache"):
        base_config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    note = {"run_name": config.run_name, "base_model": config.model, "lora": config.lora,
            "reference": resolved.get("reference"), "data_hash": resolved.get("data_hash"),
            "steps": resolved.get("total_steps")}
    (tmp / "ctllm_run.json").write_text(json.dumps(note, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


# --------------------------------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, settings: Settings, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Run (or resume) a DPO training run; every outcome is written to the run dir's status.json.

    Returns a RunResult for finished, failed (non-finite loss) and cancelled (SIGTERM) runs; raises UserError for
    a bad config or data (status "failed" too, once the run dir exists).
    """
    config.validate()
    accelerator, config, path = make_accelerator(config, settings)
    run_dir = RunDir(path, writer=accelerator.is_main_process)
    if accelerator.is_main_process:
        if resume:
            _check_resumable(run_dir, config, accelerator.num_processes)
        else:
            _check_fresh(run_dir)
    accelerator.wait_for_everyone()
    run_dir.create()
    if not resume:  # written again with everything resolved once the data and models are loaded
        run_dir.write_config(config.to_dict(), {"world_size": accelerator.num_processes})
    log = _setup_logger(run_dir, accelerator.is_main_process)
    stop = StopSignal().install()
    status = run_dir.update_status(
        state="running", run_name=config.run_name, pid=os.getpid(), started=now_iso(), finished=None, error=None,
        step=read_status(run_dir.path).get("step", 0) if resume else 0, world_size=accelerator.num_processes,
    )
    try:
        return _train(config, settings, resume, accelerator, run_dir, log, stop, show_progress)
    except TrainingStopped as stopped:
        log.error("%s", stopped) if stopped.state == "failed" else log.warning("%s", stopped)
        status = run_dir.update_status(state=stopped.state, error=str(stopped), finished=now_iso())
        return RunResult(stopped.state, path, int(status.get("step", 0)), int(status.get("total_steps") or 0),
                         str(stopped))
    except UserError as error:
        for handler in log.handlers:  # the CLI prints the message on stderr; keep it in train.log too
            if isinstance(handler, logging.FileHandler):
                handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (error,), None))
        run_dir.update_status(state="failed", error=str(error), finished=now_iso())
        raise
    except BaseException as error:
        log.exception("the run failed")
        state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
        run_dir.update_status(state=state, error=f"{type(error).__name__}: {error}", finished=now_iso())
        raise
    finally:
        stop.uninstall()
        if accelerator.trackers:
            accelerator.end_training()
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def _train(config: TrainConfig, settings: Settings, resume: bool, accelerator: Any, run_dir: RunDir,
           log: logging.Logger, stop: StopSignal, show_progress: bool) -> RunResult:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    heap = Heap()
    set_seed(config.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    log.info("run %s in %s: %d process(es) on %s, mixed precision %s", config.run_name, run_dir.path, world,
             accelerator.device, accelerator.mixed_precision)

    # 1. Data: snapshot, split, tokenize.
    train_pairs, eval_pairs, info = _load_data(config, settings, run_dir, resume, accelerator, log)
    policy, tokenizer, reference, spec = _load_models(config, settings, accelerator, log)
    max_prompt = config.max_prompt_length or None
    tokenized = tokenize_pairs(tokenizer, train_pairs, config.max_length, max_prompt)
    eval_tokenized = tokenize_pairs(tokenizer, eval_pairs, config.max_length, max_prompt) if eval_pairs else None
    items = tokenized.items
    eval_items = eval_tokenized.items if eval_tokenized else []
    log.info("train: %s", tokenized.summary())
    if eval_tokenized:
        log.info("eval: %s", eval_tokenized.summary())
    if not items:
        raise UserError(f"config field 'max_length' = {config.max_length}: every training pair was dropped "
                        "(the prompts alone fill max_length)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    info.update(dropped_pairs=tokenized.dropped, truncated_pairs=tokenized.truncated,
                eval_dropped_pairs=eval_tokenized.dropped if eval_tokenized else 0)

    # 2. Models and the plan: dropout off, the forward, the steps, reference log-probs (once, up front if asked).
    disable_dropout(policy)
    policy.to(accelerator.device)
    lean = _make_lean(policy, reference, items, pad_id, config, accelerator, log)
    shared = False
    if config.share_prompt and not config.gradient_checkpointing:  # checkpointing turns the model's cache off
        shared, how = check_shared_prompt(policy, items, pad_id)
        log.info("forward: %s", f"prompt computed once per pair, {how}" if shared else f"concatenated rows ({how})")
    steps = plan_steps(items, config, world)
    total_steps = len(steps)
    if config.precompute_ref:
        layouts = {"train": reference_layout(steps, items, config, world, shared),
                   "eval": length_grouped_batches(eval_items, config.resolved_eval_batch_size(), 0, 0, shuffle=False)}
        _precompute(reference, policy, {"train": items, "eval": eval_items}, layouts, pad_id, config, settings, info,
                    accelerator, log, shared)
    policy = _apply_lora(policy, config, log)
    if reference.model is not None:
        reference.model.to(accelerator.device)
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(policy, "config", None) is not None:
        policy.config.use_cache = False
    policy.train()  # dropout is already zero; train mode keeps gradient checkpointing active
    heap.trim_between_layers(policy)

    # 3. The optimizer and the schedule.
    optimizer = _optimizer(policy, config)
    scheduler = _scheduler(optimizer, config, total_steps)
    model, optimizer = accelerator.prepare(policy, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    loss_cfg = LossConfig(config.beta, config.loss_type, config.label_smoothing, config.rpo_alpha)
    keys = metric_keys(config)
    resolved = {"reference": reference.description, "model_label": spec.label, "world_size": world,
                "global_batch": config.batch_size * config.grad_accum * world, "total_steps": total_steps,
                "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
                "dropped_pairs": tokenized.dropped, **info}
    run_dir.write_config(config.to_dict(), resolved)
    run_dir.update_status(total_steps=total_steps, reference=reference.description, data_hash=info["data_hash"],
                          dropped_pairs=tokenized.dropped, truncated_pairs=tokenized.truncated,
                          train_pairs=len(items), eval_pairs=len(eval_items))
    log.info("plan: %d steps of %d pairs (batch %d x accumulation %d x %d process(es)), %s schedule, warmup %d",
             total_steps, resolved["global_batch"], config.batch_size, config.grad_accum, world, config.scheduler,
             math.ceil(config.warmup_ratio * total_steps))

    # 4. Resume: weights, optimizer, schedule and RNG from the last checkpoint; the plan is the same by construction.
    start = 0
    checkpoint = latest_checkpoint(run_dir.checkpoints_dir) if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, unwrapped, optimizer, scheduler)
        start = int(state["step"])
        log.info("resumed from %s at step %d of %d", checkpoint, start, total_steps)
    elif resume:
        log.info("no checkpoint in %s: starting from step 0", run_dir.checkpoints_dir)
    if resume:
        run_dir.truncate_metrics(start)  # steps after the checkpoint are trained (and logged) again
    if accelerator.log_with:  # TensorBoard events in <run dir>/tensorboard
        accelerator.init_trackers("tensorboard", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                         for k, v in config.to_dict().items()})

    # 5. Train.
    bar = tqdm(total=total_steps, initial=start, desc="DPO", unit="step", dynamic_ncols=True,
               disable=not (show_progress and accelerator.is_main_process))
    window: list[dict[str, float]] = []
    window_pairs = window_tokens = 0
    window_time = 0.0
    last: dict[str, Any] = {}
    stop.defer = True
    step = start
    for step_index in range(start, total_steps):
        planned = steps[step_index]
        step = step_index + 1
        started = time.perf_counter()
        micro_batches = rank_micro_batches(planned, items, world, rank, config.batch_size, config.max_forward_tokens,
                                           shared)
        n_step = len(planned.positions)
        sums = MetricSums()
        for m, positions in enumerate(micro_batches):
            syncing = m == len(micro_batches) - 1
            context = accelerator.no_sync(model) if not syncing else contextlib.nullcontext()
            with context:
                loss, metrics, counts, tokens = _run_micro_batch(model, unwrapped, reference, "train",
                                                                 [items[p] for p in positions], pad_id, loss_cfg,
                                                                 accelerator, shared)
                heap.trim()  # the forward's temporaries, before backward reaches the step's peak
                # The mean over this micro-batch, weighted by its share of the step's pairs; DDP averages over
                # processes, hence the factor world.
                accelerator.backward(loss * (len(positions) * world / n_step))
            sums.add(metrics, len(positions), counts, tokens)
        heap.trim()  # the activations, before the optimizer step
        means, pairs, tokens = sums.reduce(accelerator, keys)
        if not math.isfinite(means["loss"]):
            raise TrainingStopped("failed", f"loss became {means['loss']} at step {step} of {total_steps} "
                                  f"(epoch {planned.epoch + 1}); the run stopped before applying it. Try a lower "
                                  "lr or beta, or check the data of this step.")
        max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            raise TrainingStopped("failed", f"gradient norm became {grad_norm} at step {step} of {total_steps}; "
                                  "the run stopped before applying it. Try a lower lr.")
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        heap.trim()
        elapsed = time.perf_counter() - started

        window.append(means)
        window_pairs += pairs
        window_tokens += tokens
        window_time += elapsed
        bar.update(1)
        bar.set_postfix(loss=f"{means['loss']:.4f}", pairs_s=f"{pairs / elapsed:.2f}")
        if step % config.logging_every == 0 or step == total_steps:
            record = {k: sum(w[k] for w in window) / len(window) for k in keys}
            record.update(step=step, epoch=round(planned.epoch_progress, 4), learning_rate=learning_rate,
                          grad_norm=grad_norm, pairs_per_second=window_pairs / window_time,
                          tokens_per_second=window_tokens / window_time)
            run_dir.append_metrics(record)
            if accelerator.log_with:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            log.info("step %d/%d loss %.4f acc %.3f margin %.4f lr %.3g grad_norm %.3f %.2f pairs/s", step,
                     total_steps, record["loss"], record["rewards/accuracies"], record["rewards/margins"],
                     learning_rate, grad_norm, record["pairs_per_second"])
            last = record
            window, window_pairs, window_tokens, window_time = [], 0, 0, 0.0
            run_dir.update_status(step=step, last_metrics=record)
        if eval_items and config.eval_every and step % config.eval_every == 0 and step != total_steps:
            _log_eval(model, reference, eval_items, pad_id, config, loss_cfg, accelerator, keys, run_dir, step,
                      planned.epoch_progress, log, shared)
        stop_now = _agree_flag(accelerator, stop.requested)
        if stop_now or (config.save_every and step % config.save_every == 0 and step != total_steps):
            _checkpoint(run_dir, accelerator, unwrapped, optimizer, scheduler, step, config, planned)
        if stop_now:
            bar.close()
            raise TrainingStopped("cancelled", f"stopped by a signal after step {step} of {total_steps}; "
                                  f"checkpoint saved in {run_dir.checkpoints_dir / checkpoint_name(step)} "
                                  "(resume with --resume)")
    bar.close()

    # 6. Final held-out pass, the model folder, the evaluation against the reference and the summary.
    summary: dict[str, Any] = {f"train_{k}": v for k, v in last.items() if k in keys}
    held_out: list[tuple] = []
    if eval_items:
        summary.update(_log_eval(model, reference, eval_items, pad_id, config, loss_cfg, accelerator, keys, run_dir,
                                 step, steps[-1].epoch_progress if steps else 0.0, log, shared, held_out))
    lean.restore()  # the saved model and the evaluation's generation use the model's own forward
    heap.detach()
    if accelerator.is_main_process:
        _save_final(run_dir, unwrapped, tokenizer, config, resolved)
        log.info("model saved in %s", run_dir.final_dir)
    accelerator.wait_for_everyone()
    if config.final_eval and accelerator.is_main_process:
        reference.model = None  # the evaluation loads the reference only if its answers are not cached
        summary.update(_final_eval(config, settings, run_dir, unwrapped, tokenizer, spec, len(eval_pairs),
                                   held_out, log, stop))
    accelerator.wait_for_everyone()
    run_dir.update_status(state="finished", step=step, finished=now_iso(), summary=summary)
    log.info("finished: %s", _format_summary(summary))
    return RunResult("finished", run_dir.path, step, total_steps, metrics=summary)


def _agree_flag(accelerator: Any, flag: bool) -> bool:
    """True on every process when any process has it (so all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _log_eval(model: Any, reference: Reference, eval_items: list[TokenizedPair], pad_id: int, config: TrainConfig,
              loss_cfg: LossConfig, accelerator: Any, keys: list[str], run_dir: RunDir, step: int, epoch: float,
              log: logging.Logger, shared: bool, collect: list[tuple] | None = None) -> dict[str, float]:
    started = time.perf_counter()
    metrics = evaluate(model, reference, eval_items, pad_id, config.resolved_eval_batch_size(), loss_cfg,
                       accelerator, keys, shared, collect)
    record = {**metrics, "step": step, "epoch": round(epoch, 4)}
    run_dir.append_metrics(record)
    if accelerator.log_with:
        accelerator.log(metrics, step=step)
    log.info("eval at step %d (%.1f s): loss %.4f accuracy %.3f margin %.4f", step, time.perf_counter() - started,
             metrics["eval_loss"], metrics["eval_rewards/accuracies"], metrics["eval_rewards/margins"])
    return metrics


def _final_eval(config: TrainConfig, settings: Settings, run_dir: RunDir, model: Any, tokenizer: Any, spec: Any,
                eval_count: int, held_out: list[tuple], log: logging.Logger, stop: StopSignal) -> dict[str, Any]:
    """The trained model against its reference (``ctllm.evaluate.evaluate_run``), written to eval.json; returns
    what the summary keeps. The model is saved already: a signal (before or during it) or an error leaves the run
    finished, with ``final_eval`` saying "cancelled" or why it failed."""
    started = time.perf_counter()
    try:
        stop.defer = False  # from here a signal cancels the evaluation, not the finished run
        if stop.requested:
            raise TrainingStopped("cancelled", "a signal arrived while the model was saved")
        from dataclasses import replace

        from ctllm.evaluate.metrics import PairLogps
        from ctllm.evaluate.report import headline_text
        from ctllm.evaluate.run import EVAL_JSON, evaluate_run, run_model_ref, run_summary, summary_headline
        from ctllm.models.loading import LoadedModel

        logps: list[PairLogps | None] = [None] * eval_count  # pairs dropped by tokenization stay None
        for index, *values, chosen_tokens, rejected_tokens in held_out:
            logps[index] = PairLogps(*values, chosen_tokens, rejected_tokens)
        # Named as the registry names the run; no path, so its answers are never taken from the cache.
        policy_spec = replace(spec, kind="run", ref=run_model_ref(run_dir.path, settings), path="",
                              label=f"run {config.run_name}")
        model.eval()
        result = evaluate_run(
            run_dir.path, settings, policy=LoadedModel.wrap(model, tokenizer, policy_spec),
            prompts=config.final_eval_prompts or None, max_new_tokens=config.final_eval_max_new_tokens,
            limit=config.final_eval_limit or None, batch_size=16, pair_logps=logps, log=log.info)
        summary = {**run_summary(result), "final_eval": EVAL_JSON}
        log.info("final evaluation in %.1f s, written to %s; SFT → DPO: %s", time.perf_counter() - started,
                 run_dir.path / EVAL_JSON, headline_text(summary_headline(summary)) or "no numbers")
        return summary
    except TrainingStopped:
        log.warning("final evaluation cancelled by a signal; the trained model is in %s", run_dir.final_dir)
        return {"final_eval": "cancelled"}
    except Exception as error:  # the trained model is saved; only its evaluation is missing
        log.exception("final evaluation failed; the trained model is in %s", run_dir.final_dir)
        return {"final_eval": f"failed: {type(error).__name__}: {error}"}
    finally:
        stop.defer = True  # what is left (the status) is written whatever arrives now


def _checkpoint(run_dir: RunDir, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, step: int,
                config: TrainConfig, planned: PlannedStep) -> None:
    if accelerator.is_main_process:
        folder = save_checkpoint(run_dir.checkpoints_dir / checkpoint_name(step), model, optimizer, scheduler, step,
                                 extra={"epoch": planned.epoch_progress, "run_name": config.run_name})
        prune_checkpoints(run_dir.checkpoints_dir, config.save_total_limit)
        logging.getLogger("ctllm.dpo.train").info("checkpoint saved: %s", folder)
    accelerator.wait_for_everyone()


def _format_summary(summary: dict[str, Any]) -> str:
    parts = []
    for key, value in summary.items():
        parts.append(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)
