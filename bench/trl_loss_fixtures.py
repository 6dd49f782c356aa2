"""TRL 1.16's loss, metric and gradient values on fixed inputs, for every loss type and option this engine offers.

Writes ``tests/fixtures/trl_losses.json``; ``tests/test_dpo_losses.py`` checks ``ctllm.dpo.losses`` against it
(1e-6 relative). The numbers come from TRL's own code, not a copy of it:

- reference-based losses (``DPOConfig.loss_type``, ``loss_weights``, ``f_divergence_type``, ``ld_alpha``,
  ``use_weighting``): ``DPOTrainer._compute_loss`` on a bare trainer object whose policy and reference are stub
  modules returning fixed per-token log-probs (what TRL's fused LM head returns: 0 outside the completion);
- CPO / SimPO / AlphaPO: ``trl.experimental.cpo.CPOTrainer.get_batch_loss_metrics`` and ORPO:
  ``trl.experimental.orpo.ORPOTrainer.get_batch_loss_metrics``, with ``concatenated_forward`` giving the same
  log-probs (summed, or per-token averaged where TRL averages) and the chosen NLL (CrossEntropyLoss's mean over the
  chosen completion tokens).

Gradients are taken w.r.t. the policy's per-token log-probs [2B, T] (chosen rows, then rejected rows), so they
cover LD-DPO's weighting and the NLL as well as the loss. Everything runs in float64 except alpha_divergence,
whose clamp table in TRL knows no float64 (float32 there).

TRL is needed only here, never at run time; it lives in its own venv::

    /work/trl-venv/bin/python bench/trl_loss_fixtures.py [--out tests/fixtures/trl_losses.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "trl_losses.json"
B, T = 6, 8  # pairs, completion positions (after the shift)
CHOSEN_LENGTHS = (5, 3, 8, 2, 6, 4)
REJECTED_LENGTHS = (4, 7, 2, 5, 6, 1)

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# label_smoothing where the loss reads it (exo_pair needs it > 0).
SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.1, "aot_unpaired": 0.1}


def dpo_cases() -> list[dict[str, Any]]:
    cases = [{"loss_type": [name], "beta": 0.1, "label_smoothing": SMOOTHING.get(name, 0.0)} for name in DPO_LOSSES]
    cases += [
        {"loss_type": ["sigmoid"], "beta": 0.5},
        {"loss_type": ["exo_pair"], "beta": 0.3, "label_smoothing": 0.2},
        {"loss_type": ["discopop"], "beta": 0.2, "discopop_tau": 0.5},
        {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0], "beta": 0.1},  # MPO
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5], "beta": 0.2},  # RPO as TRL 1.16 writes it
        {"loss_type": ["apo_zero", "ipo"], "beta": 0.3},
    ]
    for kind in ("forward_kl", "js_divergence"):
        cases += [{"loss_type": [name], "beta": 0.1, "f_divergence_type": kind,
                   "label_smoothing": SMOOTHING.get(name, 0.0)}
                  for name in ("sigmoid", "hinge", "ipo", "robust", "exo_pair", "discopop", "sigmoid_norm")]
    cases += [{"loss_type": ["sigmoid"], "beta": 0.1, "f_divergence_type": "alpha_divergence",
               "f_alpha_divergence_coef": coef} for coef in (0.5, 0.3, 1.0)]
    cases += [{"loss_type": ["ipo"], "beta": 0.1, "f_divergence_type": "alpha_divergence",
               "f_alpha_divergence_coef": 0.5}]
    cases += [{"loss_type": [name], "beta": 0.1, "ld_alpha": 0.5} for name in ("sigmoid", "ipo", "sft", "aot")]
    cases += [{"loss_type": ["sigmoid"], "beta": 0.1, "ld_alpha": 0.0}]
    cases += [{"loss_type": [name], "beta": 0.1, "use_weighting": True,
               "label_smoothing": SMOOTHING.get(name, 0.0)} for name in ("sigmoid", "ipo", "robust", "apo_down")]
    # sft with use_weighting is left out: TRL 1.16 fails on it (an in-place multiply of the expanded scalar loss).
    cases += [{"loss_type": ["sigmoid", "bco_pair"], "loss_weights": [1.0, 0.3], "beta": 0.1, "use_weighting": True,
               "ld_alpha": 0.7}]
    return cases


def cpo_cases() -> list[dict[str, Any]]:
    return [
        {"loss_type": "cpo", "beta": 0.1, "cpo_alpha": 1.0},
        {"loss_type": "cpo", "beta": 0.2, "cpo_alpha": 0.5, "label_smoothing": 0.1},
        {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 0.5},
        {"loss_type": "simpo", "beta": 2.5, "simpo_gamma": 1.4, "label_smoothing": 0.05},
        {"loss_type": "alphapo", "beta": 2.0, "simpo_gamma": 0.5, "alphapo_alpha": 0.25},
        {"loss_type": "alphapo", "beta": 1.0, "simpo_gamma": 0.3, "alphapo_alpha": -0.5},
        {"loss_type": "orpo", "orpo_lambda": 0.1},
        {"loss_type": "orpo", "orpo_lambda": 0.5},
    ]


def make_inputs(torch: Any) -> dict[str, Any]:
    """Seeded per-token log-probs; the masks hold each row's completion tokens (position 0 of the unshifted mask
    is a prompt token, so shifted and unshifted counts agree)."""
    gen = torch.Generator().manual_seed(1234)
    mask = torch.zeros(2 * B, T, dtype=torch.float64)
    for row, length in enumerate(CHOSEN_LENGTHS + REJECTED_LENGTHS):
        mask[row, :length] = 1
    policy = -(0.05 + 2.45 * torch.rand(2 * B, T, generator=gen, dtype=torch.float64))
    ref = (policy + 0.3 * torch.randn(2 * B, T, generator=gen, dtype=torch.float64)).clamp(max=-0.01)
    log_sum_sq = -(0.3 + 2.0 * torch.rand(2 * B, T, generator=gen, dtype=torch.float64))
    return {"policy_token_logps": policy * mask, "ref_token_logps": ref * mask, "mask": mask,
            "log_sum_sq_probs": log_sum_sq}


class StubModel(torch.nn.Module):
    """What DPOTrainer reads of a model's fused-head output: fixed per-token log-probs (0 outside the completion)."""

    is_gradient_checkpointing = False

    def __init__(self, token_logps: Any, log_sum_sq: Any, training: bool) -> None:
        super().__init__()
        self.token_logps, self.log_sum_sq = token_logps, log_sum_sq
        self.train(training)

    def forward(self, **_: Any) -> SimpleNamespace:
        zeros = torch.zeros_like(self.token_logps)
        return SimpleNamespace(log_probs=self.token_logps, entropy=zeros.detach(), mean_logits=zeros.detach(),
                               is_top1=zeros.detach().bool(), log_sum_sq_probs=self.log_sum_sq, aux_loss=None)


