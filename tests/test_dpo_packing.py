"""The packed forward (ctllm.dpo.packing): the padded forward's log-probs and gradients from one padding-free row."""

from __future__ import annotations

import copy

import pytest
import torch

from ctllm.dpo.batching import collate
from ctllm.dpo.lean_model import check_lean
from ctllm.dpo.logps import concatenated_forward
from ctllm.dpo.packing import check_packing, pack, packed_forward, padding_share
from ctllm.dpo.shared_prompt import pair_forward
from ctllm.dpo.tokenize import TokenizedPair
from ctllm.dpo.train import train
from tests.test_dpo_lean import tiny  # noqa: F401 - a fixture
from tests.test_dpo_train import config_for, env, train_records  # noqa: F401 - env is a fixture


def forward_and_grads(model, forward):
    model.train()
    model.zero_grad()
    out = forward(model)
    (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_pack_lays_out_prompt_once_with_positions_and_a_mask_kept_within_each_answer():
    items = [TokenizedPair(index=0, prompt_ids=[1, 2], chosen_ids=[3, 4], rejected_ids=[5]),
             TokenizedPair(index=1, prompt_ids=[6], chosen_ids=[7], rejected_ids=[8, 9])]
    row = pack(items)
    assert row.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert row.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 1, 2]]
    assert row.labels.tolist() == [3, 4, 5, 7, 8, 9]
    assert row.predictors.tolist() == [1, 2, 1, 5, 5, 7]  # each answer's first token from its prompt's last
    assert row.owners.tolist() == [0, 0, 2, 1, 3, 3]  # chosen rows 0..B-1, rejected rows B..2B-1
    mask = row.attention_mask[0, 0].int()
    assert mask[4].tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 0]  # the rejected answer sees its prompt, not the chosen one
    assert mask[8].tolist() == [0, 0, 0, 0, 0, 1, 0, 1, 1]  # nor another pair
    assert mask[3].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("lean", [False, True])
def test_packed_log_probs_and_gradients_equal_the_padded_forward(tiny, lean):  # noqa: F811
    model, pad, items = tiny
    model = copy.deepcopy(model)
    if lean:
        assert check_lean(model, items, pad)[0].active
    batch = items[:4]
    assert padding_share(batch, pad) > 0.05  # the padded batch does carry padding
    expected, expected_grads = forward_and_grads(model, lambda m: concatenated_forward(m, collate(batch, pad)))
    got, grads = forward_and_grads(model, lambda m: packed_forward(m, batch))
    for field in ("chosen_logps", "rejected_logps", "chosen_logits_mean", "rejected_logits_mean", "chosen_nll"):
        # fp32 sums of ~300 nats round in the 5th decimal: within 1e-5 absolute plus 1e-6 of the value
        assert torch.allclose(getattr(got, field), getattr(expected, field), rtol=1e-6, atol=1e-5), field
    assert torch.equal(got.chosen_tokens, expected.chosen_tokens)
    assert torch.equal(got.rejected_tokens, expected.rejected_tokens)
    assert expected_grads.keys() == grads.keys()
    for name, grad in expected_grads.items():
        assert float((grad - grads[name]).abs().max()) <= 1e-5 * max(1.0, float(grad.abs().max())), name
    # The shared-prompt forward still gives the same numbers beside it.
    shared = pair_forward(model, batch, pad, shared=True)
    assert torch.allclose(shared.chosen_logps, expected.chosen_logps, rtol=0, atol=1e-4)


def test_attention_crossing_sequences_would_change_the_numbers(tiny):  # noqa: F811
    """The equality above could not hold with a mask that let one pair see another: the check catches it."""
    model, pad, items = tiny
    batch = items[:2]
    row = pack(batch)
    causal_only = torch.ones_like(row.attention_mask[0, 0]).tril()[None, None]
    with torch.no_grad():
        right = model(input_ids=row.input_ids, position_ids=row.position_ids, attention_mask=row.attention_mask).logits
        wrong = model(input_ids=row.input_ids, position_ids=row.position_ids, attention_mask=causal_only).logits
    assert float((right - wrong).abs().max()) > 1e-3
    ok, how = check_packing(model, batch, pad)
    assert ok, how


def test_training_packed_gives_the_losses_of_training_padded(env, tiny_model_dir):  # noqa: F811
    settings, data = env
    runs = {packing: train(config_for(tiny_model_dir, data, run_name=f"packing-{packing}", max_steps=2,
                                      packing=packing, lr=1e-3, batch_size=4, share_prompt=False),
                           settings, show_progress=False) for packing in (True, False)}
    assert all(r.state == "finished" for r in runs.values())
    packed, padded = (train_records(runs[p].run_dir) for p in (True, False))
    assert len(packed) == len(padded) == 2
    for a, b in zip(packed, padded, strict=True):
        for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), (key, a[key], b[key])
    logs = {p: (run.run_dir / "train.log").read_text() for p, run in runs.items()}
    assert "forward: pairs packed into one row, checked against the concatenated forward" in logs[True]
    assert "packed into one row" not in logs[False]
