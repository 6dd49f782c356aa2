"""Synthesize preference pairs from instruction data, the CT-LLM-SFT-DPO way.

Chosen is the file's own answer (alpaca-gpt4's GPT-4 output in the card's recipe) or, for prompts without one,
the strong model's; rejected is the weak model's answer (baichuan-6B there; the embedded model by default).
Prompts go through the models several at a time (left-padded batches). Candidates pass the filters of
``ctllm.synth.filters``; the kept pairs go to a store collection of kind ``synth``.

Resuming: a run is identified by its *synthesis key* (weak and strong model, sampling parameters, split). Every
kept pair carries the key and its prompt's hash in its meta, and the prompts a filter dropped are listed in the
collection's meta, so a rerun with the same key skips every prompt already handled, and the store's content-hash
de-duplication catches the rest. An interrupted run therefore continues where it stopped and never adds a pair
twice. With ``run_dir`` set (a background job), progress goes to ``status.json`` as a training run's does.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ctllm.errors import UserError
from ctllm.jobs.commands import ctllm_command
from ctllm.models.templates import apply_chat_template
from ctllm.pairs.schema import Pair
from ctllm.pairs.store import Store
from ctllm.runs import RunDir, now_iso
from ctllm.settings import Settings
from ctllm.synth.filters import FILTERS, NEAR_IDENTICAL_THRESHOLD, Answer, pair_problem
from ctllm.synth.prompts import PromptItem, read_prompt_file

META_KEY = "synth"  # collection meta: {"synth": {key: {..., "filtered": [prompt hashes], "counts": {...}}}}
COLLECTION_KIND = "synth"
TOO_LONG = "too_long"  # a prompt that leaves no room for max_new_tokens in the model's context


@dataclass(frozen=True)
class SynthOptions:
    """Everything a synthesis run needs; ``argv()`` turns it into the CLI arguments of a background job."""

    prompts: str
    collection: str
    weak: str = "embedded"
    strong: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None  # None: reuse the seed of an earlier run with the same key, else draw one
    limit: int | None = None  # handle at most this many new prompts in this invocation
    near_threshold: float = NEAR_IDENTICAL_THRESHOLD
    split: str = "train"  # the split of new pairs (a prompt row's own "split" column wins)
    threads: int = 0  # torch CPU threads for the job (0: torch's default); see bench/bench_synth.py

    def validate(self) -> SynthOptions:
        checks = [
            ("--batch-size", self.batch_size >= 1, "must be at least 1"),
            ("--max-new-tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("--temperature", self.temperature >= 0, "must be 0 (greedy) or more"),
            ("--top-p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("--limit", self.limit is None or self.limit >= 0, "must be 0 or more"),
            ("--near-threshold", 0 <= self.near_threshold <= 1, "must be between 0 and 1"),
            ("--collection", bool(self.collection.strip()), "must name a collection"),
            ("--threads", self.threads >= 0, "must be 0 (torch's default) or more"),
        ]
        for flag, ok, message in checks:
            if not ok:
                raise UserError(f"{flag} {message}")
        return self

    @property
    def key(self) -> str:
        """What makes two invocations the same synthesis (the seed is not part of it: a resumed run reuses it)."""
        parts = [self.weak, self.strong or "", self.max_new_tokens, self.temperature, self.top_p, self.split]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:16]

    def argv(self, run_dir: Path | str | None = None) -> list[str]:
        """Arguments after ``python -m ctllm synth`` that reproduce these options."""
        args = ["--prompts", str(self.prompts), "--collection", self.collection, "--weak", self.weak]
        if self.strong:
            args += ["--strong", self.strong]
        args += ["--batch-size", str(self.batch_size), "--max-new-tokens", str(self.max_new_tokens),
                 "--temperature", str(self.temperature), "--top-p", str(self.top_p),
                 "--near-threshold", str(self.near_threshold), "--split", self.split]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        if self.limit is not None:
            args += ["--limit", str(self.limit)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if run_dir is not None:
            args += ["--run-dir", str(run_dir)]
        return args


@dataclass
class SynthSummary:
    """What one invocation did. ``filtered`` counts dropped candidates by filter name (FILTERS, plus too_long)."""

    collection: str
    key: str
    seed: int
    rows: int = 0  # rows in the prompts file
    bad_rows: int = 0
    repeated_rows: int = 0
    prompts: int = 0  # distinct prompts in the file
    already_done: int = 0  # handled by an earlier invocation with the same key
    processed: int = 0  # handled now
    added: int = 0  # new pairs in the collection
    duplicates: int = 0  # kept candidates the collection already held (content hash)
    filtered: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*FILTERS, TOO_LONG), 0))
    generated_answers: int = 0
    seconds: float = 0.0
    state: str = "finished"  # finished | cancelled

    @property
    def remaining(self) -> int:
        return self.prompts - self.already_done - self.processed

    @property
    def pairs_per_minute(self) -> float:
        """Candidate pairs (prompts handled) per minute of this invocation."""
        return 60.0 * self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remaining": self.remaining, "pairs_per_minute": round(self.pairs_per_minute, 2)}

    def lines(self) -> list[str]:
        dropped = sum(self.filtered.values())
        shown = ", ".join(f"{name} {count}" for name, count in self.filtered.items())
        return [
            f"collection {self.collection!r} (synthesis key {self.key}, seed {self.seed})",
            f"prompts: {self.prompts} distinct in {self.rows} rows ({self.bad_rows} bad, {self.repeated_rows} "
            f"repeated); {self.already_done} done before, {self.processed} now, {self.remaining} left",
            f"pairs added: {self.added}; already in the collection: {self.duplicates}; dropped: {dropped} ({shown})",
            f"time: {self.seconds:.1f} s, {self.pairs_per_minute:.1f} prompts/min, {self.generated_answers} answers "
            f"generated; state: {self.state}",
        ]


ProgressFn = Callable[[SynthSummary], None]


def synthesize(
    options: SynthOptions,
    settings: Settings,
    *,
    run_dir: Path | str | None = None,
    show_progress: bool = True,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    models: dict[str, Any] | None = None,
) -> SynthSummary:
    """Run (or resume) a synthesis into ``options.collection``; returns what this invocation did.

    ``progress(summary)`` is called after every batch; ``stop`` ends the run after the current batch (state
    cancelled; rerun to continue). ``models`` may hold already loaded models by spec (``LoadedModel``), so a caller
    that has them (a benchmark, the app) does not load them again.
    """
    options.validate()
    if options.threads:
        # Lazy: importing torch takes seconds; start-up (the app, the CLI) does not need it.
        import torch

        torch.set_num_threads(options.threads)
    status_dir = RunDir(Path(run_dir)).create() if run_dir is not None else None
    if status_dir is not None:
        # A resumed job's folder still holds the previous process's figures: clear them.
        status_dir.update_status(state="running", kind="synth", started=now_iso(), finished=None, error=None,
                                 step=0, total_steps=None, collection=options.collection, options=asdict(options),
                                 phase="reading prompts", added=0, duplicates=0, filtered=None, eta_s=None,
                                 pairs_per_minute=None, summary=None)
    try:
        summary = _synthesize(options, settings, status_dir, show_progress, progress, stop, models or {})
    except BaseException as error:
        if status_dir is not None:
            state = "cancelled" if isinstance(error, KeyboardInterrupt) else "failed"
            status_dir.update_status(state=state, error=f"{type(error).__name__}: {error}", finished=now_iso())
        raise
    if status_dir is not None:
        status_dir.update_status(state=summary.state, finished=now_iso(), summary=summary.to_dict())
    return summary


def _synthesize(
    options: SynthOptions,
    settings: Settings,
    status_dir: Any,
    show_progress: bool,
    progress: ProgressFn | None,
    stop: threading.Event | None,
    models: dict[str, Any],
) -> SynthSummary:
    started = time.perf_counter()
    source = read_prompt_file(options.prompts)
    for error in source.errors[:5]:
        print(f"skipped: {error}", file=sys.stderr)
    if len(source.errors) > 5:
        print(f"skipped {len(source.errors)} bad rows in all", file=sys.stderr)
    if options.strong is None and all(item.answer is None for item in source.items):
        raise UserError(
            f"{Path(options.prompts).name}: no prompt has an answer of its own, so chosen answers must come from a "
            "strong model: pass --strong SPEC"
        )

    store = Store(settings.ensure_dirs().db_path)
    try:
        collection = store.ensure_collection(options.collection, COLLECTION_KIND, source=Path(options.prompts).name,
                                             format="synth")
        state = dict((collection.meta.get(META_KEY) or {}).get(options.key) or {})
        seed = options.seed if options.seed is not None else state.get("seed", random.randrange(2**31))
        done = set(state.get("filtered", ())) | _kept_prompt_hashes(store, options.collection, options.key)
        todo = [item for item in source.items if item.key not in done]
        summary = SynthSummary(
            collection=options.collection, key=options.key, seed=int(seed), rows=source.rows,
            bad_rows=len(source.errors), repeated_rows=source.repeated, prompts=len(source.items),
            already_done=len(source.items) - len(todo),
        )
        if options.limit is not None:
            todo = todo[: options.limit]
        state.update(prompts=Path(options.prompts).name, weak=options.weak, strong=options.strong,
                     params=_params(options), seed=summary.seed)
        store.update_collection_meta(options.collection, **{META_KEY: _merged(collection.meta, options.key, state)})
        if status_dir is not None:
            status_dir.update_status(step=summary.already_done, total_steps=summary.already_done + len(todo),
                                     phase="loading models" if todo else "done")
        if todo:
            _generate_all(todo, options, settings, store, summary, state, status_dir, show_progress, progress, stop,
                          models, started)
    finally:
        store.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _generate_all(
    todo: list[PromptItem],
    options: SynthOptions,
    settings: Settings,
    store: Any,
    summary: SynthSummary,
    state: dict[str, Any],
    status_dir: Any,
    show_progress: bool,
    progress: ProgressFn | None,
    stop: threading.Event | None,
    models: dict[str, Any],
    started: float,
) -> None:
    # Lazy: importing ctllm.models.loading (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.loading import load_model

    def model(spec: str) -> Any:
        if spec not in models:
            models[spec] = load_model(spec, settings)
        return models[spec]

    weak = model(options.weak)
    strong = model(options.strong) if options.strong and any(i.answer is None for i in todo) else None
    total = summary.already_done + len(todo)
    if status_dir is not None:
        status_dir.update_status(phase="generating")
    bar = tqdm(total=total, initial=summary.already_done, desc="synth", unit="prompt", file=sys.stderr,
               disable=not show_progress, mininterval=1.0, dynamic_ncols=True)
    loop_started = time.perf_counter()
    try:
        for start in range(0, len(todo), options.batch_size):
            batch = todo[start : start + options.batch_size]
            _one_batch(batch, options, store, summary, state, weak, strong)
            bar.update(len(batch))
            bar.set_postfix(added=summary.added, dropped=sum(summary.filtered.values()), refresh=False)
            summary.seconds = time.perf_counter() - started
            if status_dir is not None:
                rate = summary.processed / max(time.perf_counter() - loop_started, 1e-9)
                left = len(todo) - start - len(batch)
                status_dir.update_status(
                    step=summary.already_done + summary.processed, total_steps=total, added=summary.added,
                    duplicates=summary.duplicates, filtered=summary.filtered,
                    pairs_per_minute=round(60 * rate, 2), eta_s=round(left / rate, 1) if rate > 0 else None,
                )
            if progress is not None:
                progress(summary)
            if stop is not None and stop.is_set() and start + len(batch) < len(todo):
                summary.state = "cancelled"
                break
    finally:
        bar.close()


def _one_batch(
    batch: Sequence[PromptItem],
    options: SynthOptions,
    store: Any,
    summary: SynthSummary,
    state: dict[str, Any],
    weak: Any,
    strong: Any,
) -> None:
    """Generate, filter and store one batch; then record the prompts it handled."""
    # Lazy: importing ctllm.models.generate (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.generate import GenerationParams

    batch_seed = _batch_seed(summary.seed, [item.key for item in batch])
    params = GenerationParams(options.temperature, options.top_p, options.max_new_tokens, batch_seed)
    counts: Counter[str] = Counter()
    dropped: list[str] = []
    usable: list[PromptItem] = []
    for item in batch:
        if item.answer is None and strong is None:  # no chosen answer can be had: nothing to generate
            counts["empty"] += 1
        elif not _fits(weak, item, options.max_new_tokens) or (
            item.answer is None and not _fits(strong, item, options.max_new_tokens)
        ):
            counts[TOO_LONG] += 1
        else:
            usable.append(item)
            continue
        dropped.append(item.key)
    rejected = _answers(weak, usable, params)
    needs_strong = [item for item in usable if item.answer is None]
    generated = iter(_answers(strong, needs_strong, params))
    chosen = [Answer(item.answer) if item.answer is not None else next(generated) for item in usable]
    summary.generated_answers += len(usable) + len(needs_strong)

    kept: list[Pair] = []
    source = f"synth:{Path(options.prompts).stem}"
    for item, good, bad in zip(usable, chosen, rejected, strict=True):
        problem = pair_problem(item.text, good, bad, options.near_threshold)
        if problem is not None:
            counts[problem] += 1
            dropped.append(item.key)
            continue
        meta = {
            "split": options.split, **item.meta, "synth_key": options.key, "synth_prompt_hash": item.key,
            "chosen_from": "file" if item.answer is not None else "strong", "weak_model": weak.spec.ref,
            "weak_label": weak.spec.label, "strong_model": strong.spec.ref if strong is not None else None,
            **_params(options), "seed": summary.seed, "batch_seed": batch_seed,
        }
        kept.append(Pair(item.prompt, good.text, bad.text, source=source, meta=meta))
    if kept:
        added, duplicates = store.add_pairs(options.collection, kept, created_by="synth")
        summary.added += added
        summary.duplicates += duplicates
    summary.processed += len(batch)
    for name, count in counts.items():
        summary.filtered[name] += count
    # Kept prompts are known by their pairs' meta; dropped ones are listed here, after the pairs are stored.
    state["filtered"] = [*state.get("filtered", ()), *dropped]
    totals = Counter(state.get("counts") or {})
    totals.update({"processed": len(batch), "kept": len(kept), **counts})
    state["counts"] = dict(totals)
    current = store.get_collection(options.collection).meta
    store.update_collection_meta(options.collection, **{META_KEY: _merged(current, options.key, state)})


def _answers(loaded: Any, items: Sequence[PromptItem], params: Any) -> list[Answer]:
    # Lazy: importing ctllm.models.generate (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.generate import generate_batch_detailed

    if not items:
        return []
    generated = generate_batch_detailed(loaded, [item.prompt for item in items], params)
    return [Answer(g.text, g.finished) for g in generated]


def _fits(loaded: Any, item: PromptItem, max_new_tokens: int) -> bool:
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    return not limit or len(apply_chat_template(loaded.tokenizer, item.prompt)) + max_new_tokens <= limit


def _batch_seed(seed: int, keys: Sequence[str]) -> int:
    """The sampling seed of one batch, from the run's seed and the batch's prompts: a resumed run whose batches
    line up with the first run's draws the same answers."""
    digest = hashlib.sha256(f"{seed}:{','.join(keys)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _params(options: SynthOptions) -> dict[str, Any]:
    return {"temperature": options.temperature, "top_p": options.top_p, "max_new_tokens": options.max_new_tokens}


def _merged(meta: dict[str, Any], key: str, state: dict[str, Any]) -> dict[str, Any]:
    runs = dict(meta.get(META_KEY) or {})
    runs[key] = state
    return runs


def _kept_prompt_hashes(store: Any, collection: str, key: str) -> set[str]:
    return {
        str(stored.pair.meta.get("synth_prompt_hash"))
        for stored in store.iter_pairs(collection)
        if stored.pair.meta.get("synth_key") == key
    }


def synth_command(options: SynthOptions, run_dir: Path | str) -> list[str]:
    """The argv of a background synthesis job (for ``JobManager.start(argv, run_dir, kind="synth")``)."""
    return ctllm_command("synth", options.validate().argv(run_dir))
