"""Which hyperparameters each loss uses, the picker's groups, and each loss's paper: plain data and pure functions
(no torch, no gradio), for the Train tab, the jobs that turn its form into a run, and the CLI.

The math is in ctllm/dpo/losses.py; the checks of each field in ctllm/dpo/config.py (``loss_field_checks``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ctllm.dpo.config import (
    F_DIVERGENCE_LOSSES,
    LABEL_SMOOTHING_LOSSES,
    LOSS_TYPES,
    REFERENCE_FREE_LOSSES,
    REFERENCE_LOSSES,
    TrainConfig,
    loss_field_checks,
    loss_names,
)

# One line on what each optimises and its paper (for pickers and docs).
PAPERS = {
    "sigmoid": "DPO: logistic loss on the policy-vs-reference margin — arXiv 2305.18290",
    "hinge": "SLiC/RSO hinge on the DPO margin — arXiv 2309.06657",
    "ipo": "IPO: squared distance of the per-token margin to 1/(2β) — arXiv 2310.12036",
    "robust": "Robust DPO: unbiased under label-flip rate ε — arXiv 2403.00409",
    "exo_pair": "EXO: reverse-KL to the smoothed label distribution — arXiv 2402.00856",
    "nca_pair": "NCA: absolute likelihoods, chosen up — arXiv 2402.05369",
    "bco_pair": "BCO: binary classifier of chosen vs rejected rewards — arXiv 2404.04656",
    "sppo_hard": "SPPO with hard win probabilities — arXiv 2405.00675",
    "aot": "AOT: distributional dominance of sorted margins — arXiv 2406.05882",
    "aot_unpaired": "AOT unpaired: sorted chosen vs sorted rejected rewards — arXiv 2406.05882",
    "apo_zero": "APO-zero: chosen up, rejected down — arXiv 2408.06266",
    "apo_down": "APO-down: both down, rejected more — arXiv 2408.06266",
    "discopop": "DiscoPOP: logistic/exponential blend found by LLM search — arXiv 2406.08414",
    "sft": "NLL of the chosen answer (mix with others: RPO, MPO) — arXiv 2404.19733",
    "sigmoid_norm": "DPO on per-token averaged log-ratios — arXiv 2405.14734",
    "simpo": "SimPO: reference-free, length-normalised reward with margin γ — arXiv 2405.14734",
    "cpo": "CPO: reference-free DPO plus NLL of the chosen answer — arXiv 2401.08417",
    "orpo": "ORPO: NLL plus λ × odds-ratio term, reference-free — arXiv 2403.07691",
    "alphapo": "AlphaPO: SimPO with an α-shaped reward — arXiv 2501.03884",
}
assert set(PAPERS) == set(LOSS_TYPES)
_ARXIV = re.compile(r" — arXiv (\d{4}\.\d{4,5})$")

# The picker's sets, in order. KTO (unpaired desirable / undesirable answers) is the third set of issue 14; it is
# not implemented yet, so it has no losses to offer.
LOSS_GROUPS: dict[str, tuple[str, ...]] = {
    "reference": REFERENCE_LOSSES,
    "reference_free": REFERENCE_FREE_LOSSES,
    "unpaired": (),
}
# The objective's fields a form shows or hides by loss. ld_alpha and use_weighting are not among them: the training
# engine refuses any value but their defaults for now (TrainConfig.validate), so no form offers them.
LOSS_FIELDS = ("beta", "label_smoothing", "rpo_alpha", "loss_weights", "f_divergence_type", "f_alpha_divergence_coef",
               "discopop_tau", "simpo_gamma", "cpo_alpha", "orpo_lambda", "alphapo_alpha")
_OWN_FIELD = {"discopop": "discopop_tau", "cpo": "cpo_alpha", "orpo": "orpo_lambda", "alphapo": "alphapo_alpha",
              "simpo": "simpo_gamma"}


def loss_group(name: str) -> str:
    """The set of LOSS_GROUPS a loss belongs to; "" for an unknown name."""
    return next((group for group, names in LOSS_GROUPS.items() if name in names), "")


def paper_url(name: str) -> str:
    """The arXiv page of a loss's paper."""
    match = _ARXIV.search(PAPERS[name])
    assert match, f"PAPERS[{name!r}] ends without its arXiv id"
    return f"https://arxiv.org/abs/{match.group(1)}"


def paper_summary(name: str) -> str:
    """The one line on what a loss optimises, without its paper reference."""
    return _ARXIV.sub("", PAPERS[name])


def visible_fields(loss_type: str, f_divergence_type: str = "reverse_kl") -> set[str]:
    """The LOSS_FIELDS that ``loss_type`` (one loss or several comma-separated) uses; only β for a name it does not
    know (validation will say what is wrong with it)."""
    names = [name for name in loss_names(loss_type) if name in LOSS_TYPES]
    if not names:
        return {"beta"}
    shown = {_OWN_FIELD[name] for name in names if name in _OWN_FIELD}
    if "alphapo" in names:
        shown.add("simpo_gamma")  # AlphaPO is SimPO with another reward: the same margin γ
    if set(names) - {"orpo", "sft"}:
        shown.add("beta")
    if set(names) & set(LABEL_SMOOTHING_LOSSES):
        shown.add("label_smoothing")
    if not {"cpo", "orpo"} & set(names):  # those have their own NLL term
        shown.add("rpo_alpha")
    if len(names) > 1:
        shown.add("loss_weights")
    if set(names) <= set(F_DIVERGENCE_LOSSES) and set(names) != {"sft"}:  # sft alone reads no margin
        shown.add("f_divergence_type")
        if f_divergence_type == "alpha_divergence":
            shown.add("f_alpha_divergence_coef")
    return shown


def hidden_fields(loss_type: str, f_divergence_type: str = "reverse_kl") -> set[str]:
    """The LOSS_FIELDS that ``loss_type`` does not use: a form's values for them do not count."""
    return set(LOSS_FIELDS) - visible_fields(loss_type, f_divergence_type)


def refused_hidden_values(config: TrainConfig, hidden: set[str]) -> dict[str, Any]:
    """Defaults for the hidden fields whose value (a preset's) the chosen loss would refuse, e.g. a preset's
    rpo_alpha under orpo, which has its own NLL term; the others keep their value."""
    defaults = TrainConfig()
    return {name: getattr(defaults, name) for name, ok, _ in loss_field_checks(config) if not ok and name in hidden}


def settle_hidden(base: TrainConfig, overrides: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    """``overrides`` of ``base`` without the ``hidden`` fields, plus what :func:`refused_hidden_values` gives."""
    kept = {name: value for name, value in overrides.items() if name not in hidden}
    return kept | refused_hidden_values(dataclasses.replace(base, **kept), hidden)
