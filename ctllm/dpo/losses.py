"""The preference-optimization family of losses as pure functions over log-prob tensors, and TRL-named metrics.

Notation: s_c = log π(y_c|x) − log π_ref(y_c|x), s_r likewise (the log-ratios), h = s_c − s_r; β the KL strength;
ε the label smoothing. Every definition follows TRL 1.16 (``DPOTrainer._compute_loss`` for the reference-based
losses, ``trl.experimental`` CPOTrainer.cpo_loss / ORPOTrainer.odds_ratio_loss for the reference-free ones) and is
checked against TRL's own numbers (tests/fixtures/trl_losses.json, made by bench/trl_loss_fixtures.py). Where TRL
departs from the paper, the comment at the branch says so; TRL wins.

A loss is a small function registered by name (``REFERENCE_LOSSES``, ``REFERENCE_FREE_LOSSES``); the trainer asks
``LossConfig.reference_free`` and ``needs_nll``, never the name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ctllm.dpo.config import LOSS_TYPES, loss_field_checks, loss_names
from ctllm.dpo.logps import ForwardOutput
from ctllm.dpo.loss_fields import PAPERS  # noqa: F401  (its old home; one line and paper per loss)


@dataclass(frozen=True)
class LossConfig:
    """The objective's hyperparameters, named as the TrainConfig fields (see ctllm/dpo/config.py for each)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0
    loss_weights: tuple[float, ...] = ()
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    discopop_tau: float = 0.05
    ld_alpha: float = 1.0
    use_weighting: bool = False
    simpo_gamma: float = 0.5
    cpo_alpha: float = 1.0
    orpo_lambda: float = 0.1
    alphapo_alpha: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_weights", tuple(float(w) for w in self.loss_weights))
        for name, ok, why in loss_field_checks(self):
            if not ok:
                raise ValueError(f"{name} = {getattr(self, name)!r} {why}")

    @classmethod
    def of(cls, config: object) -> LossConfig:
        """The objective's fields of a TrainConfig (or anything with those attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def names(self) -> tuple[str, ...]:
        return loss_names(self.loss_type)

    @property
    def weights(self) -> tuple[float, ...]:
        return self.loss_weights or (1.0,) * len(self.names)

    @property
    def reference_free(self) -> bool:
        return self.names[0] in REFERENCE_FREE_LOSSES

    @property
    def needs_nll(self) -> bool:
        """Whether the batch's chosen NLL (``PairLogps.nll``) enters the loss."""
        return bool({"sft", "orpo"} & set(self.names)) or (self.names == ("cpo",) and self.cpo_alpha > 0)


@dataclass
class PairLogps:
    """One batch of B pairs; every tensor is [B] unless noted."""

    chosen: Tensor  # log π(y_c|x) summed over completion tokens (LD-DPO weighted with ld_alpha < 1); carries grad
    rejected: Tensor
    chosen_tokens: Tensor  # completion token counts
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None  # log π_ref, same convention; None for the reference-free losses
    ref_rejected: Tensor | None = None
    nll: Tensor | None = None  # scalar: −Σ log π(chosen tokens) / number of chosen tokens in the batch (sft, cpo, orpo)
    weights: Tensor | None = None  # WPO weights (wpo_weights), with use_weighting


@dataclass
class Terms:
    """What a loss family gives back: per-pair losses, the NLL's weight, rewards and what logps/* logs."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    chosen_logps: Tensor
    rejected_logps: Tensor
    nll_weight: float = 0.0
    extra: dict[str, Tensor] = field(default_factory=dict)


# ---- inputs built from per-token log-probs ----------------------------------------------------------------------

def length_desensitized_logps(token_logps: Tensor, mask: Tensor, ld_alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024, arXiv 2409.06411): tokens past the shorter answer of a pair count ``ld_alpha``.

    ``token_logps``/``mask``: [2B, T], the B chosen rows then the B rejected rows (TRL's layout); returns [2B].
    """
    position = mask.cumsum(dim=1)
    lengths = mask.sum(dim=1).long()
    chosen_lens, rejected_lens = lengths.chunk(2, dim=0)
    shared = torch.minimum(chosen_lens, rejected_lens).repeat(2).unsqueeze(1)
    shared_mask = (position > 0) & (position <= shared)
    tail_mask = position > shared
    return (token_logps * shared_mask).sum(dim=1) + ld_alpha * (token_logps * tail_mask).sum(dim=1)


