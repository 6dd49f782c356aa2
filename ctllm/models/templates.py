"""Chat templates: the fallback for tokenizers that ship none, and turning messages into token ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ctllm.errors import UserError

# ChatML, which transformers applied by default to tokenizers without a template when the CT-LLM model cards were
# written (their usage example calls apply_chat_template on a tokenizer that has no template of its own).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

NAMED_TEMPLATES = {"chatml": CHATML}
FALLBACK_TEMPLATE = CHATML


def template_text(value: str) -> str:
    """A template given by the user: a name from NAMED_TEMPLATES, a path to a .jinja file, or the Jinja text."""
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    if "{" not in value and value.endswith((".jinja", ".j2", ".txt")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"chat template file {path} does not exist")
        return path.read_text(encoding="utf-8")
    if "{" not in value:
        names = ", ".join(sorted(NAMED_TEMPLATES))
        raise UserError(f"chat template {value!r} is neither a known name ({names}), a .jinja file nor Jinja text")
    return value


def apply_chat_template(
    tokenizer, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of ``messages`` through the tokenizer's chat template (the fallback when it has none).

    Control tokens typed inside message text (``<|im_end|>`` in a user's message) are encoded as plain text, so a
    message cannot close its turn or open a system turn.
    """
    conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
    template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
    ids = tokenizer.apply_chat_template(
        conversation,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=False,
        sanitize_control_tokens=True,
    )
    return [int(i) for i in ids]
