"""Loading models named by specs: device and dtype choice, LoRA adapters, and a process-wide cache for chat."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctllm.errors import UserError
from ctllm.models.embedded import ensure_embedded
from ctllm.models.registry import ModelSpec, check_hub_available, hub_offline, resolve_spec
from ctllm.models.templates import FALLBACK_TEMPLATE, apply_chat_template
from ctllm.settings import Settings

__all__ = [
    "LoadedModel",
    "apply_chat_template",
    "clear_model_cache",
    "get_model",
    "load_model",
    "pick_device",
    "pick_dtype",
    "stop_token_ids",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


@dataclass
class LoadedModel:
    model: Any  # a transformers causal LM, or a peft PeftModel around one
    tokenizer: Any
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    stop_token_ids: tuple[int, ...] = ()  # generation ends at any of these (EOS, the template's end-of-turn)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, spec: ModelSpec | None = None) -> LoadedModel:
        """A LoadedModel around objects loaded elsewhere (a policy in training, say), to generate or score with."""
        parameter = next(model.parameters())
        spec = spec or ModelSpec("local", "in-memory", "", None, False, None, "in-memory model")
        return cls(model, tokenizer, spec, parameter.device, parameter.dtype, stop_token_ids(model, tokenizer))


def pick_device(setting: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. Also ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    text = (setting or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {setting!r} asked for, but CUDA is not available here: use --device cpu or auto")
        try:
            device = torch.device(text)
        except RuntimeError as error:
            raise UserError(f"device {setting!r} is not valid: {error}") from error
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {setting!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return device
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device 'mps' asked for, but it is not available here")
        return torch.device("mps")
    raise UserError(f"device {setting!r} is not one of auto, cpu, cuda, cuda:N, mps")


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (float16 where bf16 is unsupported), float32 elsewhere.

    CPUs without native bf16 compute it hundreds of times slower than fp32, so bf16 on a CPU happens only when
    asked for by name, with a warning.
    """
    text = (setting or "auto").strip().lower()
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if text not in _DTYPES:
        raise UserError(f"dtype {setting!r} is not one of auto, {', '.join(sorted(_DTYPES))}")
    dtype = _DTYPES[text]
    if device.type == "cpu" and dtype != torch.float32:
        warnings.warn(
            f"dtype {setting} on a CPU: most CPUs have no native {dtype} matrix products (bf16 ran about 400x "
            "slower than fp32 on this project's test machine); use --dtype auto or float32 unless you know yours does",
            stacklevel=2,
        )
    return dtype


