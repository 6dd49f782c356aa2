"""Completion log-probs against a naive log_softmax, step 1 = ln 2 on a tiny model, the reference cache."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import ctllm.dpo.logps as logps_module
from ctllm.dpo.batching import collate, length_grouped_batches
from ctllm.dpo.logps import concatenated_forward, first_scored_position, sequence_logps
from ctllm.dpo.losses import LossConfig, compute_loss
from ctllm.dpo.reference import precompute_reference_logps, reference_cache_key
from ctllm.dpo.tokenize import tokenize_pairs
from ctllm.pairs.schema import Pair, user_prompt
from tests.tiny_models import build_tiny_model

WORDS = "the cat sat on a mat and then ran away into a dark forest where owls sing softly at night".split()


def naive_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor):
    """The textbook computation over full-width logits: log_softmax(logits[:, :-1]) at ids[:, 1:], masked."""
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    per_token = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = loss_mask[:, 1:].double()
    mean_logit = (logits[:, :-1].double().mean(-1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return (per_token * mask).sum(-1), mask.sum(-1), mean_logit


def random_rows(n_rows=4, width=12, vocab=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (n_rows, width), generator=gen)
    loss_mask = torch.zeros(n_rows, width, dtype=torch.long)
    for r in range(n_rows):
        start = 3 + r  # prompt of 3 + r tokens, then completion, then padding
        loss_mask[r, start : width - r] = 1
    logits = torch.randn(n_rows, width, vocab, generator=gen) * 3
    return logits, input_ids, loss_mask


def test_sequence_logps_equals_naive_log_softmax():
    logits, input_ids, loss_mask = random_rows()
    logits.requires_grad_()
    total, counts, mean_logit = sequence_logps(logits, input_ids, loss_mask)
    exp_total, exp_counts, exp_mean = naive_logps(logits, input_ids, loss_mask)
    assert total.dtype == torch.float32
    assert torch.allclose(total.double(), exp_total, atol=1e-5)
    assert counts.tolist() == exp_counts.long().tolist() == [9, 7, 5, 3]
    assert torch.allclose(mean_logit.double(), exp_mean, atol=1e-5)
    assert not mean_logit.requires_grad
    # Gradients agree too.
    (grad,) = torch.autograd.grad(total.sum(), logits)
    (exp_grad,) = torch.autograd.grad(exp_total.sum(), logits)
    assert torch.allclose(grad.double(), exp_grad.double(), atol=1e-5)


def test_sequence_logps_in_chunks_and_on_kept_positions(monkeypatch):
    logits, input_ids, loss_mask = random_rows(n_rows=5, seed=1)
    expected, _, exp_mean = naive_logps(logits, input_ids, loss_mask)
    monkeypatch.setattr(logps_module, "CHUNK_ELEMENTS", 1)  # one row per chunk
    total, _, mean_logit = sequence_logps(logits, input_ids, loss_mask)
    assert torch.allclose(total.double(), expected, atol=1e-5)
    # Logits for the last T' positions only (what logits_to_keep returns): same result.
    start = first_scored_position(loss_mask) - 1
    assert start == 2
    total, _, mean_logit = sequence_logps(logits[:, start:], input_ids, loss_mask)
    assert torch.allclose(total.double(), expected, atol=1e-5)
    assert torch.allclose(mean_logit.double(), exp_mean, atol=1e-5)
    with pytest.raises(ValueError, match="keep more positions"):
        sequence_logps(logits[:, start + 1 :], input_ids, loss_mask)


def test_half_precision_logits_are_scored_in_fp32():
    logits, input_ids, loss_mask = random_rows(seed=2)
    half = logits.to(torch.bfloat16).requires_grad_()
    total, _, _ = sequence_logps(half, input_ids, loss_mask)
    widened = half.detach().float().requires_grad_()
    expected, _, _ = naive_logps(widened, input_ids, loss_mask)
    assert total.dtype == torch.float32
    assert torch.allclose(total.double(), expected, atol=1e-4)
    (grad,) = torch.autograd.grad(total.sum(), half)
    (exp_grad,) = torch.autograd.grad(expected.sum(), widened)
    assert grad.dtype == torch.bfloat16
    assert torch.allclose(grad.float(), exp_grad.float(), atol=1e-2)


def make_pairs(n: int, seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [Pair(user_prompt(text(2, 25)), text(1, 30), text(1, 30)) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    items = tokenize_pairs(tokenizer, make_pairs(14), max_length=96).items
    return model, tokenizer, items


def test_concatenated_forward_matches_a_naive_full_forward(tiny):
    model, tokenizer, items = tiny
    batch = collate(items[:4], tokenizer.pad_token_id)
    assert first_scored_position(batch["loss_mask"]) > 1  # the forward really skips prompt positions
    model.eval()
    with torch.no_grad():
        out = concatenated_forward(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, counts, mean_logit = naive_logps(logits, batch["input_ids"], batch["loss_mask"])
    assert torch.allclose(torch.cat([out.chosen_logps, out.rejected_logps]).double(), total, atol=1e-4)
    assert torch.cat([out.chosen_tokens, out.rejected_tokens]).tolist() == counts.long().tolist()
    assert out.chosen_tokens.tolist() == [len(it.chosen_ids) for it in items[:4]]
    assert torch.allclose(torch.cat([out.chosen_logits_mean, out.rejected_logits_mean]).double(), mean_logit, atol=1e-4)
    assert torch.allclose(out.chosen_nll, -out.chosen_logps / out.chosen_tokens)


def test_step_one_with_policy_equal_to_reference_is_ln2(tiny):
    model, tokenizer, items = tiny
    batches = length_grouped_batches(items, batch_size=4, seed=3, epoch=0)
    ref = precompute_reference_logps(model, items, tokenizer.pad_token_id, 4, None, None, batches=batches)
    model.train()  # the training loop's mode (dropout is 0 in the tiny config)
    batch = collate([items[i] for i in batches[0]], tokenizer.pad_token_id)
    out = concatenated_forward(model, batch)
    index = batch["index"]
    loss, metrics = compute_loss(out, ref["chosen"][index], ref["rejected"][index], LossConfig(beta=0.5))
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/chosen"] == 0.0 and metrics["rewards/rejected"] == 0.0
    assert metrics["rewards/accuracies"] == 0.0 and metrics["rewards/margins"] == 0.0
    loss.backward()  # the loss carries a gradient to the policy
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    # Another batch layout for the reference changes log-probs only by float noise.
    sorted_ref = precompute_reference_logps(model, items, tokenizer.pad_token_id, 5, None, None)
    assert model.training  # the mode is restored
    finite = ~torch.isnan(ref["chosen"])
    assert torch.allclose(sorted_ref["chosen"][finite], ref["chosen"][finite], rtol=1e-5)


def test_reference_logps_are_indexed_by_pair_index(tiny):
    model, tokenizer, items = tiny
    subset = [items[5], items[2], items[9]]
    ref = precompute_reference_logps(model, subset, tokenizer.pad_token_id, 2, None, None)
    assert ref["chosen"].shape == (items[9].index + 1,)
    assert ref["chosen_tokens"][items[2].index] == len(items[2].chosen_ids)
    assert torch.isnan(ref["chosen"][items[0].index]) and ref["rejected_tokens"][items[0].index] == -1
    model.eval()
    with torch.no_grad():
        out = concatenated_forward(model, collate([items[2]], tokenizer.pad_token_id))
    assert float(ref["rejected"][items[2].index]) == pytest.approx(float(out.rejected_logps[0]), rel=1e-5)


def test_reference_cache_hit_returns_identical_tensors(tiny, tmp_path, embedded_model_dir):
    model, tokenizer, items = tiny
    key = reference_cache_key("tiny-llama", "hash-of-data", 96)
    assert key == reference_cache_key("tiny-llama", "hash-of-data", 96)
    assert key != reference_cache_key("tiny-llama", "hash-of-data", 128)
    assert key != reference_cache_key("tiny-llama", "hash-of-data", 96, max_prompt_length=32)
    first = precompute_reference_logps(model, items, tokenizer.pad_token_id, 4, tmp_path, key)
    assert (tmp_path / f"{key}.safetensors").is_file()
    # A different model under the same key: the cached values come back, bit for bit.
    other_dir = build_tiny_model(tmp_path / "other", embedded_model_dir, seed=7)
    other = AutoModelForCausalLM.from_pretrained(other_dir, dtype=torch.float32)
    again = precompute_reference_logps(other, items, tokenizer.pad_token_id, 4, tmp_path, key)
    assert set(again) == set(first)
    for name in first:
        assert torch.equal(again[name], first[name]), name
    # Under another key the other model really computes (and differs).
    fresh = precompute_reference_logps(other, items, tokenizer.pad_token_id, 4, tmp_path, key + "-other")
    assert not torch.allclose(fresh["chosen"], first["chosen"])
    # A cache whose token counts do not fit the items is not trusted.
    shorter = [type(it)(it.index, it.prompt_ids, it.chosen_ids[:1], it.rejected_ids) for it in items]
    recomputed = precompute_reference_logps(other, shorter, tokenizer.pad_token_id, 4, tmp_path, key)
    assert recomputed["chosen_tokens"].tolist() == [1] * len(items)
