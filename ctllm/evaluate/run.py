"""Evaluate a DPO model against its SFT reference, the before/after view of the CT-LLM-SFT-DPO card.

For each model: preference accuracy on held-out pairs; for the model against its reference: the DPO implicit
reward's accuracy and margin; on prompt lists: refusal and answer rates under greedy decoding (every answer saved).
Written into an output folder (a run dir at the end of training):

```
eval.json            the result (see ``evaluate_models``); eval.csv the same as a table
eval_answers.jsonl   every answer to the prompt lists, with whether it counts as a refusal
eval_charts.html     plotly charts, SFT and DPO side by side (eval_charts.json: the figures as JSON)
```
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ctllm.errors import UserError
from ctllm.evaluate.behaviour import ANSWER_GOAL, REFUSAL_GOAL
from ctllm.evaluate.metrics import PairLogps
from ctllm.evaluate.pairs_eval import load_eval_pairs, pairs_section, score_pair_logps
from ctllm.evaluate.prompts_eval import (
    ModelOnDemand,
    PromptList,
    answer_lists,
    behaviour_section,
    default_prompt_lists,
    end_of_run_lists,
    load_prompt_list,
    pooled_rate,
    ready,
)
from ctllm.evaluate.report import format_table, write_charts, write_csv
from ctllm.models.registry import RUN_PREFIX, ModelSpec, resolve_spec
from ctllm.pairs.schema import Pair
from ctllm.runs import now_iso, read_config
from ctllm.settings import Settings

EVAL_JSON = "eval.json"
ANSWERS = "eval_answers.jsonl"
CSV_NAME = "eval.csv"
VERSION = 1
Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (model role, done, total)


@dataclass(frozen=True)
class EvalOptions:
    model: str  # the DPO model spec
    ref: str  # its reference (the SFT model) spec
    pairs: str | None = None  # a pairs file or a collection; None: no pairs section
    split: str | None = "test"  # None or "all": every pair
    prompts: tuple[str, ...] | None = None  # None: the four lists in assets/prompts; (): none
    beta: float = 0.1
    max_new_tokens: int = 64
    limit: int | None = None  # prompts per list and pairs at most
    batch_size: int = 8
    max_length: int = 1024

    def validate(self) -> EvalOptions:
        if self.beta <= 0:
            raise UserError(f"--beta must be > 0, got {self.beta}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.max_length < 2:
            raise UserError("--max-new-tokens and --batch-size must be >= 1, --max-length >= 2")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be at least 1")
        if self.pairs is None and self.prompts == ():
            raise UserError("nothing to evaluate: give --pairs, prompt lists, or both")
        return self

    def prompt_lists(self) -> list[PromptList]:
        if self.prompts is None:
            return default_prompt_lists(self.limit)
        return [load_prompt_list(spec, self.limit) for spec in self.prompts]


def evaluate(
    options: EvalOptions,
    settings: Settings,
    out_dir: Path | str,
    *,
    models: dict[str, Any] | None = None,
    show_progress: bool = True,
    log: Log | None = None,
) -> dict[str, Any]:
    """Load the two models (or take them from ``models`` by spec), evaluate, write the outputs; returns eval.json."""
    # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.loading import load_model

    options.validate()
    lists = options.prompt_lists()
    pairs, source = (None, None)
    if options.pairs is not None:
        pairs, source = load_eval_pairs(options.pairs, settings, options.split)
        pairs = pairs[: options.limit] if options.limit else pairs
    models = models if models is not None else {}
    for spec in dict.fromkeys((options.model, options.ref)):
        if spec not in models:
            models[spec] = load_model(spec, settings)
    return evaluate_models(
        models[options.model], models[options.ref], out_dir, pairs=pairs, pairs_source=source, prompt_lists=lists,
        beta=options.beta, max_new_tokens=options.max_new_tokens, batch_size=options.batch_size,
        max_length=options.max_length, show_progress=show_progress, log=log,
        extra={"options": asdict(options)}, answer_cache=answer_cache_dir(settings),
    )


def evaluate_models(
    model: Any,
    ref: Any,
    out_dir: Path | str,
    *,
    pairs: Sequence[Pair] | None,
    pairs_source: str | None,
    prompt_lists: Sequence[PromptList],
    beta: float,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    max_length: int = 1024,
    show_progress: bool = True,
    log: Log | None = None,
    extra: dict[str, Any] | None = None,
    answer_cache: Path | None = None,
    pair_logps: Sequence[PairLogps | None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Evaluate loaded models (``LoadedModel``: the DPO ``model`` and its SFT ``ref``; ``ref`` may be a
    ``ModelOnDemand``, loaded only if something must run on it) and write the outputs.

    The result (also eval.json)::

        {"version": 1, "created": ..., "beta": β, "seconds": ...,
         "models": {"model": {"spec", "label"}, "ref": {"spec", "label"}},
         "pairs": {"source", "count", "scored", "dropped", "overall": M, "by_category": {name: M},
                   "by_language": {lang: M}} or None,
         "prompts": [{"name", "kind", "language", "file", "n", "headline", "meaningful", "note",
                      "model": {"refusal_rate", "answer_rate", "n"}, "ref": {...}}],
         "answers_cached": {"model": bool, "ref": bool},
         "files": {"answers", "csv", "charts_html", "charts_json"}, "notes": [...]}

    with M = {"n", "model_preference_accuracy", "ref_preference_accuracy", "reward_accuracy", "margin",
    "chosen_reward", "rejected_reward"}. ``answer_cache``: a folder keeping greedy answers by model files and
    prompts (see ``prompts_eval.answer_lists``). ``pair_logps``: the pairs' log-probs already computed (one per
    pair, in order; None for a dropped pair), e.g. by the training loop's final held-out pass: no scoring then.
    ``stop``: checked between scoring batches and generated tokens; once set, ``StopRequested`` ends the evaluation
    and nothing is written.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    specs = {"model": model.spec, "ref": ref.spec}
    result: dict[str, Any] = {
        "version": VERSION, "created": now_iso(), "beta": beta,
        "models": {role: {"spec": spec.ref, "label": spec.label} for role, spec in specs.items()},
        "settings": {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "max_length": max_length,
                     "decoding": "greedy"},
        "pairs": None, "prompts": [], "notes": [],
    }
    if extra:
        result.update(extra)
    if model is ref:
        result["notes"].append("model and reference are the same model: implicit rewards are 0 by definition")

    if pairs:
        if pair_logps is None:
            log(f"scoring {len(pairs)} pairs from {pairs_source} under both models")
            progress = _stoppable(_bars(show_progress), stop)
            pair_logps = score_pair_logps(model, _ready(ref, stop), pairs, max_length, batch_size, progress)
        result["pairs"] = {"source": pairs_source, **pairs_section(pairs, pair_logps, beta)}
    elif pairs is not None:
        result["notes"].append(f"no held-out pairs in {pairs_source}: no preference numbers")

    records: list[dict[str, Any]] = []
    if prompt_lists:
        total = sum(len(p.prompts) for p in prompt_lists)
        answers: dict[str, list[list[str]]] = {}
        cached: dict[str, bool] = {}
        for role, loaded in (("model", model), ("ref", ref)):
            if role == "ref" and ref is model:
                answers[role], cached[role] = answers["model"], cached["model"]
                continue
            _check_stop(stop, f"before answering with {loaded.spec.label}")
            log(f"answering {total} prompts with {loaded.spec.label} (greedy, at most {max_new_tokens} new tokens)")
            answers[role], cached[role] = answer_lists(loaded, prompt_lists, max_new_tokens, batch_size, answer_cache,
                                                       stop)
            how = "read from the cache" if cached[role] else "generated (greedy)"
            log(f"answers of {loaded.spec.label} to {total} prompts from {len(prompt_lists)} lists: {how}")
        result["prompts"], records = behaviour_section(prompt_lists, answers, specs)
        result["answers_cached"] = cached
    _check_stop(stop, "before its files were written")

    files = {"answers": ANSWERS, "csv": CSV_NAME, "charts_html": "eval_charts.html", "charts_json": "eval_charts.json"}
    (out_dir / ANSWERS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                   encoding="utf-8")
    result["files"] = files
    result["seconds"] = round(time.perf_counter() - started, 2)
    write_csv(result, out_dir / CSV_NAME)
    write_charts(result, out_dir)
    _write_json(out_dir / EVAL_JSON, result)
    return result


def evaluate_run(
    run_dir: Path | str,
    settings: Settings,
    *,
    policy: Any = None,
    reference: Any = None,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    limit: int | None = None,
    batch_size: int = 8,
    pair_logps: Sequence[PairLogps | None] | None = None,
    show_progress: bool = False,
    log: Log | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """The end-of-training evaluation: the run's model (``final/``) against its reference on the run's held-out
    pairs (``eval.parquet``) and the prompt lists; writes ``<run_dir>/eval.json`` (and the files beside it).

    β, max_length, the reference and the languages come from the run's config.yaml. ``policy`` / ``reference``
    may be models already in memory (``LoadedModel``, see ``as_loaded``); else the policy is loaded from the run
    and the reference only when it must run (its answers are cached, see ``answer_lists``). ``prompts``: prompt
    list files (None: the shipped lists in the run's languages that the model can write; []: none). ``limit``:
    prompts per list at most, and held-out pairs unless their log-probs are given (they cost nothing then).
    ``pair_logps``: the held-out pairs' log-probs, in the order of eval.parquet, when the caller has them (the
    training loop's last evaluation): no pair is scored again. ``stop``: see ``evaluate_models``.
    """
    # Lazy: importing ctllm.dpo.snapshot (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.dpo.snapshot import read_snapshot
    from ctllm.models.loading import load_model

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if not config:
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    if policy is None:  # a run dir outside the runs folder is still the operator's own
        run_settings = settings.with_(allowed_roots=(*settings.path_roots, run_dir.resolve()))
        policy = load_model(run_model_ref(run_dir, settings, check=True), run_settings)
    if reference is None:
        reference = reference_on_demand(str(config.get("ref_model") or config.get("model") or "embedded"), settings)
    eval_path = run_dir / "eval.parquet"
    pairs = read_snapshot(eval_path) if eval_path.is_file() else []
    if pair_logps is not None and len(pair_logps) != len(pairs):
        pair_logps = None  # not this snapshot's: score again
    if limit and pair_logps is None:
        pairs = pairs[:limit]
    notes: list[str] = []
    if prompts is None:
        languages = [str(lang) for lang in config.get("languages") or []]
        lists, note = end_of_run_lists(default_prompt_lists(limit), languages, policy.spec)
        notes += [note] if note else []
    else:
        lists = [load_prompt_list(p, limit) for p in prompts]
    return evaluate_models(
        policy, reference, run_dir, pairs=pairs, pairs_source="the run's held-out pairs (eval.parquet)",
        prompt_lists=lists, beta=float(config.get("beta", 0.1)), max_new_tokens=max_new_tokens,
        batch_size=batch_size, max_length=int(config.get("max_length") or 1024), show_progress=show_progress,
        log=log, extra={"run": run_dir.name, "notes": notes}, answer_cache=answer_cache_dir(settings),
        pair_logps=pair_logps, stop=stop,
    )


def reference_on_demand(spec: str, settings: Settings) -> ModelOnDemand:
    """The SFT reference by spec, loaded (on the settings' device and dtype) only when it must run."""
    # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.loading import load_model, pick_device, pick_dtype

    resolved = resolve_spec(spec, settings)
    device = pick_device(settings.device)
    return ModelOnDemand(resolved, device, pick_dtype(settings.dtype, device), lambda: load_model(resolved, settings))


def answer_cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "cache" / "eval-answers"


def as_loaded(model: Any, tokenizer: Any, label: str, ref: str = "") -> Any:
    """Wrap a model and tokenizer in memory (the training loop's) as a ``LoadedModel`` for ``evaluate_run``."""
    # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.loading import LoadedModel

    return LoadedModel.wrap(model, tokenizer, ModelSpec("local", ref or label, ref, None, False, None, label))


def load_result(path: Path | str) -> dict[str, Any] | None:
    """A saved eval.json (``path`` may be the folder holding it); None when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The few numbers a run's list shows next to its name: preference accuracy before/after, reward accuracy and
    margin, the headline rate of each prompt list before/after (keys ``<list>:<rate>/sft`` and ``.../dpo``) and
    over every meaningful list of a kind (``refusal_rate/sft``, ``refusal_rate/dpo``, ``answer_rate/...``)."""
    out: dict[str, float] = {}
    overall = (result.get("pairs") or {}).get("overall") or {}
    for key, name in (("ref_preference_accuracy", "preference_accuracy/sft"),
                      ("model_preference_accuracy", "preference_accuracy/dpo"),
                      ("reward_accuracy", "reward_accuracy"), ("margin", "margin")):
        if overall.get(key) is not None:
            out[name] = overall[key]
    for entry in result.get("prompts") or []:
        for role, side in (("ref", "sft"), ("model", "dpo")):
            value = (entry.get(role) or {}).get(entry["headline"])
            if value is not None:
                out[f"{entry['name']}:{entry['headline']}/{side}"] = value
    for kind, metric in (("harmful", "refusal_rate"), ("benign", "answer_rate")):
        for role, side in (("ref", "sft"), ("model", "dpo")):
            value, _ = pooled_rate(result.get("prompts") or [], kind, role)
            if value is not None:
                out[f"{metric}/{side}"] = value
    return out


def run_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a training run's summary (status.json) keeps from its end-of-run evaluation: the behaviour numbers
    (``refusal_rate_harmful``, ``answer_rate_benign``, prompt counts, ``behaviour_goal_met``) of the trained model,
    the same of the SFT model (``sft_`` prefixed) and preference accuracy before and after."""
    entries = result.get("prompts") or []
    out: dict[str, Any] = {}
    refusal, harmful = pooled_rate(entries, "harmful", "model")
    answer, benign = pooled_rate(entries, "benign", "model")
    if harmful:
        out.update(harmful_prompts=harmful, refusal_rate_harmful=refusal,
                   sft_refusal_rate_harmful=pooled_rate(entries, "harmful", "ref")[0])
    if benign:
        out.update(benign_prompts=benign, answer_rate_benign=answer,
                   sft_answer_rate_benign=pooled_rate(entries, "benign", "ref")[0])
    if harmful and benign:
        out["behaviour_goal_met"] = bool(refusal >= REFUSAL_GOAL and answer >= ANSWER_GOAL)
    overall = (result.get("pairs") or {}).get("overall") or {}
    if overall.get("model_preference_accuracy") is not None:
        out.update(sft_preference_accuracy=overall["ref_preference_accuracy"],
                   preference_accuracy=overall["model_preference_accuracy"])
    return out


def print_report(result: dict[str, Any], out_dir: Path | str) -> None:
    print(format_table(result))
    print(f"results: {Path(out_dir) / EVAL_JSON} (table: {CSV_NAME}, charts: eval_charts.html, answers: {ANSWERS})")


def summary_headline(summary: dict[str, Any]) -> dict[str, float]:
    """``headline``'s before/after keys from a run summary made by ``run_summary`` (status.json holds it)."""
    out = {}
    for key, run_key in (("preference_accuracy", "preference_accuracy"), ("refusal_rate", "refusal_rate_harmful"),
                         ("answer_rate", "answer_rate_benign")):
        for side, prefix in (("sft", "sft_"), ("dpo", "")):
            value = summary.get(prefix + run_key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{key}/{side}"] = float(value)
    return out


def run_model_ref(run_dir: Path, settings: Settings, check: bool = False) -> str:
    """The spec naming a run's trained model: ``run:NAME`` in the runs folder, else its ``final/`` folder."""
    if run_dir.resolve().parent == settings.runs_dir.resolve():
        return RUN_PREFIX + run_dir.name
    final = run_dir / "final"
    if check and not final.is_dir():
        raise UserError(f"run {run_dir} has no trained model yet ({final} is missing)")
    return str(final.resolve())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_stop(stop: threading.Event | None, when: str) -> None:
    if stop is not None and stop.is_set():
        # Lazy: importing ctllm.models.generate (torch) takes seconds; start-up (the app, the CLI) does not need it.
        from ctllm.models.generate import StopRequested

        raise StopRequested(f"evaluation stopped {when}")


def _ready(model: Any, stop: threading.Event | None) -> Any:
    """``ready(model)``, unless a stop came before a model on demand is loaded (a load takes a while)."""
    if isinstance(model, ModelOnDemand):
        _check_stop(stop, f"before {model.spec.label} was loaded")
    return ready(model)


def _stoppable(progress: Progress | None, stop: threading.Event | None) -> Progress | None:
    """``progress``, checking ``stop`` at each report (after every scored batch)."""
    if stop is None:
        return progress

    def report(role: str, done: int, total: int) -> None:
        _check_stop(stop, f"while scoring pairs under the {role} model ({done} of {total})")
        if progress is not None:
            progress(role, done, total)

    return report


def _bars(show: bool) -> Progress | None:
    if not show:
        return None

    bars: dict[str, Any] = {}

    def progress(role: str, done: int, total: int) -> None:
        bar = bars.get(role) or bars.setdefault(role, tqdm(total=total, desc=f"score ({role})", unit="pair",
                                                          file=sys.stderr))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress
