"""A tiny Llama whose greedy answer is known in advance: a bigram machine built from real weights.

Attention and MLP outputs are zeroed, so the last hidden state is the (normalised) embedding of the current token
and the logits depend on that token only. Chosen tokens get orthogonal embeddings and the LM head maps each one to
its successor with a logit of ``SCALE`` (every other logit of a chain token is 0), so after the chat template's
generation prompt (ending in "\\n") the model writes ``answer`` token by token, then EOS, with probability ~1.
An empty ``answer`` makes a model that stops at once. Used by the synthesis and evaluation tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SCALE = 30.0
HIDDEN = 32


def build_scripted_model(out_dir: Path, tokenizer_dir: Path, answer: str, seed: int = 0) -> Path:
    """Save a model into ``out_dir`` whose answer to any chat prompt is ``answer`` (then EOS)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    generation_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    chain = [int(generation_prompt[-1]), *tokenizer(answer, add_special_tokens=False)["input_ids"]]
    chain.append(int(tokenizer.eos_token_id))
    if len(set(chain[:-1])) != len(chain) - 1 or len(chain) > HIDDEN:
        raise ValueError(f"{answer!r}: the chain needs distinct tokens, at most {HIDDEN - 2} of them")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=HIDDEN * 2, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (current, following) in enumerate(zip(chain, chain[1:], strict=False)):
            model.model.embed_tokens.weight[current] = torch.zeros(HIDDEN)
            model.model.embed_tokens.weight[current, k] = 1.0
            # The final RMSNorm turns the unit vector into sqrt(HIDDEN) along axis k.
            model.lm_head.weight[following, k] = SCALE / HIDDEN**0.5
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
