"""The DPO training loop on accelerate: plain PyTorch, read top to bottom (see :func:`_train`).

One optimizer step takes ``batch_size x grad_accum x processes`` pairs, planned up front from the seed
(``ctllm.dpo.plan``). Each micro-batch's mean loss is scaled by its share of the step's pairs, so the gradient is
the mean over the step's pairs however they are split.

Every step function takes the run (``Run``: config, settings, accelerator, run dir, log, stop flag) and what it
works on (``Training``: the models, data, step plan, objective, optimizer and schedule).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ctllm.dpo.accelerator import agree_flag, bytes_per_process, make_accelerator
from ctllm.dpo.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_sharded_checkpoint,
)
from ctllm.dpo.config import TrainConfig, is_reference_free
from ctllm.dpo.data import RunData, load_data, load_pairs, split_eval, tokenize_data
from ctllm.dpo.final_model import gather_full, load_final, save_final
from ctllm.dpo.finished import FinishedRun, OnFinished, PairRow
from ctllm.dpo.losses import LossConfig
from ctllm.dpo.metric_sums import MetricSums, Window, metric_keys
from ctllm.dpo.model_setup import (
    Models,
    apply_lora,
    choose_forward,
    disable_dropout,
    load_models,
    make_lean,
    needs_conversion,
    precompute_reference,
)
from ctllm.dpo.objective import Collected, Objective, Reference
from ctllm.dpo.optim import make_optimizer, make_scheduler, warmup_steps
from ctllm.dpo.plan import PlannedStep, Share, plan_steps, rank_micro_batches
from ctllm.dpo.run_checks import check_fresh, check_resumable
from ctllm.dpo.run_log import close_handlers, format_summary, log_to_file_only, setup_logger
from ctllm.dpo.run_state import Run
from ctllm.dpo.signals import StopSignal, TrainingStopped
from ctllm.errors import UserError
from ctllm.runs import RunDir, now_iso, read_status
from ctllm.settings import Settings

__all__ = [
    "FinishedRun", "OnFinished", "PlannedStep", "Reference", "RunResult", "StopSignal", "TrainingStopped",
    "disable_dropout", "load_pairs", "make_accelerator", "metric_keys", "MetricSums", "plan_steps",
    "rank_micro_batches", "split_eval", "train",
]


@dataclass
class RunResult:
    state: str  # finished | failed | cancelled
    run_dir: Path
    step: int
    total_steps: int
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # last train metrics, eval_* ones and behaviour


@dataclass
class Training:
    """What the training steps use and change, built once by ``_prepare``."""

    models: Models
    data: RunData
    steps: list[PlannedStep]
    objective: Objective
    share: Share  # how this process cuts its share of a step
    model: Any  # the policy as accelerate prepared it (DDP-wrapped with several processes)
    unwrapped: Any
    optimizer: Any
    scheduler: Any
    resolved: dict[str, Any] = field(default_factory=dict)  # config.yaml's resolved block

    @property
    def total_steps(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class StepResult:
    step: int
    planned: PlannedStep
    means: dict[str, float]  # over the step's pairs, every process
    pairs: int
    tokens: int
    grad_norm: float
    learning_rate: float
    seconds: float


# --------------------------------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, settings: Settings, resume: bool = False, show_progress: bool = True,
          on_finished: OnFinished | None = None) -> RunResult:
    """Run (or resume) a DPO training run; every outcome is written to the run dir's status.json.

    Returns a RunResult for finished, failed (non-finite loss) and cancelled (SIGTERM) runs; raises UserError for
    a bad config or data (status "failed" too, once the run dir exists). ``on_finished``: the end-of-run
    evaluation, called on the main process once the model is saved when ``config.final_eval`` is on (see
    ``ctllm.dpo.finished``; ``ctllm.cli.train`` passes ``ctllm.evaluate.end_of_run.evaluate_finished_run``).
    """
    config.validate()
    accelerator, config, path = make_accelerator(config, settings)
    run_dir = RunDir(path, writer=accelerator.is_main_process)
    if accelerator.is_main_process:
        if resume:
            check_resumable(run_dir, config, accelerator.num_processes)
        else:
            check_fresh(run_dir)
    accelerator.wait_for_everyone()
    run_dir.create()
    if not resume:  # written again with everything resolved once the data and models are loaded
        run_dir.write_config(config.to_dict(), {"world_size": accelerator.num_processes})
    log = setup_logger(run_dir.log_path, accelerator.is_main_process)
    run = Run(config, settings, accelerator, run_dir, log, StopSignal().install(), resume, show_progress, on_finished)
    run_dir.update_status(
        state="running", run_name=config.run_name, pid=os.getpid(), started=now_iso(), finished=None, error=None,
        step=read_status(run_dir.path).get("step", 0) if resume else 0, world_size=accelerator.num_processes,
    )
    try:
        return _train(run)
    except TrainingStopped as stopped:
        return _stopped(run, stopped)
    except UserError as error:
        log_to_file_only(log, "error: %s", error)  # the CLI prints the message on stderr
        run_dir.update_status(state="failed", error=str(error), finished=now_iso())
        raise
    except BaseException as error:
        log.exception("the run failed")
        state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
        run_dir.update_status(state=state, error=f"{type(error).__name__}: {error}", finished=now_iso())
        raise
    finally:
        _close(run)


def _train(run: Run) -> RunResult:
    _start(run)
    data = load_data(run)  # 1. data: snapshot, split, tokenize
    run.run_dir.set_phase("converting" if needs_conversion(run) else "loading")
    models = load_models(run)
    run.run_dir.set_phase("tokenizing")
    tokenize_data(run, data, models.tokenizer)
    training = _prepare(run, models, data)  # 2-3. the forward, the plan, reference log-probs, optimizer, schedule
    start = _resume(run, training)  # 4. weights, optimizer, schedule and RNG from the last checkpoint
    run.run_dir.set_phase("training")
    step, last = _train_steps(run, training, start)  # 5. train
    return _finish(run, training, step, last)  # 6. held-out pass, final/, the end-of-run evaluation, summary


def _start(run: Run) -> None:
    if run.config.num_threads:
        torch.set_num_threads(run.config.num_threads)
    set_seed(run.config.seed)
    run.log.info("run %s in %s: %d process(es) on %s, mixed precision %s", run.config.run_name, run.run_dir.path,
                 run.world, run.accelerator.device, run.accelerator.mixed_precision)
    if _sharded(run):
        run.log.info("FSDP2 full sharding over %d processes: parameters, gradients and optimizer state split; "
                     "%s, the model's own forward (share_prompt and lean_activations off)", run.world,
                     "no reference" if is_reference_free(run.config.loss_type)
                     else "reference log-probs precomputed before sharding (precompute_ref on)")
    elif run.config.distributed == "fsdp":
        run.log.info("distributed: fsdp on %d process: nothing to shard, trained unsharded", run.world)


def _sharded(run: Run) -> bool:
    return bool(getattr(run.accelerator, "is_fsdp2", False))


def _stopped(run: Run, stopped: TrainingStopped) -> RunResult:
    run.log.error("%s", stopped) if stopped.state == "failed" else run.log.warning("%s", stopped)
    status = run.run_dir.update_status(state=stopped.state, error=str(stopped), finished=now_iso())
    return RunResult(stopped.state, run.run_dir.path, int(status.get("step", 0)), int(status.get("total_steps") or 0),
                     str(stopped))


def _close(run: Run) -> None:
    run.stop.uninstall()
    if run.accelerator.trackers:
        run.accelerator.end_training()
    close_handlers(run.log)


# --------------------------------------------------------------------------------------------------------------
# Setup: models, plan, optimizer, resume


def _prepare(run: Run, models: Models, data: RunData) -> Training:
    """Dropout off, the lean and shared-prompt forwards, the step plan, reference log-probs (once, up front if
    asked), LoRA, then the optimizer and schedule."""
    config, accelerator = run.config, run.accelerator
    disable_dropout(models.policy)
    models.policy.to(accelerator.device)
    make_lean(run, models, data.items)
    choose_forward(run, models, data.items)
    steps = plan_steps(data.items, config, run.world)
    if config.precompute_ref and not models.reference.free:
        precompute_reference(run, models, data, steps)
    models.policy = policy = apply_lora(run, models.policy)
    if models.reference.model is not None:
        models.reference.model.to(accelerator.device)
    if config.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(policy, "config", None) is not None:
        policy.config.use_cache = False
    policy.train()  # dropout is already zero; train mode keeps gradient checkpointing active
    run.heap.trim_between_layers(policy)
    return _make_training(run, models, data, steps)


def _make_training(run: Run, models: Models, data: RunData, steps: list[PlannedStep]) -> Training:
    config, accelerator = run.config, run.accelerator
    optimizer = make_optimizer(models.policy, config)
    scheduler = make_scheduler(optimizer, config, len(steps))
    model, optimizer = accelerator.prepare(models.policy, optimizer)
    loss = LossConfig.of(config)
    objective = Objective(accelerator, models.reference, loss, models.pad_id, models.shared, metric_keys(config),
                          models.packed)
    share = Share.of(config, run.world, run.rank, models.shared or models.packed)  # both read the prompt once
    training = Training(models, data, steps, objective, share, model, accelerator.unwrap_model(model), optimizer,
                        scheduler)
    _record_plan(run, training)
    return training


def _record_plan(run: Run, training: Training) -> None:
    """config.yaml with everything resolved, status.json's sizes, and the plan in the log."""
    config, accelerator, data, world = run.config, run.accelerator, training.data, run.world
    total_steps, reference = training.total_steps, training.models.reference
    training.resolved = {
        "reference": reference.description, "model_label": training.models.spec.label, "world_size": world,
        "global_batch": config.batch_size * config.grad_accum * world, "total_steps": total_steps,
        "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
        "dropped_pairs": data.dropped, **data.info}
    run.run_dir.write_config(config.to_dict(), training.resolved)
    run.run_dir.update_status(total_steps=total_steps, reference=reference.description,
                              data_hash=data.info["data_hash"], dropped_pairs=data.dropped,
                              truncated_pairs=data.truncated, train_pairs=len(data.items),
                              eval_pairs=len(data.eval_items))
    run.log.info("plan: %d steps of %d pairs (batch %d x accumulation %d x %d process(es)), %s schedule, warmup %d",
                 total_steps, training.resolved["global_batch"], config.batch_size, config.grad_accum, world,
                 config.scheduler, warmup_steps(config, total_steps))


