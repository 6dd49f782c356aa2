"""DPO-family losses and metrics: against numbers computed by hand (math module), and against TRL 1.16's own values
for every loss type and option (tests/fixtures/trl_losses.json, made by bench/trl_loss_fixtures.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ctllm.dpo.logps import ForwardOutput
from ctllm.dpo.losses import (
    LOSS_TYPES,
    REFERENCE_LOSSES,
    LossConfig,
    PairLogps,
    compute_loss,
    kl_mismatch_order,
    kto_loss,
    kto_objective,
    length_desensitized_logps,
    objective,
    preference_loss,
    wpo_weights,
)

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "trl_losses.json").read_text(encoding="utf-8"))
RTOL = 1e-6

LN2 = 0.6931471805599453
# −log σ(x) = log(1 + e^(−x)), evaluated with math.log1p(math.exp(−x)):
NEG_LOGSIG_0_2 = 0.5981388693815918  # x = 0.2
NEG_LOGSIG_M0_2 = 0.7981388693815918  # x = −0.2  (= 0.598… + 0.2)
NEG_LOGSIG_1_5 = 0.2014132779827524  # x = 1.5
NEG_LOGSIG_M1_5 = 1.7014132779827524  # x = −1.5


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# Pair 0: s_c = −10 − (−11) = 1, s_r = −12 − (−11) = −1, h = 2, βh = 0.2 with β = 0.1.
# Pair 1: s_c = −5 − (−8) = 3, s_r = −20 − (−8) = −12 → h = 15, βh = 1.5.
POLICY_C, POLICY_R = t(-10.0, -5.0), t(-12.0, -20.0)
REF_C, REF_R = t(-11.0, -8.0), t(-11.0, -8.0)


def test_hand_numbers_agree_with_math():
    # The constants above, re-derived once so a typo in them cannot hide.
    assert NEG_LOGSIG_0_2 == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-15)
    assert NEG_LOGSIG_M0_2 == pytest.approx(NEG_LOGSIG_0_2 + 0.2, abs=1e-15)
    assert NEG_LOGSIG_1_5 == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-15)
    assert LN2 == pytest.approx(math.log(2), abs=1e-15)


def test_sigmoid_loss_and_rewards():
    losses, chosen_rewards, rejected_rewards = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1)
    assert losses.tolist() == pytest.approx([NEG_LOGSIG_0_2, NEG_LOGSIG_1_5], abs=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([0.1, 0.3], abs=1e-6)
    assert rejected_rewards.tolist() == pytest.approx([-0.1, -1.2], abs=1e-6)


def test_sigmoid_label_smoothing_is_cdpo():
    losses, _, _ = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, label_smoothing=0.1)
    # 0.9·(−log σ(βh)) + 0.1·(−log σ(−βh))
    expected = [0.9 * NEG_LOGSIG_0_2 + 0.1 * NEG_LOGSIG_M0_2, 0.9 * NEG_LOGSIG_1_5 + 0.1 * NEG_LOGSIG_M1_5]
    assert expected[0] == pytest.approx(0.6181388693815918, abs=1e-12)
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)


def test_hinge_loss():
    losses, _, _ = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="hinge")
    # relu(1 − 0.2) = 0.8; relu(1 − 1.5) = 0
    assert losses.tolist() == pytest.approx([0.8, 0.0], abs=1e-6)


def test_ipo_loss_on_given_logps():
    losses, _, _ = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="ipo")
    # (h − 1/(2β))² = (2 − 5)² = 9 and (15 − 5)² = 100
    assert losses.tolist() == pytest.approx([9.0, 100.0], abs=1e-5)


def test_robust_loss():
    losses, _, _ = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="robust", label_smoothing=0.1)
    # [0.9·(−log σ(βh)) − 0.1·(−log σ(−βh))] / 0.8
    expected0 = (0.9 * NEG_LOGSIG_0_2 - 0.1 * NEG_LOGSIG_M0_2) / 0.8
    assert expected0 == pytest.approx(0.5731388693815918, abs=1e-12)
    expected1 = (0.9 * NEG_LOGSIG_1_5 - 0.1 * NEG_LOGSIG_M1_5) / 0.8
    assert losses.tolist() == pytest.approx([expected0, expected1], abs=1e-6)
    plain, _, _ = preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="robust")
    assert plain.tolist() == pytest.approx([NEG_LOGSIG_0_2, NEG_LOGSIG_1_5], abs=1e-6)


@pytest.mark.parametrize("loss_type", [name for name in REFERENCE_LOSSES if name != "sft"])
def test_rewards_are_detached_and_loss_has_grad(loss_type):
    policy_c = POLICY_C.clone().requires_grad_()
    smoothing = 0.1 if loss_type in ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired") else 0.0
    losses, chosen_rewards, rejected_rewards = preference_loss(
        policy_c, POLICY_R, REF_C, REF_R, beta=0.1, loss_type=loss_type, label_smoothing=smoothing
    )
    assert losses.shape == (2,) and losses.requires_grad
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="loss_type"):
        LossConfig(loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        LossConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta"):
        preference_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing .* exo_pair"):
        LossConfig(loss_type="exo_pair")
    with pytest.raises(ValueError, match="loss_weights"):
        LossConfig(loss_type="sigmoid,sft", loss_weights=(1.0,))
    with pytest.raises(ValueError, match="f_divergence_type"):
        LossConfig(loss_type="bco_pair", f_divergence_type="js_divergence")
    with pytest.raises(ValueError, match="use_weighting"):
        LossConfig(loss_type="aot", use_weighting=True)
    with pytest.raises(ValueError, match="loss_type .* simpo trains on its own"):
        LossConfig(loss_type="simpo,sigmoid")


def forward_output(chosen, rejected, chosen_tokens=(4, 2), rejected_tokens=(5, 5), logits=((1.0, 3.0), (2.0, 2.0))):
    chosen_t = torch.tensor(chosen_tokens)
    return ForwardOutput(
        chosen_logps=chosen,
        rejected_logps=rejected,
        chosen_tokens=chosen_t,
        rejected_tokens=torch.tensor(rejected_tokens),
        chosen_logits_mean=t(*logits[0]),
        rejected_logits_mean=t(*logits[1]),
        chosen_nll=-chosen / chosen_t,
    )


def test_compute_loss_metrics_use_trl_names_and_meanings():
    loss, metrics = compute_loss(forward_output(POLICY_C, POLICY_R), REF_C, REF_R, LossConfig(beta=0.1))
    assert float(loss) == pytest.approx((NEG_LOGSIG_0_2 + NEG_LOGSIG_1_5) / 2, abs=1e-6)
    assert metrics["loss"] == pytest.approx(float(loss))
    assert metrics["rewards/chosen"] == pytest.approx((0.1 + 0.3) / 2, abs=1e-6)
    assert metrics["rewards/rejected"] == pytest.approx((-0.1 - 1.2) / 2, abs=1e-6)
    assert metrics["rewards/margins"] == pytest.approx((0.2 + 1.5) / 2, abs=1e-6)
    assert metrics["rewards/accuracies"] == 1.0
    assert metrics["logps/chosen"] == pytest.approx(-7.5)
    assert metrics["logps/rejected"] == pytest.approx(-16.0)
    # Token-weighted over completion tokens: chosen (1·4 + 3·2)/6, rejected (2·5 + 2·5)/10.
    assert metrics["logits/chosen"] == pytest.approx(10 / 6)
    assert metrics["logits/rejected"] == pytest.approx(2.0)
    assert set(metrics) == {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
    }


def test_accuracy_is_strict_and_margins_signed():
    # Pair 0 equal rewards (policy = reference), pair 1 chosen below rejected: accuracy 0, margin mean −0.5·β·4.
    policy_c, policy_r = t(-3.0, -6.0), t(-4.0, -2.0)
    ref_c, ref_r = t(-3.0, -4.0), t(-4.0, -4.0)
    _, metrics = compute_loss(forward_output(policy_c, policy_r), ref_c, ref_r, LossConfig(beta=0.5))
    assert metrics["rewards/accuracies"] == 0.0
    # margins: pair 0: 0; pair 1: 0.5·(−2) − 0.5·(2) = −2 → mean −1
    assert metrics["rewards/margins"] == pytest.approx(-1.0)
    assert metrics["rewards/chosen"] == pytest.approx(-0.5)
    assert metrics["rewards/rejected"] == pytest.approx(0.5)


def test_policy_equal_to_reference_gives_ln2():
    logps_c, logps_r = t(-7.25, -30.5, -1.0), t(-9.0, -2.5, -1.0)
    out = forward_output(logps_c, logps_r, (3, 9, 1), (4, 2, 1), ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    loss, metrics = compute_loss(out, logps_c.clone(), logps_r.clone(), LossConfig(beta=0.5))
    assert float(loss) == pytest.approx(LN2, abs=1e-7)
    assert metrics["rewards/chosen"] == 0.0 and metrics["rewards/rejected"] == 0.0
    assert metrics["rewards/accuracies"] == 0.0 and metrics["rewards/margins"] == 0.0


def test_ipo_in_compute_loss_uses_per_token_averages():
    # chosen tokens (4, 2), rejected (5, 5): averaged s_c = (1/4, 3/2), s_r = (−1/5, −12/5)
    cfg = LossConfig(beta=0.1, loss_type="ipo")
    loss, metrics = compute_loss(forward_output(POLICY_C, POLICY_R), REF_C, REF_R, cfg)
    h = [0.25 + 0.2, 1.5 + 2.4]
    expected = ((h[0] - 5) ** 2 + (h[1] - 5) ** 2) / 2  # (−4.55)² = 20.7025, (−1.1)² = 1.21
    assert expected == pytest.approx((20.7025 + 1.21) / 2)
    assert float(loss) == pytest.approx(expected, abs=1e-4)
    # rewards stay β·(summed log-ratio), as TRL logs them
    assert metrics["rewards/chosen"] == pytest.approx(0.2, abs=1e-6)


def test_rpo_adds_alpha_times_mean_chosen_nll():
    out = forward_output(POLICY_C, POLICY_R)
    out.chosen_nll = t(2.5, 0.5)  # mean 1.5
    loss, metrics = compute_loss(out, REF_C, REF_R, LossConfig(beta=0.1, rpo_alpha=0.2))
    dpo = (NEG_LOGSIG_0_2 + NEG_LOGSIG_1_5) / 2
    assert float(loss) == pytest.approx(dpo + 0.2 * 1.5, abs=1e-6)
    assert metrics["nll_loss"] == pytest.approx(1.5)
    assert metrics["loss"] == pytest.approx(dpo + 0.3, abs=1e-6)


def test_loss_gradient_matches_the_derivative():
    # d/dπc of −log σ(β(πc − rc − πr + rr)) = −β·σ(−βh); at βh = 0.2: −0.1·σ(−0.2)
    policy_c = t(-10.0).requires_grad_()
    losses, _, _ = preference_loss(policy_c, t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    losses.sum().backward()
    sigma_m02 = 1 / (1 + math.exp(0.2))
    assert float(policy_c.grad) == pytest.approx(-0.1 * sigma_m02, abs=1e-7)


# ---- TRL 1.16's numbers -----------------------------------------------------------------------------------------

def case_id(case: dict) -> str:
    extra = ",".join(f"{k}={v}" for k, v in case["options"].items() if k != "loss_type")
    return f"{case['options']['loss_type']}[{extra}]"


def run_ours(case: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Our loss on the fixture's per-token log-probs, the way the trainer feeds it; (loss, metrics, d loss/d tokens)."""
    dtype = getattr(torch, case["dtype"])
    inputs = {k: torch.tensor(v, dtype=torch.float64).to(dtype) for k, v in FIXTURE["inputs"].items()}
    options = dict(case["options"])
    options["loss_weights"] = tuple(options.get("loss_weights") or ())
    cfg = LossConfig(**options)
    mask = inputs["mask"]
    policy = inputs["policy_token_logps"].clone().requires_grad_(True)
    tokens, ref_tokens = policy * mask, inputs["ref_token_logps"]
    if cfg.ld_alpha < 1:
        sums = length_desensitized_logps(tokens, mask, cfg.ld_alpha)
        ref = length_desensitized_logps(ref_tokens, mask, cfg.ld_alpha)
    else:
        sums, ref = tokens.sum(1), ref_tokens.sum(1)
    b = sums.size(0) // 2
    counts = mask.sum(1)
    x = PairLogps(sums[:b], sums[b:], counts[:b], counts[b:])
    if not cfg.reference_free:
        x.ref_chosen, x.ref_rejected = ref[:b], ref[b:]
    if cfg.needs_nll:
        x.nll = -tokens[:b].sum() / mask[:b].sum()
    if cfg.use_weighting:
        x.weights = wpo_weights(tokens, inputs["log_sum_sq_probs"], mask)
    loss, metrics = objective(x, cfg)
    loss.backward()
    assert policy.grad is not None
    return loss, metrics, policy.grad


