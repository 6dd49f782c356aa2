"""Prompt lists answered under greedy decoding: refusal rate on harmful prompts, answer rate on benign ones.

An answer counts as a refusal by ``ctllm.evaluate.behaviour.is_refusal`` (a refusal phrase in its opening, English or
Chinese): the same detector the training run's behaviour check uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.evaluate.behaviour import PROMPTS_DIR, is_refusal, read_prompts
from ctllm.evaluate.metrics import rate
from ctllm.models.registry import EMBEDDED_NOTE
from ctllm.pairs.schema import detect_language, user_prompt

KINDS = ("harmful", "benign")
DEFAULT_FILES = ("harmful_en.txt", "benign_en.txt", "harmful_zh.txt", "benign_zh.txt")
NO_CHINESE_NOTE = ("{label} cannot write Chinese (its Chinese output is garbled), so its numbers on this Chinese "
                   "list are not meaningful")


@dataclass(frozen=True)
class PromptList:
    name: str  # shown in tables and charts, e.g. harmful_en
    kind: str  # harmful | benign
    language: str  # en | zh | other
    path: str
    prompts: tuple[str, ...]


def load_prompt_list(spec: str | Path, limit: int | None = None) -> PromptList:
    """``FILE`` (the kind taken from a name holding "harmful" or "benign") or ``KIND:FILE``; one prompt a line."""
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        path = Path(rest).expanduser()
    else:
        path = Path(text).expanduser()
        kinds = [k for k in KINDS if k in path.stem.lower()]
        if len(kinds) != 1:
            raise UserError(f"--prompts {text}: cannot tell from the file name whether its prompts are harmful or "
                            "benign; write harmful:FILE or benign:FILE")
        kind = kinds[0]
    if not path.is_file():
        raise UserError(f"--prompts {text}: no such file {path}")
    prompts = tuple(read_prompts(path, limit))
    if not prompts:
        raise UserError(f"--prompts {text}: {path} holds no prompts (one a line; lines starting with # skipped)")
    stem = path.stem.lower()
    language = next((lang for lang in ("en", "zh") if stem.endswith(f"_{lang}")), None)
    if language is None:
        languages = [detect_language(p) for p in prompts]
        language = max(set(languages), key=languages.count)
    return PromptList(path.stem, kind, language, str(path), prompts)


def default_prompt_lists(limit: int | None = None) -> list[PromptList]:
    """The four lists shipped in assets/prompts: harmful and benign, English and Chinese."""
    return [load_prompt_list(PROMPTS_DIR / name, limit) for name in DEFAULT_FILES]


def writes_chinese(spec: Any) -> bool:
    """False for the embedded model and models trained from it (their spec carries its note)."""
    return not (spec.kind == "embedded" or spec.note == EMBEDDED_NOTE)


def end_of_run_lists(lists: Sequence[PromptList], languages: Sequence[str], spec: Any) -> tuple[list[PromptList], str]:
    """The lists an end-of-run evaluation answers by default: those in ``languages`` (all when empty), without
    Chinese ones for a model that cannot write Chinese; (the lists, a note naming what was left out or "")."""
    kept = [p for p in lists if not languages or p.language in languages]
    if not writes_chinese(spec):
        kept = [p for p in kept if p.language != "zh"]
    left = [p.name for p in lists if p not in kept]
    note = f"prompt lists left out (language not trained or not written by {spec.label}): {', '.join(left)}"
    return kept, note if left else ""


@dataclass
class ModelOnDemand:
    """A model known by its spec, device and dtype, loaded only when something must run on it (so a cache hit
    costs no load). ``spec``, ``device`` and ``dtype`` are those ``get()`` will have."""

    spec: Any
    device: Any
    dtype: Any
    loader: Callable[[], Any]
    _loaded: Any = None

    def get(self) -> Any:
        if self._loaded is None:
            self._loaded = self.loader()
        return self._loaded


def ready(model: Any) -> Any:
    """The LoadedModel behind ``model`` (loading a ``ModelOnDemand`` now)."""
    return model.get() if isinstance(model, ModelOnDemand) else model


def answer_lists(
    loaded: Any,
    lists: Sequence[PromptList],
    max_new_tokens: int,
    batch_size: int,
    cache_dir: Path | None = None,
    stop: threading.Event | None = None,
) -> tuple[list[list[str]], bool]:
    """Greedy answers of ``loaded`` (a LoadedModel or ModelOnDemand) to every list, one batched pass over all their
    prompts; and whether they came from the cache.

    With ``cache_dir``, answers are kept by (model files, prompts, max_new_tokens): the reference model is the same
    SFT model run after run, so the end-of-run evaluation generates its answers once. ``stop``: once set, generation
    ends after the current token with ``StopRequested`` (nothing is cached).
    """
    # Lazy: importing ctllm.models.generate (torch) takes seconds; start-up (the app, the CLI) does not need it.
    from ctllm.models.generate import GenerationParams, generate_batch

    prompts = [p for plist in lists for p in plist.prompts]
    key = _answers_key(loaded, prompts, max_new_tokens) if cache_dir is not None else None
    cached = _read_cached(cache_dir / f"{key}.json", len(prompts)) if cache_dir is not None and key else None
    if cached is not None:
        answers = cached
    else:
        params = GenerationParams(temperature=0.0, max_new_tokens=max_new_tokens)
        answers = generate_batch(ready(loaded), [user_prompt(p) for p in prompts], params, batch_size=batch_size,
                                 stop=stop)
        if cache_dir is not None and key:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
            tmp.replace(cache_dir / f"{key}.json")
    out, start = [], 0
    for plist in lists:
        out.append(answers[start : start + len(plist.prompts)])
        start += len(plist.prompts)
    return out, cached is not None


def _answers_key(loaded: Any, prompts: Sequence[str], max_new_tokens: int) -> str | None:
    """What fixes a model's greedy answers; None for a model known only in memory (nothing on disk names it)."""
    spec = loaded.spec
    if not spec.path:
        return None
    files = []
    if spec.kind != "hub":
        folder = Path(spec.path)
        for name in ("config.json", "model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json"):
            if (folder / name).is_file():
                info = (folder / name).stat()
                files.append([name, info.st_size, info.st_mtime_ns])
    identity = [spec.kind, spec.path, spec.base, spec.chat_template, files, str(loaded.dtype), loaded.device.type,
                max_new_tokens, list(prompts)]
    return "answers-" + hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


