"""The Chinese interface: every string in both languages, and after the switch no English word left on any
component (label, info, placeholder, button or Markdown text, choice labels, table headers)."""

from __future__ import annotations

import re
from pathlib import Path

from ctllm.settings import Settings
from ctllm.ui.app import build_app
from ctllm.ui.i18n import STRINGS

# Names that stay as they are in Chinese text: models, methods, formats, units, code identifiers.
WHITELIST = {
    "ct",
    "llm",
    "dpo",
    "sft",
    "lora",
    "rpo",
    "nll",
    "ipo",
    "cdpo",
    "adamw",
    "hub",
    "id",
    "json",
    "jsonl",
    "csv",
    "tsv",
    "parquet",
    "txt",
    "alpaca",
    "sharegpt",
    "cpu",
    "cuda",
    "gpu",
    "top",
    "p",
    "chosen",
    "rejected",
    "ln",
    "smollm",
    "instruct",
    "m",
    "a",
    "map",
    "auto",
    "sigmoid",
    "hinge",
    "robust",
    "python",
    "ctllm",
    "score",
    "test",
    "synth",
    "accelerate",
    "studio",
    "mb",
    "localhost",
    "token",
    "k",
    "α",
    "β",
    "ε",
    "s",
    "u",
    "x",
}
WORD = re.compile(r"[A-Za-z]+")


def english_words(text: str) -> set[str]:
    """Words of Latin letters in ``text`` outside code spans and the whitelist."""
    text = re.sub(r"`[^`]*`|\{[^}]*\}|\b\w*[_/.]\w[\w./-]*|\d+e-\d+|chat votes", " ", text)
    words = {w.lower().strip("'-") for w in WORD.findall(text)}
    return {w for w in words if len(w) > 1 and w not in WHITELIST}


def test_every_string_has_both_languages_with_the_same_placeholders() -> None:
    field = re.compile(r"\{(\w*)\}")
    for key, (en, zh) in STRINGS.items():
        assert en.strip() and zh.strip(), key
        assert sorted(field.findall(en)) == sorted(field.findall(zh)), key


def test_after_the_switch_every_component_speaks_chinese(tmp_path: Path) -> None:
    demo = build_app(Settings(data_dir=tmp_path))
    translator = demo.ctllm_translator
    left: dict[str, set[str]] = {}
    for block, update in zip(translator.components, translator.updates("zh"), strict=True):
        texts = [v for k, v in update.items() if k in ("label", "info", "placeholder", "value")]
        texts += [label for label, _ in update.get("choices", ())] + list(update.get("headers", ()))
        words = set().union(*(english_words(str(text)) for text in texts))
        if words:
            left[block.elem_id] = words
    assert not left, left
    shown = {block.elem_id for block in translator.components}
    assert {"pairs-tab", "vote-second", "train-beta", "chat-send", "help-text", "pairs-language"} <= shown