def _resume(run: Run, training: Training) -> int:
    """The step to start after: the last checkpoint's when resuming (the plan is the same by construction)."""
    run_dir, config = run.run_dir, run.config
    start = 0
    checkpoint = latest_checkpoint(run_dir.checkpoints_dir) if run.resume else None
    if checkpoint is not None:
        if _sharded(run):
            state = load_checkpoint(checkpoint, training.model, training.optimizer.optimizer, training.scheduler,
                                    sharded=True)
        else:
            state = load_checkpoint(checkpoint, training.unwrapped, training.optimizer, training.scheduler)
        start = int(state["step"])
        run.log.info("resumed from %s at step %d of %d", checkpoint, start, training.total_steps)
    elif run.resume:
        run.log.info("no checkpoint in %s: starting from step 0", run_dir.checkpoints_dir)
    if run.resume:
        run_dir.truncate_metrics(start)  # steps after the checkpoint are trained (and logged) again
    if run.accelerator.log_with:  # TensorBoard events in <run dir>/tensorboard
        run.accelerator.init_trackers("tensorboard", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.to_dict().items()})
    return start


# --------------------------------------------------------------------------------------------------------------
# Training steps


def _train_steps(run: Run, training: Training, start: int) -> tuple[int, dict[str, Any]]:
    """Steps ``start + 1`` to the last; (the last step, the last logged train metrics)."""
    config, total = run.config, training.total_steps
    window, last, step = Window(), {}, start
    run.stop.defer = True  # from here a signal ends the run at the end of a step, with a checkpoint
    with tqdm(total=total, initial=start, desc="DPO", unit="step", dynamic_ncols=True,
              disable=not (run.show_progress and run.is_main)) as bar:
        for step in range(start + 1, total + 1):
            result = _train_step(run, training, step)
            if step == start + 1:
                _record_bytes(run, training)
            window.add(result.means, result.pairs, result.tokens, result.seconds)
            bar.update(1)
            bar.set_postfix(loss=f"{result.means['loss']:.4f}", pairs_s=f"{result.pairs / result.seconds:.2f}")
            if step % config.logging_every == 0 or step == total:
                last = _log_step(run, training, window, result)
                window = Window()
            _end_step(run, training, result.planned, step)
    return step, last


