"""An Ollama ``Modelfile`` beside an exported GGUF (``ollama create NAME -f Modelfile``).

Ollama's templates are Go templates, not Jinja: a ChatML chat template (SmolLM2's, CT-LLM's fallback) is written
as its Go equivalent, with the default system prompt the Jinja template inserts; any other template is left to
Ollama, which reads ``tokenizer.chat_template`` from the GGUF itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM_START, TURN_END = "<|im_start|>system\n", "<|im_end|>"


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt a ChatML template adds when the conversation has none (SmolLM2: "You are a helpful AI
    assistant named SmolLM, ..."), found by rendering a one-message conversation."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                         add_generation_prompt=True)
    if not text.startswith(SYSTEM_START) or TURN_END not in text:
        return None
    return text[len(SYSTEM_START):text.index(TURN_END)]


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_text(gguf_name: str, tokenizer: Any) -> str:
    template = tokenizer.chat_template or ""
    lines = [f"# Ollama: ollama create NAME -f Modelfile   (the GGUF {gguf_name} must lie beside this file)",
             f"FROM ./{gguf_name}"]
    if "<|im_start|>" in template:
        lines.append(f"TEMPLATE {_quoted(CHATML_TEMPLATE)}")
        system = default_system_prompt(tokenizer)
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
        lines.append(f'PARAMETER stop "{TURN_END}"')
    else:
        lines.append("# The chat template is not ChatML: Ollama takes it from the GGUF's tokenizer.chat_template.")
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: Path, tokenizer: Any) -> Path:
    path = Path(gguf_path).with_name("Modelfile")
    path.write_text(modelfile_text(Path(gguf_path).name, tokenizer), encoding="utf-8")
    return path
