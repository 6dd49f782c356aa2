"""The DPO family of losses as pure functions over log-prob tensors, and TRL-named metrics.

Notation: s_c = log π(y_c|x) − log π_ref(y_c|x), s_r likewise, h = s_c − s_r; β the KL strength; ε the label
smoothing (the assumed share of flipped labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ctllm.dpo.config import LOSS_TYPES
from ctllm.dpo.logps import ForwardOutput


@dataclass(frozen=True)
class LossConfig:
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0

    def __post_init__(self) -> None:
        check_loss_config(self.beta, self.loss_type, self.label_smoothing)
        if self.rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {self.rpo_alpha}")


def check_loss_config(beta: float, loss_type: str, label_smoothing: float) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


def preference_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair preference losses.

    Args:
        policy_chosen: [B] log π(y_c|x) (summed over completion tokens; per-token averaged for IPO).
        policy_rejected: [B] log π(y_r|x), same convention.
        ref_chosen: [B] log π_ref(y_c|x), same convention.
        ref_rejected: [B] log π_ref(y_r|x), same convention.
        beta: β > 0 (τ in the IPO paper).
        loss_type: "sigmoid" | "hinge" | "ipo" | "robust".
        label_smoothing: ε in [0, 0.5): conservative DPO for "sigmoid", the unbiased estimator for "robust".

    Returns:
        (losses [B], chosen_rewards [B] = β·s_c, rejected_rewards [B] = β·s_r); rewards are detached.
    """
    check_loss_config(beta, loss_type, label_smoothing)
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    h = chosen_logratios - rejected_logratios
    eps = label_smoothing
    if loss_type == "sigmoid":
        # DPO (Rafailov et al. 2023, arXiv 2305.18290) Eq. 7; with ε > 0 conservative DPO (Mitchell, cdpo.pdf Eq. 3).
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "hinge":
        # Hinge loss of SLiC-HF / RSO (Liu et al. 2023, arXiv 2309.06657) on the DPO log-ratio, margin 1/β.
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        # IPO (Azar et al. 2023, arXiv 2310.12036) Eq. 17: (h − 1/(2τ))², on per-token averaged log-probs.
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        # Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409): the unbiased loss under label-flip rate ε.
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return losses, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()


def _token_weighted_mean(values: Tensor, counts: Tensor) -> float:
    total = counts.sum()
    return float((values * counts).sum() / total) if total > 0 else 0.0


def compute_loss(
    policy: ForwardOutput,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    cfg: LossConfig,
    ref_chosen_tokens: Tensor | None = None,
    ref_rejected_tokens: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss for a batch (mean over pairs, plus rpo_alpha · mean chosen NLL) and metrics under TRL's names.

    Rewards, margins and accuracy always use summed log-probs (β·s as TRL logs them), also for IPO, whose loss
    uses per-token averaged log-probs. ``ref_*_tokens`` default to the policy's counts (the same tokens).
    The RPO term averages each chosen completion's mean token NLL over the batch, so it is invariant to gradient
    accumulation.
    """
    device = policy.chosen_logps.device
    ref_chosen = ref_chosen.to(device=device, dtype=torch.float32)
    ref_rejected = ref_rejected.to(device=device, dtype=torch.float32)
    pc, pr = policy.chosen_logps, policy.rejected_logps
    if cfg.loss_type == "ipo":
        nc = policy.chosen_tokens.clamp(min=1).to(torch.float32)
        nr = policy.rejected_tokens.clamp(min=1).to(torch.float32)
        rnc = nc if ref_chosen_tokens is None else ref_chosen_tokens.to(device).clamp(min=1).to(torch.float32)
        rnr = nr if ref_rejected_tokens is None else ref_rejected_tokens.to(device).clamp(min=1).to(torch.float32)
        losses, _, _ = preference_loss(pc / nc, pr / nr, ref_chosen / rnc, ref_rejected / rnr, cfg.beta, "ipo")
    else:
        losses, _, _ = preference_loss(pc, pr, ref_chosen, ref_rejected, cfg.beta, cfg.loss_type, cfg.label_smoothing)
    chosen_rewards = (cfg.beta * (pc - ref_chosen)).detach()
    rejected_rewards = (cfg.beta * (pr - ref_rejected)).detach()
    loss = losses.mean()
    metrics: dict[str, float] = {}
    if cfg.rpo_alpha > 0:
        nll = policy.chosen_nll.mean()
        loss = loss + cfg.rpo_alpha * nll
        metrics["nll_loss"] = float(nll.detach())
    metrics.update(
        {
            "loss": float(loss.detach()),
            "rewards/chosen": float(chosen_rewards.mean()),
            "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
            "logps/chosen": float(pc.detach().mean()),
            "logps/rejected": float(pr.detach().mean()),
            "logits/chosen": _token_weighted_mean(policy.chosen_logits_mean, policy.chosen_tokens),
            "logits/rejected": _token_weighted_mean(policy.rejected_logits_mean, policy.rejected_tokens),
        }
    )
    return loss, metrics