def wpo_weights(token_logps: Tensor, log_sum_sq_probs: Tensor, mask: Tensor) -> Tensor:
    """WPO (Zhou et al. 2024, arXiv 2406.11827) Eq. 2, as TRL aligns it: per row exp(mean over completion tokens of
    log p(token) − log Σ_v p(v)²), no gradient; the pair's weight is the chosen row's times the rejected row's.

    All inputs [2B, T] (chosen rows then rejected rows); returns [B].
    """
    with torch.no_grad():
        aligned = (token_logps - log_sum_sq_probs) * mask
    weights = torch.exp(aligned.sum(dim=1) / mask.sum(dim=1).clamp_min(1))
    chosen, rejected = weights.chunk(2, dim=0)
    return chosen * rejected


# ---- reference-based losses (TRL DPOConfig.loss_type) ------------------------------------------------------------

@dataclass
class Margins:
    """What the reference-based losses read: log-ratios, f-divergence scores and the raw log-probs (aot)."""

    x: PairLogps
    chosen_logratios: Tensor
    rejected_logratios: Tensor
    chosen_scores: Tensor  # f'(π/π_ref) of the f-divergence; the log-ratio itself for reverse KL
    rejected_scores: Tensor

    @property
    def delta(self) -> Tensor:
        return self.chosen_scores - self.rejected_scores

    def per_token_delta(self) -> Tensor:
        return (self.chosen_scores / self.x.chosen_tokens.clamp(min=1)
                - self.rejected_scores / self.x.rejected_tokens.clamp(min=1))


def _smoothed_sigmoid(z: Tensor, eps: float) -> Tensor:
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _sigmoid(m: Margins, c: LossConfig) -> Tensor:
    # DPO (Rafailov et al. 2023, arXiv 2305.18290) Eq. 7; with ε > 0 conservative DPO (Mitchell, cdpo.pdf Eq. 3).
    # TRL 1.16's sigmoid ignores label_smoothing; at ε = 0 the two are the same.
    return _smoothed_sigmoid(c.beta * m.delta, c.label_smoothing)


def _hinge(m: Margins, c: LossConfig) -> Tensor:
    # Hinge loss of SLiC-HF / RSO (Liu et al. 2023, arXiv 2309.06657) on the DPO log-ratio, margin 1/β.
    return torch.relu(1 - c.beta * m.delta)


def _ipo(m: Margins, c: LossConfig) -> Tensor:
    # IPO (Azar et al. 2023, arXiv 2310.12036) Eq. 17: (h − 1/(2τ))². TRL (and the authors' runs) average the
    # log-ratios over completion tokens; the paper does not say so.
    return (m.per_token_delta() - 1 / (2 * c.beta)) ** 2


def _robust(m: Margins, c: LossConfig) -> Tensor:
    # Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409): the unbiased loss under label-flip rate ε.
    z, eps = c.beta * m.delta, c.label_smoothing
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def _exo_pair(m: Margins, c: LossConfig) -> Tensor:
    # EXO (Ji et al. 2024, arXiv 2402.00856) Eq. 16, K = 2: KL(softmax(β·scores) || [1 − ε, ε]).
    z, eps = c.beta * m.delta, c.label_smoothing
    return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
            + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))


def _nca_pair(m: Margins, c: LossConfig) -> Tensor:
    # NCA (Chen et al. 2024, arXiv 2402.05369), the pairwise form, on β·s (not the f-divergence scores).
    rc, rr = c.beta * m.chosen_logratios, c.beta * m.rejected_logratios
    return -F.logsigmoid(rc) - 0.5 * F.logsigmoid(-rc) - 0.5 * F.logsigmoid(-rr)


def _bco_pair(m: Margins, c: LossConfig) -> Tensor:
    # BCO (Jung et al. 2024, arXiv 2404.04656) on pairs. The paper (and TRL before 1.x) shifts both rewards by a
    # running mean δ of the rewards; TRL 1.16 dropped δ: -log σ(β·s_c) − log σ(−β·s_r). TRL 1.16 is followed.
    return -F.logsigmoid(c.beta * m.chosen_logratios) - F.logsigmoid(-c.beta * m.rejected_logratios)


def _sppo_hard(m: Margins, c: LossConfig) -> Tensor:
    # SPPO (Wu et al. 2024, arXiv 2405.00675) Eq. 4.7 with hard probabilities (1 for the winner, 0 for the loser).
    return (m.chosen_logratios - 0.5 / c.beta) ** 2 + (m.rejected_logratios + 0.5 / c.beta) ** 2