def _record_bytes(run: Run, training: Training) -> None:
    """What each process holds of the parameters and optimizer state (its shard under FSDP), in status.json."""
    held = bytes_per_process(run.accelerator, training.model, training.optimizer)
    run.run_dir.update_status(bytes_per_process=held)
    run.log.info("held per process (MB): %s of %.2f MB of parameters", ", ".join(
        f"process {r}: parameters {h['parameters'] / 1e6:.2f}, optimizer state {h['optimizer'] / 1e6:.2f}"
        for r, h in enumerate(held)), held[0]["parameters_total"] / 1e6)


def _train_step(run: Run, training: Training, step: int) -> StepResult:
    """One optimizer step; stops the run (state failed) before applying a non-finite loss or gradient."""
    accelerator, total = run.accelerator, training.total_steps
    planned = training.steps[step - 1]
    started = time.perf_counter()
    means, pairs, tokens = _accumulate(run, training, planned)
    if not math.isfinite(means["loss"]):
        raise TrainingStopped("failed", f"loss became {means['loss']} at step {step} of {total} "
                              f"(epoch {planned.epoch + 1}); the run stopped before applying it. Try a lower "
                              "lr or beta, or check the data of this step.")
    max_norm = run.config.max_grad_norm if run.config.max_grad_norm > 0 else float("inf")
    norm = accelerator.clip_grad_norm_(training.model.parameters(), max_norm)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a replicated DTensor
    if not math.isfinite(grad_norm):
        raise TrainingStopped("failed", f"gradient norm became {grad_norm} at step {step} of {total}; "
                              "the run stopped before applying it. Try a lower lr.")
    learning_rate = training.scheduler.get_last_lr()[0]
    training.optimizer.step()
    training.scheduler.step()
    training.optimizer.zero_grad(set_to_none=True)
    run.heap.trim()
    return StepResult(step, planned, means, pairs, tokens, grad_norm, learning_rate, time.perf_counter() - started)


