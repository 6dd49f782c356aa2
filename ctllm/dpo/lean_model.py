"""Lean activations: fit a DPO step of a Llama-family model into less memory, with the same numbers.

:func:`make_lean` swaps, on one model instance, the pieces whose autograd keeps the most for backward:

- RMSNorm and the SwiGLU MLP forwards for :mod:`ctllm.dpo.lean_ops` (element-wise intermediates recomputed);
- attention for SDPA with grouped-query heads left unrepeated (``enable_gqa``): transformers repeats the key/value
  heads when a mask is given, and autograd keeps the repeated copies;
- the LM head for a pass-through, so the log-prob code applies it a chunk at a time
  (:func:`ctllm.dpo.logps.fused_head`) and no batch-sized logits tensor is ever kept.

Modules that do not look like these (another activation, norm or head) are left alone, and :func:`check_lean`
compares the log-probs with and without the swap on a few pairs before training: a model it does not fit trains
the plain way. :meth:`LeanModel.restore` puts everything back (before saving or generating).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from ctllm.dpo.batching import collate
from ctllm.dpo.lean_ops import RMSNorm, SiluMul, SwiGLU
from ctllm.dpo.logps import HIDDEN_OUT, concatenated_forward, logps_difference, trial_mode, unwrap
from ctllm.dpo.tokenize import TokenizedPair

ATTENTION = "ctllm_gqa_sdpa"
CHECK_TOLERANCE = 1e-3  # max |difference| of summed log-probs (nats) with and without the swap


def _norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    projections = (self.gate_proj, self.up_proj, self.down_proj)
    if all(type(p) is nn.Linear for p in projections):  # noqa: E721 - a subclass (LoRA, quantised) may differ
        return SwiGLU.apply(x, *(t for p in projections for t in (p.weight, p.bias)))
    return self.down_proj(SiluMul.apply(self.gate_proj(x), self.up_proj(x)))


def _head_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return hidden_states


def gqa_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with key/value heads never repeated (torch's kernels handle the groups)."""
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_length > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_length:  # a prefill into a pre-sized cache: only the first positions are keys
        key, value = key[:, :, :q_length], value[:, :, :q_length]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=causal, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    AttentionInterface.register(ATTENTION, gqa_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def _is_rms_norm(module: nn.Module) -> bool:
    # Gemma-style norms scale by (1 + weight) and carry another name; only the plain formula is swapped.
    return (type(module).__name__ in {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}
            and hasattr(module, "variance_epsilon"))


def _is_swiglu(module: nn.Module) -> bool:
    act = getattr(module, "act_fn", None)
    return (all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj"))
            and (isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"))


@dataclass
class LeanModel:
    """What :func:`make_lean` swapped on a model; ``restore`` puts it back."""

    model: nn.Module
    modules: list[nn.Module] = field(default_factory=list)  # instances whose ``forward`` was replaced
    configs: list[tuple[Any, str]] = field(default_factory=list)  # (config, its attention implementation)

    @property
    def active(self) -> bool:
        return bool(self.modules or self.configs)

    def describe(self) -> str:
        kinds = sorted({"LM head in chunks" if getattr(m, HIDDEN_OUT, False) else type(m).__name__
                        for m in self.modules})
        attention = ["grouped-query SDPA"] if self.configs else []
        return ", ".join(kinds + attention) or "nothing"

    def restore(self) -> None:
        for module in self.modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop(HIDDEN_OUT, None)
        for config, implementation in self.configs:
            config._attn_implementation = implementation
        self.modules.clear()
        self.configs.clear()


def make_lean(model: nn.Module) -> LeanModel:
    """Swap the memory-hungry pieces of ``model`` (see the module docstring); returns what to restore."""
    inner = unwrap(model)
    lean = LeanModel(model)
    for module in inner.modules():
        if _is_rms_norm(module):
            module.forward = types.MethodType(_norm_forward, module)
            lean.modules.append(module)
        elif _is_swiglu(module):
            module.forward = types.MethodType(_mlp_forward, module)
            lean.modules.append(module)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is nn.Linear and not _post_processes_logits(inner):  # noqa: E721
        head.forward = types.MethodType(_head_forward, head)
        setattr(head, HIDDEN_OUT, True)
        lean.modules.append(head)
    config = getattr(inner, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        _register_attention()
        lean.configs.append((config, "sdpa"))
        config._attn_implementation = ATTENTION
    return lean


def _post_processes_logits(model: nn.Module) -> bool:
    """Models that scale or soft-cap logits after the head (Gemma, Cohere): the head must stay as it is."""
    config = getattr(model, "config", None)
    return any(getattr(config, name, None) not in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale"))


def check_lean(model: nn.Module, items: Sequence[TokenizedPair], pad_id: int) -> tuple[LeanModel, str]:
    """:func:`make_lean`, kept only if a few pairs' log-probs match the plain model's; returns it and why."""
    sample = collate(list(items[:2]), pad_id)
    lean = LeanModel(model)
    try:
        with trial_mode(model):
            expected = concatenated_forward(model, sample)
            lean = make_lean(model)
            if not lean.active:
                return lean, "no part of this model is of a kind it swaps"
            got = concatenated_forward(model, sample)
    except Exception as error:  # a model whose modules look alike but are called differently
        lean.restore()
        return lean, f"not supported by this model ({type(error).__name__}: {error})"
    diff = logps_difference(expected, got)
    if diff > CHECK_TOLERANCE:
        lean.restore()
        return lean, f"results differ from the plain model (max |diff| {diff:.2e} nats): not used"
    return lean, f"{lean.describe()}; checked against the plain model (max |diff| {diff:.1e} nats)"