def _aot(m: Margins, c: LossConfig) -> Tensor:
    # AOT (Melnyk et al. 2024, arXiv 2406.05882), paired: the sorted policy log-ratios dominate the sorted reference
    # ones across the batch.
    x = m.x
    assert x.ref_chosen is not None and x.ref_rejected is not None
    policy, _ = torch.sort(x.chosen - x.rejected, dim=0)
    reference, _ = torch.sort(x.ref_chosen - x.ref_rejected, dim=0)
    return _smoothed_sigmoid(c.beta * (policy - reference), c.label_smoothing)


def _aot_unpaired(m: Margins, c: LossConfig) -> Tensor:
    # AOT unpaired (same paper): sorted chosen log-ratios against sorted rejected ones.
    chosen, _ = torch.sort(m.chosen_logratios, dim=0)
    rejected, _ = torch.sort(m.rejected_logratios, dim=0)
    return _smoothed_sigmoid(c.beta * (chosen - rejected), c.label_smoothing)


def _apo_zero(m: Margins, c: LossConfig) -> Tensor:
    # APO-zero (D'Oosterlinck et al. 2024, arXiv 2408.06266) Eq. 7: chosen up, rejected down.
    return 1 - torch.sigmoid(c.beta * m.chosen_logratios) + torch.sigmoid(c.beta * m.rejected_logratios)


def _apo_down(m: Margins, c: LossConfig) -> Tensor:
    # APO-down (same paper) Eq. 8: both down, the rejected more.
    return (torch.sigmoid(c.beta * m.chosen_logratios)
            + 1 - torch.sigmoid(c.beta * (m.chosen_logratios - m.rejected_logratios)))


def _discopop(m: Margins, c: LossConfig) -> Tensor:
    # DiscoPOP (Chris Lu et al. 2024, arXiv 2406.08414) Eq. 5: logistic and exponential losses blended by σ(βh/τ).
    z = c.beta * m.delta
    blend = torch.sigmoid(z / c.discopop_tau)
    return -F.logsigmoid(z) * (1 - blend) + torch.exp(-z) * blend


def _sft(m: Margins, c: LossConfig) -> Tensor:
    # NLL of the chosen completions averaged over the batch's tokens (summed with others: RPO, MPO). TRL computes it
    # on the raw token log-probs, also under LD-DPO: the caller's nll is that.
    assert m.x.nll is not None
    return m.x.nll.expand(m.chosen_logratios.size(0))


def _sigmoid_norm(m: Margins, c: LossConfig) -> Tensor:
    # Length-normalised DPO (as in SimPO's ablation, arXiv 2405.14734): DPO on per-token averaged log-ratios.
    return -F.logsigmoid(c.beta * m.per_token_delta())


REFERENCE_LOSSES: dict[str, Callable[[Margins, LossConfig], Tensor]] = {
    "sigmoid": _sigmoid, "hinge": _hinge, "ipo": _ipo, "robust": _robust, "exo_pair": _exo_pair,
    "nca_pair": _nca_pair, "bco_pair": _bco_pair, "sppo_hard": _sppo_hard, "aot": _aot, "aot_unpaired": _aot_unpaired,
    "apo_zero": _apo_zero, "apo_down": _apo_down, "discopop": _discopop, "sft": _sft, "sigmoid_norm": _sigmoid_norm,
}

_EXP_CLAMP = {torch.float16: 11.0, torch.bfloat16: 80.0, torch.float32: 80.0, torch.float64: 80.0}


def f_divergence_scores(logratios: Tensor, kind: str, alpha: float = 0.5) -> Tensor:
    """f'(t) at t = π/π_ref for f-DPO (Wang et al. 2023, arXiv 2309.16240), from log t; reverse KL gives log t."""
    if kind == "reverse_kl":
        return logratios
    if kind == "forward_kl":  # f'(t) = 1 − 1/t
        return 1 - torch.exp(-logratios)
    if kind == "js_divergence":  # f'(t) = log(2t / (t + 1))
        return math.log(2) + F.logsigmoid(logratios)
    if kind == "alpha_divergence":  # f'(t) = (t^(α−1) − 1) / (α − 1); α → 1 is reverse KL
        if abs(alpha - 1.0) < 1e-6:
            return logratios
        t = torch.clamp(((alpha - 1.0) * logratios).float(), max=_EXP_CLAMP[logratios.dtype])
        return (torch.exp(t) - 1.0).to(logratios.dtype) / (alpha - 1.0)
    raise ValueError(f"unknown f_divergence_type {kind!r}")


