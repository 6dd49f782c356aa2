"""The models of a run: the policy, its reference (chosen as docs/architecture.md says, never silently), LoRA, the lean
forward, the shared-prompt forward and the reference log-probs computed up front."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctllm.dpo.batching import length_grouped_batches
from ctllm.dpo.config import TrainConfig, is_reference_free
from ctllm.dpo.data import RunData
from ctllm.dpo.lean_model import LeanModel, check_lean
from ctllm.dpo.objective import Reference
from ctllm.dpo.packing import check_packing
from ctllm.dpo.plan import PlannedStep, Share, reference_layout
from ctllm.dpo.reference import precompute_reference_logps, reference_cache_key
from ctllm.dpo.run_state import Run
from ctllm.dpo.shared_prompt import check_shared_prompt, pair_forward
from ctllm.dpo.tokenize import TokenizedPair
from ctllm.errors import UserError
from ctllm.models.embedded import is_converted
from ctllm.models.loading import load_model
from ctllm.models.registry import EMBEDDED, resolve_spec
from ctllm.settings import Settings


@dataclass
class Models:
    policy: torch.nn.Module
    tokenizer: Any
    reference: Reference
    spec: Any  # the policy's ModelSpec
    lean: LeanModel | None = None  # set by ``make_lean``
    shared: bool = False  # the prompt computed once per pair; set by ``choose_forward``
    packed: bool = False  # the pairs in one padding-free row; set by ``choose_forward``

    @property
    def pad_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def resolve_dtype(config: TrainConfig, settings: Settings, device: torch.device) -> torch.dtype:
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


def needs_conversion(run: Run) -> bool:
    """Whether loading the models first converts the embedded model from its GGUF (about 30 s, once a machine)."""
    return EMBEDDED in (run.config.model, run.config.reference_spec()) and not is_converted(run.settings.models_dir)


def load_models(run: Run) -> Models:
    """The policy, its tokenizer and spec, and the reference.

    A reference-free loss (simpo, cpo, orpo, alphapo) loads no reference and copies nothing. With precompute_ref
    and the SFT model as reference, no copy is made: the untrained policy computes them.
    """
    config, settings = run.config, run.settings
    dtype = resolve_dtype(config, settings, run.accelerator.device)
    load_settings = settings.with_(device="cpu", dtype=str(dtype).replace("torch.", ""))  # accelerate places it
    spec = resolve_spec(config.model, settings)
    ref_spec = resolve_spec(config.reference_spec(), settings)
    loaded = load_model(spec, load_settings, trainable=True)
    policy = loaded.model
    same_reference = not config.ref_model or config.ref_model == config.model
    identity = _model_identity(ref_spec if not same_reference else spec)
    if is_reference_free(config.loss_type):
        reference = Reference(f"none (reference-free: {config.loss_type})", free=True)
        unused = [f"{name}={getattr(config, name)!r}" for name in ("ref_model", "precompute_ref")
                  if getattr(config, name)]
        if unused:  # e.g. kept from a preset made for DPO
            run.log.info("not used by the reference-free loss %s: %s", config.loss_type, ", ".join(unused))
    elif not same_reference:
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
        run.log.info("model: %s merged into its base for full fine-tuning", spec.path)
    reference.identity = f"{identity}|{'lora-disabled' if reference.adapter_disabled else 'model'}"
    run.log.info("policy: %s; reference: %s", spec.label, reference.description)
    return Models(policy, loaded.tokenizer, reference, spec)


def _model_identity(spec: Any) -> str:
    stamp = ""
    if spec.kind != "hub":
        for name in ("adapter_config.json", "config.json"):
            if (Path(spec.path) / name).is_file():
                stamp = str((Path(spec.path) / name).stat().st_mtime_ns)
                break
    return f"{spec.ref}|{spec.path}|{spec.base}|{stamp}"


def apply_lora(run: Run, policy: torch.nn.Module) -> torch.nn.Module:
    config, log = run.config, run.log
    if not config.lora:
        return policy
    if hasattr(policy, "peft_config"):
        log.info("LoRA: training the starting adapter's own weights (its r/alpha/targets; lora_* fields unused)")
        return policy
    # Lazy: importing peft takes seconds, and only LoRA runs and adapters need it.
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


def make_lean(run: Run, models: Models, items: Sequence[TokenizedPair]) -> None:
    """Lean activations on the policy (and a separate reference, so both give the same numbers) when they fit.

    The reference's identity (its log-probs' cache key) records whether the model computing them is lean: the two
    forwards agree only to float rounding, and a run starts at exactly ln 2 only with the same one.
    """
    config, log, reference = run.config, run.log, models.reference
    if not config.lean_activations or run.accelerator.mixed_precision != "no":
        reason = "off in the config" if not config.lean_activations else "not used with mixed precision"
        log.info("activations: the model's own autograd (%s)", reason)
        models.lean = LeanModel(models.policy)
        return
    lean, how = check_lean(models.policy, items, models.pad_id)
    log.info("activations: %s", f"lean ({how})" if lean.active else f"the model's own autograd ({how})")
    reference_lean = lean.active
    if lean.active and reference.model is not None:  # another model may not fit: checked on its own
        reference_swap, ref_how = check_lean(reference.model.to(run.accelerator.device), items, models.pad_id)
        reference_lean = reference_swap.active
        log.info("reference activations: %s", ref_how)
    if reference_lean:
        reference.identity += "|lean"
    models.lean = lean


def choose_forward(run: Run, models: Models, items: Sequence[TokenizedPair]) -> None:
    """The prompt computed once per pair, or the pairs packed into one row, when the config asks and the model
    gives the same numbers that way."""
    config = run.config
    if config.packing:
        models.packed, how = check_packing(models.policy, items, models.pad_id)
        run.log.info("forward: %s", f"pairs packed into one row, {how}" if models.packed
                     else f"packing off ({how})")
    if config.share_prompt and not config.gradient_checkpointing:  # checkpointing turns the model's cache off
        models.shared, how = check_shared_prompt(models.policy, items, models.pad_id)
        run.log.info("forward: %s", f"prompt computed once per pair, {how}" if models.shared
                     else f"concatenated rows ({how})")


def precompute_reference(run: Run, models: Models, data: RunData, steps: list[PlannedStep]) -> None:
    """One no-grad pass per split; the main process computes and caches, the others read its cache."""
    config, accelerator, reference, shared = run.config, run.accelerator, models.reference, models.shared
    packed = models.packed
    layouts = {"train": reference_layout(steps, data.items, Share.of(config, run.world, run.rank, shared or packed)),
               "eval": length_grouped_batches(data.eval_items, config.resolved_eval_batch_size(), 0, 0, shuffle=False)}
    splits = {"train": (data.items, data.info["data_hash"]), "eval": (data.eval_items, data.info["eval_data_hash"])}
    model = reference.model if reference.model is not None else models.policy  # LoRA not applied yet: the bare base
    model.to(accelerator.device)
    cache_dir = run.settings.data_dir / "cache" / "reference"
    pad_id = models.pad_id
    for split, (items, data_hash) in splits.items():
        if not items:
            continue
        layout = hashlib.sha256(json.dumps(layouts[split]).encode()).hexdigest()[:16]
        key = reference_cache_key(reference.identity, data_hash, config.max_length,
                                  max_prompt_length=config.max_prompt_length, layout=layout, shared=shared,
                                  **({"packed": True} if packed else {}))
        started = time.perf_counter()
        with accelerator.main_process_first(), accelerator.autocast():
            table = precompute_reference_logps(
                model, items, pad_id, config.batch_size, cache_dir, key, batches=layouts[split],
                forward=lambda m, chunk: pair_forward(m, chunk, pad_id, shared, packed),
                progress=run.run_dir.phase_progress("reference"))
        reference.tables[split] = {k: v.to(accelerator.device) for k, v in table.items()}
        run.log.info("reference log-probs for %d %s pairs ready in %.1f s (cache %s)", len(items), split,
                     time.perf_counter() - started, key)
    if reference.model is not None:
        reference.model = None  # no longer needed: free its memory
    reference.description += "; its log-probs precomputed once and cached"