def _hub_kwargs(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.kind == "hub" and hub_offline(settings):
        kwargs["local_files_only"] = True
    return kwargs


def _model_path(spec: ModelSpec, settings: Settings) -> str:
    if spec.kind == "embedded":
        return str(ensure_embedded(settings.models_dir))
    check_hub_available(spec, settings)
    return spec.path


def _from_pretrained(what: str, loader: Any, path: str, spec: ModelSpec, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the {what} of model {spec.label!r} from {path}: {error}") from error


def _load_tokenizer(spec: ModelSpec, path: str, settings: Settings) -> Any:
    # Lazy: importing transformers takes seconds; start-up (the app, the CLI) does not need it.
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained("tokenizer", AutoTokenizer, path, spec, **_hub_kwargs(spec, settings))
    if spec.chat_template and (spec.force_template or not getattr(tokenizer, "chat_template", None)):
        tokenizer.chat_template = spec.chat_template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_weights(spec: ModelSpec, path: str, settings: Settings, dtype: torch.dtype) -> Any:
    # Lazy: importing transformers takes seconds; start-up (the app, the CLI) does not need it.
    from transformers import AutoModelForCausalLM

    return _from_pretrained("weights", AutoModelForCausalLM, path, spec, dtype=dtype, **_hub_kwargs(spec, settings))


def stop_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    template = getattr(tokenizer, "chat_template", None) or FALLBACK_TEMPLATE
    if isinstance(template, str) and "<|im_end|>" in template:  # ChatML ends a turn with <|im_end|>
        end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
            ids.add(end_of_turn)
    return tuple(sorted(ids))


def load_model(spec: str | ModelSpec, settings: Settings, *, trainable: bool = False) -> LoadedModel:
    """Load a model (a fresh copy, never the chat cache's) on the configured device and dtype.

    Returned in eval mode (dropout off); with ``trainable=False`` its parameters also need no gradients. An adapter
    is loaded onto a fresh copy of its base, since peft writes the LoRA layers into the base model in place.
    """
    spec = resolve_spec(spec, settings) if isinstance(spec, str) else spec
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    if spec.is_adapter:
        # Lazy: importing peft takes seconds, and only LoRA runs and adapters need it.
        from peft import PeftModel

        assert spec.base is not None
        base_spec = resolve_spec(spec.base, settings)
        base_path = _model_path(base_spec, settings)
        own_tokenizer = any((Path(spec.path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = _load_tokenizer(spec, spec.path if own_tokenizer else base_path, settings)
        base_model = _load_weights(base_spec, base_path, settings, dtype)
        try:
            model = PeftModel.from_pretrained(base_model, spec.path, is_trainable=trainable)
        except (OSError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot load LoRA adapter {spec.path} onto {base_spec.label!r}: {error}") from error
    else:
        path = _model_path(spec, settings)
        tokenizer = _load_tokenizer(spec, path, settings)
        model = _load_weights(spec, path, settings, dtype)
    model.to(device)
    model.eval()
    if not trainable:
        model.requires_grad_(False)
    return LoadedModel(model, tokenizer, spec, device, dtype, stop_token_ids(model, tokenizer))


# The chat cache: one loaded copy per (model, settings that shape it), loaded once even when asked concurrently.
MAX_CACHED_MODELS = 4
_cache: OrderedDict[Hashable, LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()
_load_locks: dict[Hashable, threading.Lock] = {}


def _cache_key(spec: ModelSpec, settings: Settings) -> Hashable:
    """What makes two loads the same: the spec without its display fields, where it lives and how it is loaded.

    A folder's config file time is part of it, so a run retrained into the same folder is loaded again.
    """
    stamp = None
    if spec.kind != "hub":
        folder = Path(spec.path)
        for name in ("adapter_config.json", "config.json"):
            if (folder / name).is_file():
                stamp = (folder / name).stat().st_mtime_ns
                break
    identity = dataclasses.replace(spec, ref="", label="", note="")
    return (identity, stamp, str(settings.models_dir), settings.device, settings.dtype)


def get_model(spec: str | ModelSpec, settings: Settings, *, merged: bool = False) -> LoadedModel:
    """A shared, eval-mode model for chat and scoring: loaded on first use, then served from memory.

    Thread-safe; concurrent requests for one model wait for a single load. The least recently used model is
    dropped beyond MAX_CACHED_MODELS (callers holding it keep a working reference). With ``merged``, a LoRA
    adapter is merged into the weights of its own base copy: the same function without a LoRA product beside every
    linear layer (a chat side on a LoRA run otherwise runs ~1.3× slower on a CPU), but the adapter can no longer be
    switched off row by row (see ``generate.on_shared_base``).
    """
    resolved = resolve_spec(spec, settings) if isinstance(spec, str) else spec
    key = (_cache_key(resolved, settings), merged and resolved.is_adapter)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return dataclasses.replace(_cache[key], spec=resolved)
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        with _cache_lock:
            if key in _cache:
                return dataclasses.replace(_cache[key], spec=resolved)
        loaded = load_model(resolved, settings)
        if merged and resolved.is_adapter:
            loaded = dataclasses.replace(loaded, model=loaded.model.merge_and_unload())
        with _cache_lock:
            _cache[key] = loaded
            while len(_cache) > MAX_CACHED_MODELS:
                _cache.popitem(last=False)
            _load_locks.pop(key, None)
    return loaded


def clear_model_cache() -> None:
    with _cache_lock:
        _cache.clear()
