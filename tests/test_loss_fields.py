"""Which hyperparameters each loss shows (ctllm.dpo.loss_fields): the table itself, and checked against the math: a
field a loss hides changes nothing in its objective (or the loss refuses any other value), a field it shows does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ctllm.dpo.config import LOSS_TYPES, REFERENCE_FREE_LOSSES, TrainConfig
from ctllm.dpo.loss_fields import (
    LOSS_FIELDS,
    LOSS_GROUPS,
    hidden_fields,
    loss_group,
    paper_summary,
    paper_url,
    settle_hidden,
    visible_fields,
)
from ctllm.dpo.losses import LossConfig, PairLogps, objective


@pytest.mark.parametrize(
    ("loss_type", "f_divergence_type", "shown"),
    [
        ("sigmoid", "reverse_kl", {"beta", "label_smoothing", "rpo_alpha", "f_divergence_type"}),
        ("sigmoid", "alpha_divergence",
         {"beta", "label_smoothing", "rpo_alpha", "f_divergence_type", "f_alpha_divergence_coef"}),
        ("hinge", "reverse_kl", {"beta", "rpo_alpha", "f_divergence_type"}),
        ("robust", "reverse_kl", {"beta", "label_smoothing", "rpo_alpha", "f_divergence_type"}),
        ("discopop", "reverse_kl", {"beta", "discopop_tau", "rpo_alpha", "f_divergence_type"}),
        ("bco_pair", "alpha_divergence", {"beta", "rpo_alpha"}),  # no f-divergence: no α either
        ("sft", "reverse_kl", {"rpo_alpha"}),
        ("simpo", "reverse_kl", {"beta", "simpo_gamma", "label_smoothing", "rpo_alpha"}),
        ("cpo", "reverse_kl", {"beta", "cpo_alpha", "label_smoothing"}),
        ("orpo", "reverse_kl", {"orpo_lambda"}),
        ("alphapo", "reverse_kl", {"beta", "simpo_gamma", "alphapo_alpha", "label_smoothing", "rpo_alpha"}),
        ("sigmoid,bco_pair,sft", "reverse_kl", {"beta", "label_smoothing", "rpo_alpha", "loss_weights"}),
        ("no_such_loss", "reverse_kl", {"beta"}),
    ],
)
def test_each_loss_shows_its_own_fields(loss_type: str, f_divergence_type: str, shown: set[str]) -> None:
    assert visible_fields(loss_type, f_divergence_type) == shown
    assert hidden_fields(loss_type, f_divergence_type) == set(LOSS_FIELDS) - shown


def test_groups_cover_every_loss_once_and_papers_link_to_arxiv() -> None:
    grouped = [name for names in LOSS_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(LOSS_TYPES) and len(grouped) == len(set(grouped))
    assert list(LOSS_GROUPS) == ["reference", "reference_free", "unpaired"] and LOSS_GROUPS["unpaired"] == ()
    assert {name for name in LOSS_TYPES if loss_group(name) == "reference_free"} == set(REFERENCE_FREE_LOSSES)
    assert paper_url("simpo") == "https://arxiv.org/abs/2405.14734" and "arXiv" not in paper_summary("simpo")
    assert all(paper_url(name).startswith("https://arxiv.org/abs/") for name in LOSS_TYPES)


# A second value for each field, checked one at a time against the defaults (exo_pair's base needs ε > 0).
OTHER = {"beta": 0.3, "label_smoothing": 0.1, "discopop_tau": 0.2, "simpo_gamma": 1.0, "cpo_alpha": 0.5,
         "orpo_lambda": 0.3, "alphapo_alpha": 0.5, "f_divergence_type": "forward_kl"}


def batch() -> PairLogps:
    g = torch.Generator().manual_seed(0)
    chosen, rejected = -torch.rand(4, generator=g) * 20 - 1, -torch.rand(4, generator=g) * 20 - 1
    ref_chosen, ref_rejected = chosen + torch.randn(4, generator=g), rejected + torch.randn(4, generator=g)
    tokens = torch.tensor([5.0, 9.0, 3.0, 7.0])
    return PairLogps(chosen, rejected, tokens, tokens + 2, ref_chosen, ref_rejected, nll=torch.tensor(2.5))


def loss_of(loss_type: str, **changes: object) -> float | None:
    """The objective under ``changes``; None where the loss refuses them."""
    base = {"loss_type": loss_type, "label_smoothing": 1e-3 if loss_type == "exo_pair" else 0.0}
    try:
        config = LossConfig(**(base | changes))
    except ValueError:
        return None
    x = batch()
    if config.reference_free:
        x = dataclasses.replace(x, ref_chosen=None, ref_rejected=None)
    return float(objective(x, config)[0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_hidden_field_changes_nothing_and_a_shown_one_changes_the_loss(loss_type: str) -> None:
    shown = visible_fields(loss_type)
    base = loss_of(loss_type)
    assert base is not None
    for name, value in OTHER.items():
        changed = loss_of(loss_type, **{name: value})
        if name in shown:
            assert changed is not None and changed != pytest.approx(base), name
        else:
            assert changed is None or changed == pytest.approx(base), name
    if "f_divergence_type" in shown:  # the α of alpha_divergence, shown only with it
        alpha = {"f_divergence_type": "alpha_divergence"}
        assert loss_of(loss_type, **alpha, f_alpha_divergence_coef=0.7) != pytest.approx(loss_of(loss_type, **alpha))
        assert "f_alpha_divergence_coef" in visible_fields(loss_type, "alpha_divergence")


def test_hidden_fields_keep_the_preset_value_unless_the_loss_refuses_it() -> None:
    preset = dataclasses.replace(TrainConfig(), rpo_alpha=2.0, beta=0.5, label_smoothing=0.1)
    # orpo: β unused, keeps 0.5; rpo_alpha and label_smoothing are refused with orpo, so their defaults.
    settled = settle_hidden(preset, {"loss_type": "orpo", "beta": 0.9}, hidden_fields("orpo"))
    assert settled == {"loss_type": "orpo", "rpo_alpha": 0.0, "label_smoothing": 0.0}
    # simpo uses all three: the overrides stay as they are.
    assert settle_hidden(preset, {"loss_type": "simpo", "beta": 0.9}, hidden_fields("simpo")) == {
        "loss_type": "simpo", "beta": 0.9}
