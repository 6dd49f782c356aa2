"""The evaluation at the end of a training run: ``ctllm.cli.train`` hands ``evaluate_finished_run`` to the training
loop as its ``on_finished`` callback (``ctllm.dpo`` never imports ``ctllm.evaluate``)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ctllm.dpo.finished import FinishedRun
from ctllm.evaluate.metrics import PairLogps
from ctllm.evaluate.report import headline_text
from ctllm.evaluate.run import EVAL_JSON, evaluate_run, run_model_ref, run_summary, summary_headline


def evaluate_finished_run(finished: FinishedRun) -> dict[str, Any]:
    """The trained model (in memory) against its reference, written to ``<run dir>/eval.json``; returns what the
    run's summary keeps. Raises ``StopRequested`` once ``finished.stop`` is set (nothing written then)."""
    # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.loading import LoadedModel

    started = time.perf_counter()
    config, run_dir = finished.config, finished.run_dir
    logps = [PairLogps(*row) if row is not None else None for row in finished.held_out]
    # Named as the registry names the run; no path, so its answers are never taken from the cache.
    spec = replace(finished.spec, kind="run", ref=run_model_ref(run_dir, finished.settings), path="",
                   label=f"run {config.run_name}")
    finished.model.eval()
    result = evaluate_run(
        run_dir, finished.settings, policy=LoadedModel.wrap(finished.model, finished.tokenizer, spec),
        prompts=config.final_eval_prompts or None, max_new_tokens=config.final_eval_max_new_tokens,
        limit=config.final_eval_limit or None, batch_size=16, pair_logps=logps or None, log=finished.log,
        stop=finished.stop)
    summary = {**run_summary(result), "final_eval": EVAL_JSON}
    finished.log(f"final evaluation in {time.perf_counter() - started:.1f} s, written to {run_dir / EVAL_JSON}; "
                 f"SFT → DPO: {headline_text(summary_headline(summary)) or 'no numbers'}")
    return summary