def run_dpo(torch: Any, accelerator: Any, inputs: dict[str, Any], case: dict[str, Any], dtype: Any) -> dict:
    from trl import DPOTrainer

    policy = inputs["policy_token_logps"].to(dtype).clone().requires_grad_(True)
    mask = inputs["mask"].to(dtype)
    trainer = object.__new__(DPOTrainer)
    trainer.beta = case["beta"]
    trainer.loss_types = case["loss_type"]
    trainer.loss_weights = case.get("loss_weights") or [1.0] * len(case["loss_type"])
    trainer.ld_alpha = case.get("ld_alpha")
    trainer.f_divergence_type = case.get("f_divergence_type", "reverse_kl")
    trainer.f_alpha_divergence_coef = case.get("f_alpha_divergence_coef", 0.5)
    trainer.label_smoothing = case.get("label_smoothing", 0.0)
    trainer.use_weighting = case.get("use_weighting", False)
    trainer.args = SimpleNamespace(discopop_tau=case.get("discopop_tau", 0.05), gradient_checkpointing_kwargs=None)
    trainer.accelerator = accelerator
    trainer.aux_loss_enabled = False
    trainer.precompute_ref_logps = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    trainer.model = StubModel(policy * mask, inputs["log_sum_sq_probs"].to(dtype), training=True)
    trainer.ref_model = StubModel(inputs["ref_token_logps"].to(dtype), None, training=False)
    completion_mask = torch.cat([torch.zeros(2 * B, 1, dtype=torch.long), mask.long()], dim=1)
    batch = {"input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
             "completion_mask": completion_mask}
    loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()
               if k.startswith(("rewards/", "logps/"))}
    return {"loss": float(loss.detach()), "metrics": metrics, "grad": policy.grad.tolist()}


def _concatenated(torch: Any, policy: Any, mask: Any, average: bool, with_nll: bool) -> tuple:
    sums = (policy * mask).sum(-1)
    logps = sums / mask.sum(-1) if average else sums
    chosen_mask = mask[:B]
    nll = -(policy[:B] * chosen_mask).sum() / chosen_mask.sum() if with_nll else torch.tensor(0.0, dtype=policy.dtype)
    zeros = torch.zeros(B, 1, dtype=policy.dtype)
    return logps[:B], logps[B:], zeros, zeros, nll