def test_fixture_covers_every_loss_type_and_option():
    names = {name for case in FIXTURE["cases"] for name in case["options"]["loss_type"].split(",")}
    assert names == set(LOSS_TYPES)
    options = {key for case in FIXTURE["cases"] for key in case["options"]}
    assert {"loss_weights", "f_divergence_type", "f_alpha_divergence_coef", "ld_alpha", "use_weighting",
            "discopop_tau", "simpo_gamma", "cpo_alpha", "orpo_lambda", "alphapo_alpha", "label_smoothing"} <= options
    assert FIXTURE["trl"] == "1.16.0"


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=case_id)
def test_matches_trl(case):
    loss, metrics, grad = run_ours(case)
    assert float(loss.detach()) == pytest.approx(case["loss"], rel=RTOL)
    expected = case["metrics"]
    assert set(expected) == set(metrics) - {"loss"}, "metric names differ from TRL's"
    for key, value in expected.items():
        assert float(metrics[key]) == pytest.approx(value, rel=RTOL, abs=1e-12), key
    theirs = torch.tensor(case["grad"], dtype=grad.dtype)
    scale = float(theirs.abs().max())
    assert scale > 0
    # Relative to each element, with an absolute floor of 1e-6 of the largest element (float rounding of the
    # entries that are tiny against it); most cases agree to the last bits.
    torch.testing.assert_close(grad, theirs, rtol=RTOL, atol=RTOL * scale * (1e-3 if case["dtype"] == "float64"
                                                                             else 1.0))