def _accumulate(run: Run, training: Training, planned: PlannedStep) -> tuple[dict[str, float], int, int]:
    """This process's micro-batches of a step, forward and backward; (means over every process, pairs, tokens)."""
    accelerator, model, items = run.accelerator, training.model, training.data.items
    micro_batches = rank_micro_batches(planned, items, training.share)
    n_step = len(planned.positions)
    sums = MetricSums()
    real = len(micro_batches)
    if _sharded(run):  # every forward is collective under FSDP: all processes run as many
        rounds = max(len(rank_micro_batches(planned, items, replace(training.share, rank=r))) for r in range(run.world))
        micro_batches += [micro_batches[-1]] * (rounds - real)  # weighted 0 below
    for m, positions in enumerate(micro_batches):
        syncing = m == len(micro_batches) - 1
        with accelerator.no_sync(model) if not syncing else contextlib.nullcontext():
            batch = [items[p] for p in positions]
            loss, metrics, counts, tokens = training.objective.micro_batch(model, "train", batch)
            run.heap.trim()  # the forward's temporaries, before backward reaches the step's peak
            # The mean over this micro-batch, weighted by its share of the step's pairs; DDP and FSDP average over
            # processes, hence the factor world.
            weight = len(positions) * run.world / n_step if m < real else 0.0
            accelerator.backward(loss * weight)
        if m < real:
            sums.add(metrics, len(positions), counts, tokens)
    run.heap.trim()  # the activations, before the optimizer step
    return sums.reduce(accelerator, training.objective.keys)


