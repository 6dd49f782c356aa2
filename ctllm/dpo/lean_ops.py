"""Autograd functions for a decoder layer's RMSNorm and SwiGLU MLP that keep fewer activations for backward.

Same forward as transformers' Llama-family modules, op for op (so the same numbers); the backward recomputes the
cheap element-wise intermediates instead of keeping them:

- RMSNorm keeps its input and the per-row 1/rms, not the normalised copy (HF autograd keeps both);
- the SwiGLU MLP keeps only its input; the gate and up projections, ``silu(gate)`` and ``silu(gate) * up`` are
  recomputed in backward (HF autograd keeps all four of those wide tensors: two thirds of a layer's activations);
- with projections that are not plain linears (LoRA), ``silu(gate) * up`` keeps gate and up only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _sum_to_last(grad: Tensor) -> Tensor:
    """Sum over every dim but the last: the gradient of a bias or a norm weight."""
    return grad.reshape(-1, grad.size(-1)).sum(0)


def _linear_grads(grad_out: Tensor, inputs: Tensor, weight: Tensor, has_bias: bool, needs: tuple[bool, ...],
                  ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(d input, d weight, d bias) of ``F.linear(inputs, weight, bias)``; ``needs`` says which are wanted."""
    d_input = grad_out @ weight if needs[0] else None
    d_weight = grad_out.reshape(-1, grad_out.size(-1)).t() @ inputs.reshape(-1, inputs.size(-1)) if needs[1] else None
    d_bias = _sum_to_last(grad_out) if has_bias and needs[2] else None
    return d_input, d_weight, d_bias


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # half precision computes in fp32, as transformers does


class RMSNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x²) + eps))``, keeping x and 1/rms for backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        x32 = x.to(_at_least_fp32(x.dtype))
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        x_hat = x.to(rstd.dtype) * rstd
        grad32 = grad.to(rstd.dtype)
        d_weight = _sum_to_last(grad32 * x_hat).to(weight.dtype) if ctx.needs_input_grad[1] else None
        d_x = None
        if ctx.needs_input_grad[0]:
            d_hat = grad32 * weight.to(rstd.dtype)
            # d x = rstd * (d x_hat − x_hat * mean(d x_hat * x_hat)) for x_hat = x * rstd(x)
            d_x = (rstd * (d_hat - x_hat * (d_hat * x_hat).mean(-1, keepdim=True))).to(x.dtype)
        return d_x, d_weight, None


def _silu_parts(gate: Tensor) -> tuple[Tensor, Tensor]:
    """(silu(gate), d silu / d gate)."""
    sig = torch.sigmoid(gate)
    return gate * sig, sig * (1 + gate * (1 - sig))


class SiluMul(torch.autograd.Function):
    """``silu(gate) * up``, keeping gate and up only (used when the projections are not plain linears, e.g. LoRA)."""

    @staticmethod
    def forward(ctx: Any, gate: Tensor, up: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        gate, up = ctx.saved_tensors
        act, d_act = _silu_parts(gate)
        return grad * up * d_act, grad * act


class SwiGLU(torch.autograd.Function):
    """``down(silu(gate(x)) * up(x))`` with plain linear projections, keeping only x for backward.

    Backward computes the gate and up projections again (two of the MLP's three forward matmuls): on a CPU a step
    is bound by memory traffic more than by matmuls, and these two wide tensors are the largest a layer keeps.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_gate: Tensor, b_gate: Tensor | None, w_up: Tensor,  # type: ignore[override]
                b_up: Tensor | None, w_down: Tensor, b_down: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, w_gate, b_gate, w_up, b_up, w_down)
        ctx.down_bias = b_down is not None
        return F.linear(F.silu(F.linear(x, w_gate, b_gate)) * F.linear(x, w_up, b_up), w_down, b_down)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w_gate, b_gate, w_up, b_up, w_down = ctx.saved_tensors
        needs = ctx.needs_input_grad
        gate, up = F.linear(x, w_gate, b_gate), F.linear(x, w_up, b_up)
        act, d_act = _silu_parts(gate)
        del gate
        hidden = act * up
        d_hidden, d_w_down, d_b_down = _linear_grads(grad, hidden, w_down, ctx.down_bias, (True, needs[5], needs[6]))
        del hidden
        d_up = d_hidden * act
        d_gate = d_hidden.mul_(up).mul_(d_act)  # d_hidden is not needed after this
        del act, d_act, up
        d_x_up, d_w_up, d_b_up = _linear_grads(d_up, x, w_up, b_up is not None, (needs[0], needs[3], needs[4]))
        del d_up
        d_x_gate, d_w_gate, d_b_gate = _linear_grads(d_gate, x, w_gate, b_gate is not None,
                                                     (needs[0], needs[1], needs[2]))
        d_x = d_x_up.add_(d_x_gate) if needs[0] else None
        return d_x, d_w_gate, d_b_gate, d_w_up, d_b_up, d_w_down, d_b_down
