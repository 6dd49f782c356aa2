"""Lean activations (ctllm.dpo.lean_ops, lean_model): the same numbers as the model's own autograd, less kept."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from ctllm.dpo import lean_model
from ctllm.dpo.heap import Heap
from ctllm.dpo.lean_model import check_lean, make_lean
from ctllm.dpo.lean_ops import RMSNorm, SiluMul, SwiGLU
from ctllm.dpo.logps import _HeadTokenLogProbs, fused_head
from ctllm.dpo.shared_prompt import pair_forward
from ctllm.dpo.tokenize import tokenize_pairs
from ctllm.dpo.train import train
from tests.test_dpo_logps import make_pairs
from tests.test_dpo_train import config_for, env, train_records  # noqa: F401 - env is a fixture


def double(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def test_rms_norm_matches_the_formula_and_its_gradient():
    torch.manual_seed(0)
    x, weight = double(3, 5, 8), double(8)
    assert torch.autograd.gradcheck(lambda a, w: RMSNorm.apply(a, w, 1e-6), (x, weight))
    expected = weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert torch.equal(RMSNorm.apply(x, weight, 1e-6), expected)


@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_matches_the_mlp_and_its_gradient(bias):
    torch.manual_seed(1)
    x = double(2, 3, 6)
    w_gate, w_up, w_down = double(10, 6), double(10, 6), double(6, 10)
    b_gate, b_up, b_down = (double(10), double(10), double(6)) if bias else (None, None, None)
    args = (x, w_gate, b_gate, w_up, b_up, w_down, b_down)
    assert torch.autograd.gradcheck(SwiGLU.apply, args)
    expected = F.linear(F.silu(F.linear(x, w_gate, b_gate)) * F.linear(x, w_up, b_up), w_down, b_down)
    assert torch.allclose(SwiGLU.apply(*args), expected, rtol=0, atol=1e-12)


def test_silu_mul_gradient():
    torch.manual_seed(2)
    assert torch.autograd.gradcheck(SiluMul.apply, (double(4, 7), double(4, 7)))


def test_head_token_logps_match_log_softmax_of_the_head_and_its_gradient():
    torch.manual_seed(3)  # the log-prob code works in fp32 whatever comes in: compare with fp32 autograd
    leaves = [torch.randn(*shape, requires_grad=True) for shape in ((3, 5, 4), (11, 4), (11,))]
    labels = torch.randint(0, 11, (3, 4))  # one position fewer than hidden: the last one predicts nothing
    weights = torch.randn(3, 4)

    def grads(logps: torch.Tensor) -> list[torch.Tensor]:
        return torch.autograd.grad((logps * weights).sum(), leaves)

    hidden, weight, bias = leaves
    logps, means = _HeadTokenLogProbs.apply(hidden, weight, bias, labels)
    logits = F.linear(hidden[:, :4], weight, bias)
    expected = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(logps, expected, atol=1e-6)
    assert torch.allclose(means, logits.mean(-1), atol=1e-6)
    for got, want in zip(grads(logps), grads(expected), strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    items = tokenize_pairs(tokenizer, make_pairs(10), max_length=96).items
    return model, tokenizer.pad_token_id, items


def forward_and_grads(model, items, pad, shared):
    model.train()
    model.zero_grad()
    out = pair_forward(model, items, pad, shared)
    (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shared", [False, True])
def test_a_lean_model_gives_the_same_log_probs_and_gradients(tiny, shared):
    model, pad, items = tiny
    plain, lean = copy.deepcopy(model), copy.deepcopy(model)
    swapped, how = check_lean(lean, items, pad)
    assert swapped.active and "LlamaMLP" in how and "LlamaRMSNorm" in how and "grouped-query SDPA" in how, how
    assert fused_head(lean) is not None and fused_head(plain) is None
    expected, expected_grads = forward_and_grads(plain, items[:4], pad, shared)
    got, grads = forward_and_grads(lean, items[:4], pad, shared)
    assert torch.equal(expected.chosen_logps, got.chosen_logps)
    assert torch.equal(expected.rejected_logps, got.rejected_logps)
    assert expected_grads.keys() == grads.keys()
    for name, grad in expected_grads.items():
        scale = float(grad.abs().max())
        assert float((grad - grads[name]).abs().max()) <= 1e-5 * scale, name
    swapped.restore()
    ids = torch.tensor([items[0].prompt_ids])
    with torch.no_grad():
        assert torch.equal(lean(input_ids=ids).logits, plain(input_ids=ids).logits)  # logits again, not hidden states
    assert lean.config._attn_implementation == "sdpa"


def saved_bytes(model, items, pad) -> int:
    storages: dict[int, int] = {}
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in parameters:
            storages[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pair_forward(model, items, pad, True)
    return sum(storages.values())


def test_a_lean_model_keeps_far_fewer_activations(tiny_model_dir, tiny):
    # Wider than the tiny model, with a small vocabulary, so the layers (not the logits) dominate.
    _, pad, items = tiny
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    plain = saved_bytes(model, items[:4], pad)
    make_lean(model)
    lean = saved_bytes(model, items[:4], pad)
    assert lean < 0.35 * plain, (lean, plain)


def test_lora_projections_take_the_lean_elementwise_path_with_the_same_gradients(tiny):
    from peft import LoraConfig, get_peft_model

    model, pad, items = tiny
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(0)
    plain = get_peft_model(copy.deepcopy(model), lora)
    for name, param in plain.named_parameters():  # B starts at zero: give the adapters something to differ by
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    lean = copy.deepcopy(plain)
    assert make_lean(lean).active
    expected, expected_grads = forward_and_grads(plain, items[:4], pad, True)
    got, grads = forward_and_grads(lean, items[:4], pad, True)
    assert torch.allclose(expected.chosen_logps, got.chosen_logps, rtol=0, atol=1e-5)
    assert expected_grads and expected_grads.keys() == grads.keys()
    for name, grad in expected_grads.items():
        assert float((grad - grads[name]).abs().max()) <= 1e-5 * float(grad.abs().max()), name


def test_modules_of_another_kind_are_left_alone(tiny_model_dir, tiny):
    _, pad, items = tiny
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, hidden_act="gelu")
    model = LlamaForCausalLM(config)
    swapped, how = check_lean(model, items, pad)
    assert swapped.active and "LlamaRMSNorm" in how and "LlamaMLP" not in how, how
    assert not any(type(m).__name__ == "LlamaMLP" for m in swapped.modules)


def test_a_swap_that_changes_the_numbers_is_undone(tiny, monkeypatch):
    model, pad, items = tiny
    candidate = copy.deepcopy(model)
    monkeypatch.setattr(lean_model, "_norm_forward", lambda self, x: RMSNorm.apply(x, self.weight * 1.01, 1e-6))
    swapped, how = check_lean(candidate, items, pad)
    assert not swapped.active and "differ" in how, how
    assert fused_head(candidate) is None and candidate.config._attn_implementation == "sdpa"
    ids = torch.tensor([items[0].prompt_ids])
    with torch.no_grad():
        assert torch.equal(candidate(input_ids=ids).logits, model(input_ids=ids).logits)


def test_training_with_lean_activations_matches_training_without(env, tiny_model_dir):  # noqa: F811
    settings, data = env
    runs = {lean: train(config_for(tiny_model_dir, data, run_name=f"lean-{lean}", max_steps=3, lean_activations=lean,
                                   lr=1e-4, batch_size=4), settings, show_progress=False) for lean in (True, False)}
    assert all(r.state == "finished" for r in runs.values())
    for a, b in zip(train_records(runs[True].run_dir), train_records(runs[False].run_dir), strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    logs = {lean: (run.run_dir / "train.log").read_text() for lean, run in runs.items()}
    assert "activations: lean (" in logs[True]
    assert "activations: the model's own autograd (off in the config)" in logs[False]
    saved = AutoModelForCausalLM.from_pretrained(runs[True].run_dir / "final")  # a plain model folder again
    assert saved.config.vocab_size == saved(input_ids=torch.tensor([[1, 2]])).logits.shape[-1]


def test_heap_trims_hook_the_layers_and_come_off():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=6,
                                         num_attention_heads=2, num_key_value_heads=1))
    heap = Heap()
    heap.trim_between_layers(model)
    hooked = [layer for layer in model.model.layers if layer._forward_pre_hooks]
    assert len(hooked) == (3 if heap._libc is not None else 0)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()  # trims on the way, numbers untouched
    heap.detach()
    assert not any(layer._forward_pre_hooks for layer in model.model.layers)