def _log_step(run: Run, training: Training, window: Window, result: StepResult) -> dict[str, Any]:
    """The window's mean metrics into metrics.jsonl, TensorBoard, the log and status.json; returns the record."""
    step = result.step
    record: dict[str, Any] = window.means(training.objective.keys)
    record.update(step=step, epoch=round(result.planned.epoch_progress, 4), learning_rate=result.learning_rate,
                  grad_norm=result.grad_norm, pairs_per_second=window.pairs / window.seconds,
                  tokens_per_second=window.tokens / window.seconds)
    run.run_dir.append_metrics(record)
    if run.accelerator.log_with:
        run.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
    run.log.info("step %d/%d loss %.4f acc %.3f margin %.4f lr %.3g grad_norm %.3f %.2f pairs/s", step,
                 training.total_steps, record["loss"], record["rewards/accuracies"], record["rewards/margins"],
                 result.learning_rate, result.grad_norm, record["pairs_per_second"])
    run.run_dir.update_status(step=step, last_metrics=record)
    return record


def _end_step(run: Run, training: Training, planned: PlannedStep, step: int) -> None:
    """The held-out pass and the checkpoint when due; a requested stop ends the run here, checkpointed."""
    config, total = run.config, training.total_steps
    if training.data.eval_items and config.eval_every and step % config.eval_every == 0 and step != total:
        _log_eval(run, training, step, planned.epoch_progress)
    stop_now = agree_flag(run.accelerator, run.stop.requested)
    if stop_now or (config.save_every and step % config.save_every == 0 and step != total):
        _checkpoint(run, training, step, planned.epoch_progress)
    if stop_now:
        raise TrainingStopped("cancelled", f"stopped by a signal after step {step} of {total}; "
                              f"checkpoint saved in {run.run_dir.checkpoints_dir / checkpoint_name(step)} "
                              "(resume with --resume)")


def _log_eval(run: Run, training: Training, step: int, epoch: float,
              collect: Collected | None = None) -> dict[str, float]:
    started = time.perf_counter()
    metrics = training.objective.evaluate(training.model, training.data.eval_items,
                                          run.config.resolved_eval_batch_size(), collect)
    run.run_dir.append_metrics({**metrics, "step": step, "epoch": round(epoch, 4)})
    if run.accelerator.log_with:
        run.accelerator.log(metrics, step=step)
    run.log.info("eval at step %d (%.1f s): loss %.4f accuracy %.3f margin %.4f", step,
                 time.perf_counter() - started, metrics["eval_loss"], metrics["eval_rewards/accuracies"],
                 metrics["eval_rewards/margins"])
    return metrics


def _checkpoint(run: Run, training: Training, step: int, epoch: float) -> None:
    if _sharded(run):
        folder = save_sharded_checkpoint(run.run_dir.checkpoints_dir / checkpoint_name(step), training.model,
                                         training.optimizer.optimizer, training.scheduler, step, run.is_main,
                                         extra={"epoch": epoch, "run_name": run.config.run_name})
        if run.is_main:
            prune_checkpoints(run.run_dir.checkpoints_dir, run.config.save_total_limit)
            run.log.info("checkpoint saved (sharded, %d processes): %s", run.world, folder)
    elif run.is_main:
        folder = save_checkpoint(run.run_dir.checkpoints_dir / checkpoint_name(step), training.unwrapped,
                                 training.optimizer, training.scheduler, step,
                                 extra={"epoch": epoch, "run_name": run.config.run_name})
        prune_checkpoints(run.run_dir.checkpoints_dir, run.config.save_total_limit)
        run.log.info("checkpoint saved: %s", folder)
    run.accelerator.wait_for_everyone()