def run_reference_free(torch: Any, accelerator: Any, inputs: dict[str, Any], case: dict[str, Any]) -> dict:
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    policy = inputs["policy_token_logps"].clone().requires_grad_(True)
    mask = inputs["mask"]
    name = case["loss_type"]
    if name == "orpo":
        trainer = object.__new__(ORPOTrainer)
        trainer.beta = case["orpo_lambda"]
        average, with_nll = True, True
    else:
        trainer = object.__new__(CPOTrainer)
        trainer.beta = case["beta"]
        trainer.loss_type = "sigmoid" if name == "cpo" else "simpo"  # TRL's "alphapo" is simpo with alpha
        trainer.alpha = case.get("alphapo_alpha", 0.0)
        trainer.simpo_gamma = case.get("simpo_gamma", 0.5)
        trainer.label_smoothing = case.get("label_smoothing", 0.0)
        trainer.cpo_alpha = case.get("cpo_alpha", 0.0) if name == "cpo" else 0.0
        average, with_nll = name != "cpo", trainer.cpo_alpha != 0
    trainer.accelerator = accelerator
    trainer.aux_loss_enabled = False
    trainer.concatenated_forward = lambda model, batch: _concatenated(torch, policy, mask, average, with_nll)
    loss, metrics = trainer.get_batch_loss_metrics(None, {}, train_eval="train")
    loss.backward()
    keep = {k: v for k, v in metrics.items() if not k.startswith("logits/")}
    if not with_nll:
        keep.pop("nll_loss", None)  # TRL logs a constant 0 when the NLL is off; this engine logs nothing
    return {"loss": float(loss.detach()), "metrics": keep, "grad": policy.grad.tolist()}


# ---- KTO (KTOTrainer._compute_loss): N unpaired examples and their N mismatched KL sequences --------------------

KTO_LABELS = (True, False, True, True, False, False, True, False)
KTO_LENGTHS = (5, 3, 8, 2, 6, 4, 7, 1)


def kto_cases() -> list[dict[str, Any]]:
    return [
        {"beta": 0.1},
        {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 1.0},
        {"beta": 0.2, "desirable_weight": 1.0, "undesirable_weight": 0.7},
        {"beta": 0.1, "kl_shift": -3.0},  # policy below the reference on the KL pairs: TRL clamps the KL at 0
        {"beta": 0.3, "labels": [True] * len(KTO_LABELS)},  # desirable examples only
        {"beta": 0.3, "labels": [False] * len(KTO_LABELS)},  # undesirable examples only
    ]


def make_kto_inputs(torch: Any) -> dict[str, Any]:
    """Seeded per-token log-probs of N examples and of their KL sequences (example i's prompt with completion i − 1,
    so the KL masks are the completion masks cycled by one, as TRL builds them)."""
    gen = torch.Generator().manual_seed(4321)
    n = len(KTO_LENGTHS)
    mask = torch.zeros(n, T, dtype=torch.float64)
    for row, length in enumerate(KTO_LENGTHS):
        mask[row, :length] = 1
    kl_mask = torch.roll(mask, shifts=1, dims=0)

    def draw(m: Any, ref_offset: float) -> tuple[Any, Any]:
        policy = -(0.05 + 2.45 * torch.rand(n, T, generator=gen, dtype=torch.float64))
        noise = 0.3 * torch.randn(n, T, generator=gen, dtype=torch.float64)
        return policy * m, (policy + noise + ref_offset).clamp(max=-0.01) * m

    policy, ref = draw(mask, 0.05)
    kl_policy, kl_ref = draw(kl_mask, -0.1)  # the policy a little above the reference: a positive KL estimate
    return {"policy_token_logps": policy, "ref_token_logps": ref, "kl_policy_token_logps": kl_policy,
            "kl_ref_token_logps": kl_ref, "mask": mask, "kl_mask": kl_mask, "labels": list(KTO_LABELS)}