def _reference_terms(x: PairLogps, c: LossConfig) -> Terms:
    assert x.ref_chosen is not None and x.ref_rejected is not None, "these losses need reference log-probs"
    chosen_logratios, rejected_logratios = x.chosen - x.ref_chosen, x.rejected - x.ref_rejected
    m = Margins(x, chosen_logratios, rejected_logratios,
                f_divergence_scores(chosen_logratios, c.f_divergence_type, c.f_alpha_divergence_coef),
                f_divergence_scores(rejected_logratios, c.f_divergence_type, c.f_alpha_divergence_coef))
    losses = torch.zeros_like(x.chosen)
    for name, weight in zip(c.names, c.weights, strict=True):
        per_pair = REFERENCE_LOSSES[name](m, c)
        if c.use_weighting:
            assert x.weights is not None, "use_weighting needs the WPO weights"
            per_pair = per_pair * x.weights
        losses = losses + weight * per_pair
    return Terms(losses, (c.beta * chosen_logratios).detach(), (c.beta * rejected_logratios).detach(),
                 x.chosen.detach(), x.rejected.detach())


# ---- reference-free losses (trl.experimental CPO / ORPO) ---------------------------------------------------------

def _averages(x: PairLogps) -> tuple[Tensor, Tensor]:
    return x.chosen / x.chosen_tokens.clamp(min=1), x.rejected / x.rejected_tokens.clamp(min=1)


def _cpo_family(chosen: Tensor, rejected: Tensor, c: LossConfig, gamma: float, nll_weight: float,
                chosen_logps: Tensor, rejected_logps: Tensor) -> Terms:
    """TRL CPOTrainer.cpo_loss, loss_type sigmoid / simpo: −(1−ε)·log σ(β·(r_c − r_r) − γ) − ε·log σ(…)."""
    logits = chosen - rejected - gamma / c.beta
    return Terms(_smoothed_sigmoid(c.beta * logits, c.label_smoothing), (c.beta * chosen).detach(),
                 (c.beta * rejected).detach(), chosen_logps.detach(), rejected_logps.detach(), nll_weight)


def _cpo(x: PairLogps, c: LossConfig) -> Terms:
    # CPO (Xu et al. 2024, arXiv 2401.08417) Eq. 3 plus cpo_alpha × NLL of the chosen answers; summed log-probs.
    terms = _cpo_family(x.chosen, x.rejected, c, 0.0, c.cpo_alpha, x.chosen, x.rejected)
    if x.nll is not None:
        terms.extra["nll_loss"] = x.nll.detach()
    return terms


def _simpo(x: PairLogps, c: LossConfig) -> Terms:
    # SimPO (Meng et al. 2024, arXiv 2405.14734) Eq. 6: per-token averaged log-probs, target margin γ. TRL's
    # CPOTrainer(loss_type="simpo") also adds cpo_alpha × NLL (CPO-SimPO); with cpo_alpha = 0 it is the paper's.
    chosen, rejected = _averages(x)
    return _cpo_family(chosen, rejected, c, c.simpo_gamma, 0.0, chosen, rejected)


