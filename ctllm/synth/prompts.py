"""Instruction data to prompts (and the file's own answers) for synthesis.

Accepted files:
- ``.txt``: one prompt a line (blank lines and lines starting with ``#`` skipped);
- ``.json`` / ``.jsonl`` / ``.csv`` / ``.tsv`` / ``.parquet`` rows, each one of
  - alpaca: ``instruction``, optional ``input`` (appended after a newline), ``output`` (the answer; for the old
    LLaMA-Factory ranking style a list, best first), optional ``system`` and ``history`` [[q, a], ...];
  - sharegpt: ``conversations`` [{from, value}] (or OpenAI ``messages`` [{role, content}]); a last assistant turn
    is the answer, the turns before it the prompt;
  - plain: ``prompt`` / ``question`` / ``query`` / ``text`` with an optional answer in ``output`` / ``response`` /
    ``answer`` / ``chosen`` / ``completion``;
  - a JSON string (a prompt with no answer).

Columns a row has beyond these become the item's meta (a ``category`` or ``split`` column, say).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.readers import RowError
from ctllm.pairs.schema import Message

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".parquet")
PROMPT_KEYS = ("prompt", "question", "query", "text")
ANSWER_KEYS = ("output", "response", "answer", "chosen", "completion")
_USER = {"user", "human", "prompter"}
_ASSISTANT = {"assistant", "gpt", "bot", "model", "chatgpt", "ai"}


@dataclass(frozen=True)
class PromptItem:
    """One prompt: chat messages ending with a user turn, and the file's own answer (None when it has none)."""

    prompt: tuple[Message, ...]
    answer: str | None
    line: int | None  # 1-based line in the file (None for JSON arrays and Parquet)
    row: int  # 1-based row
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """Identity of the prompt and its answer: what a resumed synthesis recognises as done."""
        payload = json.dumps([[dict(m) for m in self.prompt], self.answer or ""], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]

    @property
    def text(self) -> str:
        """The last user turn."""
        return self.prompt[-1]["content"]


@dataclass
class PromptFile:
    items: list[PromptItem]
    errors: list[RowError]
    rows: int
    repeated: int  # rows whose prompt and answer repeat an earlier row (kept once)