class KTOStubModel(torch.nn.Module):
    """Fixed per-token log-probs for the examples (input_ids of 0) and for the KL sequences (input_ids of 1)."""

    is_gradient_checkpointing = False

    def __init__(self, token_logps: Any, kl_token_logps: Any, training: bool) -> None:
        super().__init__()
        self.token_logps, self.kl_token_logps = token_logps, kl_token_logps
        self.train(training)

    def forward(self, input_ids: Any, **_: Any) -> SimpleNamespace:
        logps = self.kl_token_logps if bool(input_ids[0, 0] == 1) else self.token_logps
        zeros = torch.zeros_like(logps)
        return SimpleNamespace(log_probs=logps, entropy=zeros.detach(), mean_logits=zeros.detach(), aux_loss=None)


def run_kto(torch: Any, accelerator: Any, inputs: dict[str, Any], case: dict[str, Any]) -> dict:
    from trl import KTOTrainer

    dtype = torch.float64
    policy = inputs["policy_token_logps"].clone().requires_grad_(True)
    kl_policy = (inputs["kl_policy_token_logps"] + case.get("kl_shift", 0.0) * inputs["kl_mask"]).clone()
    kl_policy.requires_grad_(True)
    trainer = object.__new__(KTOTrainer)
    trainer.beta = case["beta"]
    trainer.loss_type = "kto"
    trainer.desirable_weight = case.get("desirable_weight", 1.0)
    trainer.undesirable_weight = case.get("undesirable_weight", 1.0)
    trainer.calculate_KL = True
    trainer.precompute_ref_logps = False
    trainer.aux_loss_enabled = False
    trainer.accelerator = accelerator
    trainer.args = SimpleNamespace(gradient_checkpointing_kwargs=None)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    trainer.model = KTOStubModel(policy * inputs["mask"], kl_policy * inputs["kl_mask"], training=True)
    trainer.ref_model = KTOStubModel(inputs["ref_token_logps"].to(dtype), inputs["kl_ref_token_logps"].to(dtype),
                                     training=False)
    labels = case.get("labels", inputs["labels"])

    def padded(m: Any, fill: int) -> tuple[Any, Any]:
        completion_mask = torch.cat([torch.zeros(m.size(0), 1, dtype=torch.long), m.long()], dim=1)
        return torch.full_like(completion_mask, fill), completion_mask

    input_ids, completion_mask = padded(inputs["mask"], 0)
    kl_input_ids, kl_completion_mask = padded(inputs["kl_mask"], 1)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "completion_mask": completion_mask,
             "KL_input_ids": kl_input_ids, "KL_attention_mask": torch.ones_like(kl_input_ids),
             "KL_completion_mask": kl_completion_mask, "label": torch.tensor(labels)}
    loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k == "kl" or k.startswith(("rewards/",
                                                                                                     "logps/"))}
    kl_grad = kl_policy.grad
    return {"loss": float(loss.detach()), "metrics": metrics, "grad": policy.grad.tolist(),
            "kl_grad_is_zero": kl_grad is None or bool((kl_grad == 0).all())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    try:
        import torch
        import trl
        from accelerate import Accelerator
    except ImportError as error:
        print(f"TRL is not importable here ({error}): run this with a Python that has trl==1.16.0, e.g. "
              "/work/trl-venv/bin/python bench/trl_loss_fixtures.py", file=sys.stderr)
        return 2
    accelerator = Accelerator(cpu=True)
    inputs = make_inputs(torch)
    cases = []
    for case in dpo_cases():
        dtype = torch.float32 if case.get("f_divergence_type") == "alpha_divergence" else torch.float64
        result = run_dpo(torch, accelerator, inputs, case, dtype)
        options = {**case, "loss_type": ",".join(case["loss_type"])}
        cases.append({"options": options, "dtype": str(dtype).removeprefix("torch."), **result})
    for case in cpo_cases():
        cases.append({"options": case, "dtype": "float64", **run_reference_free(torch, accelerator, inputs, case)})
    kto_inputs = make_kto_inputs(torch)
    kto = [{"options": case, "dtype": "float64", **run_kto(torch, accelerator, kto_inputs, case)}
           for case in kto_cases()]
    payload = {
        "made_by": "bench/trl_loss_fixtures.py",
        "trl": trl.__version__, "torch": torch.__version__,
        "inputs": {k: v.tolist() for k, v in inputs.items()},
        "cases": cases,
        "kto_inputs": {k: v if isinstance(v, list) else v.tolist() for k, v in kto_inputs.items()},
        "kto_cases": kto,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases from TRL {trl.__version__} written to {args.out}")
    for c in cases:
        print(f"  {c['options']['loss_type']:<24} {c['dtype']:<8} loss {c['loss']:.10g}")
    for c in kto:
        print(f"  kto {c['options']}  loss {c['loss']:.10g}  kl {c['metrics']['kl']:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