def _alphapo(x: PairLogps, c: LossConfig) -> Terms:
    # AlphaPO (Gupta et al. 2025, arXiv 2501.03884): SimPO on the reward r = (1 − p^(−α)) / α of the per-token
    # averaged probability p (TRL CPOConfig loss_type="alphapo": simpo with alpha, cpo_alpha 0).
    chosen, rejected = _averages(x)
    a = c.alphapo_alpha
    return _cpo_family((1 - torch.exp(-a * chosen)) / a, (1 - torch.exp(-a * rejected)) / a, c, c.simpo_gamma, 0.0,
                       chosen, rejected)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x < 0, switching form at −ln 2 against cancellation (as TRL's ORPO)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _orpo(x: PairLogps, c: LossConfig) -> Terms:
    # ORPO (Hong et al. 2024, arXiv 2403.07691) Eqs. 4 and 7: NLL − λ·log σ(log odds(y_c) − log odds(y_r)) on
    # per-token averaged log-probs. TRL's NLL covers the prompt tokens too; this engine's covers the answer only.
    chosen, rejected = _averages(x)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    ratio = F.logsigmoid(log_odds)
    terms = Terms(-c.orpo_lambda * ratio, (c.orpo_lambda * chosen).detach(), (c.orpo_lambda * rejected).detach(),
                  chosen.detach(), rejected.detach(), 1.0,
                  {"log_odds_ratio": ratio.detach().mean(), "log_odds_chosen": log_odds.detach().mean()})
    assert x.nll is not None, "orpo needs the chosen NLL"
    terms.extra["nll_loss"] = x.nll.detach()
    return terms


REFERENCE_FREE_LOSSES: dict[str, Callable[[PairLogps, LossConfig], Terms]] = {
    "simpo": _simpo, "cpo": _cpo, "orpo": _orpo, "alphapo": _alphapo,
}
assert tuple(REFERENCE_LOSSES) + tuple(REFERENCE_FREE_LOSSES) == LOSS_TYPES


def extra_metric_names(c: LossConfig) -> tuple[str, ...]:
    """Metrics a loss logs beyond the DPO set (the same on every process)."""
    names = c.names
    if names == ("orpo",):
        return ("nll_loss", "log_odds_ratio", "log_odds_chosen")
    if names == ("cpo",) and c.cpo_alpha > 0:
        return ("nll_loss",)
    return ("nll_loss",) if c.rpo_alpha > 0 else ()


def objective(x: PairLogps, c: LossConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """The batch's scalar loss and its metrics under TRL's names (detached 0-d tensors).

    Reference-based: Σ_k w_k · mean(loss_k) with rewards β·s. CPO/SimPO/AlphaPO: mean loss (+ cpo_alpha·NLL) with
    rewards β·(log-prob or AlphaPO reward); ORPO: NLL + mean(−λ·log σ(log odds ratio)) with rewards λ·averaged
    log-prob. ``logps/*`` are what the loss used (summed; per-token averaged for SimPO, AlphaPO and ORPO).
    """
    terms = REFERENCE_FREE_LOSSES[c.names[0]](x, c) if c.reference_free else _reference_terms(x, c)
    loss = terms.losses.mean()
    if terms.nll_weight:
        assert x.nll is not None, f"{c.loss_type} needs the chosen NLL"
        loss = loss + terms.nll_weight * x.nll
    metrics = {
        "loss": loss.detach(),
        "rewards/chosen": terms.chosen_rewards.mean(),
        "rewards/rejected": terms.rejected_rewards.mean(),
        "rewards/accuracies": (terms.chosen_rewards > terms.rejected_rewards).to(loss.dtype).mean(),
        "rewards/margins": (terms.chosen_rewards - terms.rejected_rewards).mean(),
        "logps/chosen": terms.chosen_logps.mean(),
        "logps/rejected": terms.rejected_logps.mean(),
        **terms.extra,
    }
    return loss, metrics


def preference_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pair losses of one reference-based loss on summed log-probs (IPO: pass per-token averaged ones).

    Returns (losses [B], chosen_rewards [B] = β·s_c, rejected_rewards [B] = β·s_r); rewards are detached.
    """
    if loss_type not in REFERENCE_LOSSES or loss_type == "sft":
        raise ValueError(f"unknown loss_type {loss_type!r} for preference_loss; one of "
                         f"{', '.join(n for n in REFERENCE_LOSSES if n != 'sft')}")
    c = LossConfig(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
    ones = torch.ones_like(policy_chosen)
    x = PairLogps(policy_chosen, policy_rejected, ones, ones, ref_chosen, ref_rejected)
    s_c, s_r = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = REFERENCE_LOSSES[loss_type](Margins(x, s_c, s_r, s_c, s_r), c)
    return losses, (beta * s_c).detach(), (beta * s_r).detach()


# ---- KTO: unpaired desirable / undesirable examples (TRL KTOTrainer) -------------------------------------------

def kl_mismatch_order(n: int) -> list[int]:
    """Which completion each example's KL sequence borrows: the previous one in the batch, cyclically.

    TRL's KTOTrainer builds ``KL_completion_ids = [completions[-1]] + completions[:-1]``, so example i's prompt is
    paired with completion i − 1 (example 0 with the last): mismatched (x, y') pairs from the same batch.
    """
    return [n - 1, *range(n - 1)] if n > 0 else []


def kto_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    policy_KL_logps: Tensor,  # noqa: N803  (TRL's name)
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    ref_KL_logps: Tensor,  # noqa: N803
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """KTO (Ethayarajh et al. 2024, arXiv 2402.01306) Eq. 7 as TRL 1.16's ``KTOTrainer._compute_loss`` writes it.

    The reference point z₀ is the batch mean of log π(y'|x) − log π_ref(y'|x) over the mismatched KL pairs,
    detached and clamped at 0. Desirable examples lose 1 − σ(β(s − z₀)), undesirable ones 1 − σ(β(z₀ − s)).
    Returns (losses [N_d + N_u]: the weighted desirable losses then the weighted undesirable ones, whose mean is
    TRL's loss; chosen rewards β·s; rejected rewards β·s, both detached; z₀, a 0-d tensor).
    """
    if beta <= 0:
        raise ValueError(f"beta = {beta!r} must be > 0")
    kl = (policy_KL_logps - ref_KL_logps).mean().detach().clamp(min=0)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach(), kl


def kto_objective(
    logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    kl_logps: Tensor,
    ref_kl_logps: Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One batch of N unpaired examples (summed completion log-probs [N], ``labels`` [N] bool: desirable) and its
    N KL sequences: TRL's scalar loss and its metrics under TRL 1.16's names (``kl``; ``rewards/chosen`` and
    ``logps/chosen`` averaged over the desirable examples, ``rewards/rejected`` / ``logps/rejected`` over the
    undesirable ones, logged only where the batch has some; ``rewards/margins`` only where it has both).
    """
    labels = labels.to(device=logps.device, dtype=torch.bool)
    chosen_logps, rejected_logps = logps[labels], logps[~labels]
    losses, chosen_rewards, rejected_rewards, kl = kto_loss(
        chosen_logps, rejected_logps, kl_logps, ref_logps[labels], ref_logps[~labels], ref_kl_logps,
        beta, desirable_weight, undesirable_weight)
    loss = losses.mean()
    metrics: dict[str, Tensor] = {"loss": loss.detach(), "kl": kl}
    if chosen_logps.numel():
        metrics["rewards/chosen"] = chosen_rewards.mean()
        metrics["logps/chosen"] = chosen_logps.detach().mean()
    if rejected_logps.numel():
        metrics["rewards/rejected"] = rejected_rewards.mean()
        metrics["logps/rejected"] = rejected_logps.detach().mean()
    if chosen_logps.numel() and rejected_logps.numel():
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return loss, metrics


def batch_nll(policy: ForwardOutput) -> Tensor:
    """−Σ log π(chosen tokens) / number of chosen tokens over the batch (TRL's CrossEntropyLoss mean)."""
    return -policy.chosen_logps.sum() / policy.chosen_tokens.sum().clamp(min=1)


def _token_weighted_mean(values: Tensor, counts: Tensor) -> float:
    total = counts.sum()
    return float((values * counts).sum() / total) if total > 0 else 0.0


def compute_loss(
    policy: ForwardOutput,
    ref_chosen: Tensor | None,
    ref_rejected: Tensor | None,
    cfg: LossConfig,
) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss for a batch of the engine's forward (plus rpo_alpha · mean chosen NLL) and metrics under TRL's
    names. ``ref_*`` are None for the reference-free losses.

    The RPO term averages each chosen completion's mean token NLL over the batch, so it is invariant to gradient
    accumulation; the sft / cpo / orpo NLL is TRL's token mean over the batch.
    """
    device = policy.chosen_logps.device
    if ref_chosen is not None and ref_rejected is not None:
        ref_chosen = ref_chosen.to(device=device, dtype=torch.float32)
        ref_rejected = ref_rejected.to(device=device, dtype=torch.float32)
    x = PairLogps(policy.chosen_logps, policy.rejected_logps, policy.chosen_tokens.to(torch.float32),
                  policy.rejected_tokens.to(torch.float32), ref_chosen, ref_rejected,
                  batch_nll(policy) if cfg.needs_nll else None)
    loss, tensors = objective(x, cfg)
    metrics = {key: float(value) for key, value in tensors.items()}
    if cfg.rpo_alpha > 0:
        nll = policy.chosen_nll.mean()
        loss = loss + cfg.rpo_alpha * nll
        metrics["nll_loss"] = float(nll.detach())
        metrics["loss"] = float(loss.detach())
    metrics["logits/chosen"] = _token_weighted_mean(policy.chosen_logits_mean, policy.chosen_tokens)
    metrics["logits/rejected"] = _token_weighted_mean(policy.rejected_logits_mean, policy.rejected_tokens)
    return loss, metrics
