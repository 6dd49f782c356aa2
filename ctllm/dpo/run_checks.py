"""May this run use its folder: a new run an empty one, a resumed run one whose config it matches."""

from __future__ import annotations

from ctllm.dpo.checkpoint import latest_checkpoint
from ctllm.dpo.config import TrainConfig, merge
from ctllm.errors import UserError
from ctllm.runs import RunDir, read_config, read_status

# Fields whose change would make a resumed run differ from the one it continues.
RESUME_FIELDS = (
    "model", "ref_model", "data", "eval_data", "eval_split", "eval_fraction", "languages", "loss_type", "beta",
    "label_smoothing", "rpo_alpha", "lr", "batch_size", "grad_accum", "epochs", "max_steps", "max_length",
    "max_prompt_length", "warmup_ratio", "weight_decay", "scheduler", "max_grad_norm", "lora", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "seed", "loss_weights", "f_divergence_type", "f_alpha_divergence_coef",
    "discopop_tau", "ld_alpha", "use_weighting", "simpo_gamma", "cpo_alpha", "orpo_lambda", "alphapo_alpha",
)


def check_fresh(run_dir: RunDir) -> None:
    """A new run may only use an empty folder, or one a job prepared (status queued, nothing trained)."""
    state = read_status(run_dir.path).get("state")
    trained = run_dir.metrics_path.exists() or latest_checkpoint(run_dir.checkpoints_dir) or run_dir.final_dir.exists()
    if trained or state not in (None, "queued"):
        raise UserError(f"run folder {run_dir.path} already holds a run (state {state or 'unknown'}): "
                        "resume it with --resume, or choose another run_name")


def check_resumable(run_dir: RunDir, config: TrainConfig, world_size: int) -> None:
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