# --------------------------------------------------------------------------------------------------------------
# The end: held-out pass, the model folder, the end-of-run evaluation, the summary


def _finish(run: Run, training: Training, step: int, last: dict[str, Any]) -> RunResult:
    config, accelerator, models = run.config, run.accelerator, training.models
    summary: dict[str, Any] = {f"train_{k}": v for k, v in last.items() if k in training.objective.keys}
    held_out: Collected = []
    run.run_dir.set_phase("evaluating")
    if training.data.eval_items:
        epoch = training.steps[-1].epoch_progress if training.steps else 0.0
        summary.update(_log_eval(run, training, step, epoch, held_out))
    models.lean.restore()  # the saved model and the evaluation's generation use the model's own forward
    run.heap.detach()
    full = gather_full(training.model) if _sharded(run) else None  # collective: every process gives its shard
    if run.is_main:
        save_final(run.run_dir.final_dir, training.unwrapped, models.tokenizer, _final_note(config, training.resolved),
                   full)
        run.log.info("model saved in %s", run.run_dir.final_dir)
    accelerator.wait_for_everyone()
    if config.final_eval and run.is_main:
        models.reference.model = None  # the evaluation loads the reference only if its answers are not cached
        summary.update(_final_eval(run, training, held_out))
    accelerator.wait_for_everyone()
    run.run_dir.update_status(state="finished", step=step, finished=now_iso(), summary=summary)
    run.log.info("finished: %s", format_summary(summary))
    return RunResult("finished", run.run_dir.path, step, training.total_steps, metrics=summary)


def _final_note(config: TrainConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """final/ctllm_run.json."""
    return {"run_name": config.run_name, "base_model": config.model, "lora": config.lora,
            "reference": resolved.get("reference"), "data_hash": resolved.get("data_hash"),
            "steps": resolved.get("total_steps")}


def _final_eval(run: Run, training: Training, held_out: Collected) -> dict[str, Any]:
    """``run.on_finished`` on the saved model; returns what the summary keeps. A signal (before or during it) or
    an error leaves the run finished, with ``final_eval`` saying "cancelled" or why it failed."""
    if run.on_finished is None:
        run.log.info("final_eval is on but this run was given no end-of-run evaluation: none made")
        return {}
    started = time.perf_counter()
    models = training.models
    # A reference-free run has no reference log-probs of the held-out pairs: the evaluation scores them itself.
    rows = [] if models.reference.free else _held_out_rows(held_out, len(training.data.eval_pairs))
    # A sharded model cannot generate on one process: the evaluation gets the saved whole model.
    model = load_final(run.run_dir.final_dir, run.accelerator.device) if _sharded(run) else training.unwrapped
    finished = FinishedRun(run.run_dir.path, run.config, run.settings, model, models.tokenizer, models.spec, rows,
                           run.log.info, run.stop.event)
    try:
        if run.stop.requested:
            raise TrainingStopped("cancelled", "a signal arrived while the model was saved")
        return run.on_finished(finished)
    except Exception as error:  # the trained model is saved; only its evaluation is missing
        if run.stop.requested:  # whatever the evaluation raised on its way out, a signal asked for it
            run.log.warning("final evaluation cancelled by a signal after %.1f s (%s); the trained model is in %s",
                            time.perf_counter() - started, error, run.run_dir.final_dir)
            return {"final_eval": "cancelled"}
        run.log.exception("final evaluation failed; the trained model is in %s", run.run_dir.final_dir)
        return {"final_eval": f"failed: {type(error).__name__}: {error}"}


def _held_out_rows(held_out: Collected, count: int) -> list[PairRow | None]:
    """One row per held-out pair, in order; None for the pairs tokenization dropped."""
    rows: list[PairRow | None] = [None] * count
    for index, *values in held_out:
        rows[index] = tuple(values)  # type: ignore[assignment]
    return rows