# ---- KTO against TRL 1.16's KTOTrainer ---------------------------------------------------------------------------

def kto_case_id(case: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in case["options"].items() if k != "labels") + (
        f",labels={sum(case['options']['labels'])}/{len(case['options']['labels'])}" if "labels" in case["options"]
        else "")


@pytest.mark.parametrize("case", FIXTURE["kto_cases"], ids=kto_case_id)
def test_kto_matches_trl(case):
    inputs = FIXTURE["kto_inputs"]
    mask, kl_mask = torch.tensor(inputs["mask"], dtype=torch.float64), torch.tensor(inputs["kl_mask"],
                                                                                      dtype=torch.float64)
    options = case["options"]
    policy = torch.tensor(inputs["policy_token_logps"], dtype=torch.float64).requires_grad_(True)
    kl_policy = (torch.tensor(inputs["kl_policy_token_logps"], dtype=torch.float64)
                 + options.get("kl_shift", 0.0) * kl_mask).requires_grad_(True)
    labels = torch.tensor(options.get("labels", inputs["labels"]))
    loss, metrics = kto_objective(
        (policy * mask).sum(1), torch.tensor(inputs["ref_token_logps"], dtype=torch.float64).sum(1), labels,
        (kl_policy * kl_mask).sum(1), torch.tensor(inputs["kl_ref_token_logps"], dtype=torch.float64).sum(1),
        beta=options["beta"], desirable_weight=options.get("desirable_weight", 1.0),
        undesirable_weight=options.get("undesirable_weight", 1.0))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(case["loss"], rel=RTOL)
    assert set(case["metrics"]) == set(metrics) - {"loss"}, "metric names differ from TRL's"
    for key, value in case["metrics"].items():
        assert float(metrics[key]) == pytest.approx(value, rel=RTOL, abs=1e-12), key
    theirs = torch.tensor(case["grad"], dtype=torch.float64)
    torch.testing.assert_close(policy.grad, theirs, rtol=RTOL, atol=RTOL * 1e-3 * float(theirs.abs().max()))
    # The reference point is a constant of the step in both: no gradient flows into the KL sequences.
    assert case["kl_grad_is_zero"] and kl_policy.grad is None