def _read_cached(path: Path, count: int) -> list[str] | None:
    try:
        answers = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(answers, list) and len(answers) == count and all(isinstance(a, str) for a in answers)
    return answers if ok else None


def list_result(plist: PromptList, answers: Sequence[str]) -> dict[str, Any]:
    refused = [is_refusal(a) for a in answers]
    refusal = rate(refused)
    return {"refusal_rate": refusal, "answer_rate": None if refusal is None else 1 - refusal, "n": len(answers)}


def behaviour_section(
    lists: Sequence[PromptList], answers: dict[str, list[list[str]]], specs: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one entry a list with each role's rates, every answer as a record) for roles ``model`` and ``ref``."""
    section, records = [], []
    for index, plist in enumerate(lists):
        entry: dict[str, Any] = {"name": plist.name, "kind": plist.kind, "language": plist.language,
                                 "file": plist.path, "n": len(plist.prompts),
                                 "headline": "refusal_rate" if plist.kind == "harmful" else "answer_rate"}
        notes = []
        for role, by_list in answers.items():
            entry[role] = list_result(plist, by_list[index])
            if plist.language == "zh" and not writes_chinese(specs[role]):
                notes.append(NO_CHINESE_NOTE.format(label=specs[role].label))
            for prompt, answer in zip(plist.prompts, by_list[index], strict=True):
                records.append({"list": plist.name, "kind": plist.kind, "language": plist.language, "role": role,
                                "model": specs[role].label, "prompt": prompt, "answer": answer,
                                "refused": is_refusal(answer)})
        entry["note"] = "; ".join(dict.fromkeys(notes))
        entry["meaningful"] = not notes
        section.append(entry)
    return section, records


def pooled_rate(entries: Sequence[dict[str, Any]], kind: str, role: str) -> tuple[float | None, int]:
    """The headline rate (refusals of harmful prompts, answers to benign ones) of ``role`` over every meaningful
    list of ``kind``, weighted by list size; and the number of prompts behind it."""
    metric = "refusal_rate" if kind == "harmful" else "answer_rate"
    counted = [(e[role][metric], e[role]["n"]) for e in entries
               if e["kind"] == kind and e.get("meaningful", True) and (e.get(role) or {}).get(metric) is not None]
    total = sum(n for _, n in counted)
    return (sum(value * n for value, n in counted) / total if total else None), total