class _BadRow(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


def read_prompt_file(path: str | Path) -> PromptFile:
    """Read every prompt in ``path``; bad rows are reported in ``errors`` (file, line, field), never fatal
    unless no row at all is usable."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{name}: unknown prompts file type {suffix!r} (expected one of {', '.join(SUFFIXES)})")
    items: list[PromptItem] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    rows = repeated = 0
    for line, row, value in _rows(path, suffix):
        rows += 1
        try:
            prompt, answer, meta = _convert(value)
        except _BadRow as bad:
            errors.append(RowError(name, line, row, bad.field, bad.reason))
            continue
        item = PromptItem(prompt, answer, line, row, meta)
        if item.key in seen:
            repeated += 1
            continue
        seen.add(item.key)
        items.append(item)
    if not items:
        first = f" (first problem: {errors[0]})" if errors else ""
        raise UserError(f"{name}: no usable prompts{first}")
    return PromptFile(items, errors, rows, repeated)


def _rows(path: Path, suffix: str) -> Iterator[tuple[int | None, int, Any]]:
    """(line, row, value) for every row of the file."""
    name = path.name
    if suffix == ".parquet":
        # Lazy: importing pyarrow takes seconds; start-up (the app, the CLI) does not need it.
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several kinds for a damaged file
            raise UserError(f"{name}: cannot read Parquet: {error}") from None
        for row, value in enumerate(table.to_pylist(), 1):
            yield None, row, value
        return
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{name}: not UTF-8 text (byte {error.start + 1})") from None
    if suffix == ".txt":
        row = 0
        for line, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if stripped and not stripped.startswith("#"):
                row += 1
                yield line, row, stripped
        return
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        for row, record in enumerate(reader, 1):
            yield reader.line_num, row, record
        return
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            if not text.lstrip().startswith("{"):
                raise UserError(f"{name}:{error.lineno}: not valid JSON (column {error.colno}: {error.msg})") from None
            data = None  # JSON Lines under a .json name
        if data is not None:
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
                data = lists[0] if len(lists) == 1 else [data]
            if not isinstance(data, list):
                raise UserError(f"{name}: expected a JSON array of rows, or an object holding one")
            for row, value in enumerate(data, 1):
                yield None, row, value
            return
    row = 0
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        row += 1
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            value = _BadRow(None, f"invalid JSON: {error.msg} (column {error.colno})")
        yield line, row, value


def _convert(value: Any) -> tuple[tuple[Message, ...], str | None, dict[str, Any]]:
    """(prompt messages, answer or None, meta) of one row."""
    if isinstance(value, _BadRow):
        raise value
    if isinstance(value, str):
        return (_user(value, None),), None, {}
    if not isinstance(value, Mapping):
        raise _BadRow(None, f"wrong type: expected an object or a string, got {type(value).__name__}")
    row = {k: v for k, v in value.items() if v is not None and v != ""}
    if "conversations" in row or "messages" in row:
        column = "conversations" if "conversations" in row else "messages"
        messages = _messages(_maybe_json(row[column]), column)
        system = _text(row, "system") if "system" in row else ""
        if system and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, Message(role="system", content=system))
        answer = None
        if messages and messages[-1]["role"] == "assistant":
            answer = messages.pop()["content"]
        return _checked(messages, column), _answer_text(answer, column), _meta(row, {column, "system"})
    if "instruction" in row:
        instruction = _text(row, "instruction")
        query = _text(row, "input") if "input" in row else ""
        messages = [Message(role="system", content=_text(row, "system"))] if "system" in row else []
        messages += _history(row.get("history"))
        messages.append(_user(f"{instruction}\n{query}" if query.strip() else instruction, "instruction"))
        answer = _answer(row, ("output", *ANSWER_KEYS))
        return _checked(messages, "instruction"), answer, _meta(row, {"instruction", "input", "system", "history",
                                                                       *ANSWER_KEYS})
    for key in PROMPT_KEYS:
        if key in row:
            messages = [Message(role="system", content=_text(row, "system"))] if "system" in row else []
            messages.append(_user(_text(row, key), key))
            return _checked(messages, key), _answer(row, ANSWER_KEYS), _meta(row, {key, "system", *ANSWER_KEYS})
    found = ", ".join(row) or "none"
    raise _BadRow(None, f"no prompt column (looked for instruction, conversations, messages, "
                        f"{', '.join(PROMPT_KEYS)}; found {found})")


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise _BadRow(key, f"wrong type: expected text, got {type(value).__name__}")
    return value


def _user(text: str, field_name: str | None) -> Message:
    if not text.strip():
        raise _BadRow(field_name, "empty prompt")
    return Message(role="user", content=text)


def _answer(row: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in row:
            value = _maybe_json(row[key])
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                value = value[0]  # a ranked list, best first
            return _answer_text(value, key)
    return None


def _answer_text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRow(key, f"wrong type: expected the answer as text, got {type(value).__name__}")
    return value if value.strip() else None


def _messages(value: Any, column: str) -> list[Message]:
    if not isinstance(value, list):
        raise _BadRow(column, f"wrong type: expected a list of messages, got {type(value).__name__}")
    messages = []
    for item in value:
        if not isinstance(item, Mapping):
            raise _BadRow(column, "wrong type: expected messages like {'from': ..., 'value': ...}")
        role_key, text_key = ("role", "content") if "role" in item else ("from", "value")
        role, content = str(item.get(role_key, "")).lower(), item.get(text_key)
        if not isinstance(content, str):
            raise _BadRow(column, f"a message has no text under '{text_key}'")
        if role in _USER:
            role = "user"
        elif role in _ASSISTANT:
            role = "assistant"
        elif role != "system":
            raise _BadRow(column, f"unsupported role {item.get(role_key)!r} (expected system, user or assistant)")
        messages.append(Message(role=role, content=content))
    return messages


def _history(value: Any) -> list[Message]:
    value = _maybe_json(value)
    if not value:
        return []
    if not isinstance(value, list) or not all(isinstance(t, list | tuple) and len(t) == 2 for t in value):
        raise _BadRow("history", "wrong type: expected a list of [question, answer] pairs")
    messages: list[Message] = []
    for question, answer in value:
        messages += [Message(role="user", content=str(question)), Message(role="assistant", content=str(answer))]
    return messages


def _checked(messages: list[Message], column: str) -> tuple[Message, ...]:
    turns = [m for m in messages if m["role"] != "system"]
    if not turns or turns[-1]["role"] != "user":
        raise _BadRow(column, "the prompt must end with a user turn")
    if not turns[-1]["content"].strip():
        raise _BadRow(column, "empty prompt")
    return tuple(messages)


def _meta(row: Mapping[str, Any], consumed: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in consumed and isinstance(v, str | int | float | bool)}