def test_kto_fixture_covers_the_clamp_and_one_sided_batches():
    cases = FIXTURE["kto_cases"]
    assert any(c["metrics"]["kl"] == 0.0 for c in cases) and any(c["metrics"]["kl"] > 0.1 for c in cases)
    assert any("rewards/rejected" not in c["metrics"] for c in cases)
    assert any("rewards/chosen" not in c["metrics"] for c in cases)
    assert any(c["options"].get("desirable_weight", 1.0) != 1.0 for c in cases)


def test_kto_loss_by_hand():
    # s_d = 1, s_u = −1, KL pairs' mean log-ratio 0.5 → z0 = 0.5; β = 1:
    # desirable 1 − σ(1 − 0.5), undesirable 1 − σ(0.5 − (−1)), weighted 2 and 1.
    losses, chosen_rewards, rejected_rewards, kl = kto_loss(
        t(-10.0), t(-12.0), t(-4.0, -6.0), t(-11.0), t(-11.0), t(-4.0, -7.0), beta=1.0,
        desirable_weight=2.0, undesirable_weight=1.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert float(kl) == pytest.approx(0.5)
    assert losses.tolist() == pytest.approx([2 * (1 - sig(0.5)), 1 - sig(1.5)], abs=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([1.0]) and rejected_rewards.tolist() == pytest.approx([-1.0])
    # KL estimate below zero is clamped: z0 = 0.
    _, _, _, kl = kto_loss(t(-10.0), t(-12.0), t(-8.0), t(-11.0), t(-11.0), t(-4.0), beta=1.0)
    assert float(kl) == 0.0


def test_kl_mismatch_order_is_trls_cycle():
    completions = ["a", "b", "c", "d"]
    # TRL: KL_completion_ids = [completions[-1]] + completions[:-1]
    assert [completions[i] for i in kl_mismatch_order(4)] == ["d", "a", "b", "c"]
    assert kl_mismatch_order(0) == [] and kl_mismatch_order(1) == [0]
