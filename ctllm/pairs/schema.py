"""The canonical preference pair every reader produces and every writer consumes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypedDict

ROLES = ("system", "user", "assistant")
LANGUAGES = ("zh", "en", "other")
MAX_FIELD_CHARS = 200_000  # a prompt or response longer than this is rejected on import (Settings can change it)


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Pair:
    """A prompt (chat messages ending with the last user turn) and two assistant responses.

    ``prompt`` may start with a system message and hold earlier user/assistant turns.
    ``meta`` keeps what the source had beyond the texts (scores, categories, ids, split).
    """

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    source: str = ""
    language: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _settle(self, self.chosen)

    @property
    def system(self) -> str:
        return self.prompt[0]["content"] if self.prompt and self.prompt[0]["role"] == "system" else ""

    @property
    def last_user(self) -> str:
        for message in reversed(self.prompt):
            if message["role"] == "user":
                return message["content"]
        return ""

    @property
    def prompt_text(self) -> str:
        """All prompt turns joined, for search and language detection."""
        return "\n".join(m["content"] for m in self.prompt)

    def content_hash(self) -> str:
        """Identity of the texts (prompt turns, chosen, rejected): used for de-duplication."""
        payload = json.dumps([list(map(dict, self.prompt)), self.chosen, self.rejected], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": [dict(m) for m in self.prompt],
            "chosen": self.chosen,
            "rejected": self.rejected,
            "source": self.source,
            "language": self.language,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        return cls(
            prompt=tuple(data["prompt"]),
            chosen=data["chosen"],
            rejected=data["rejected"],
            source=data.get("source", ""),
            language=data.get("language", ""),
            meta=dict(data.get("meta") or {}),
        )

    def as_rated(self) -> tuple[RatedAnswer, RatedAnswer]:
        """The pair as KTO reads it: the chosen answer desirable, the rejected one undesirable."""
        return (RatedAnswer(self.prompt, self.chosen, True, self.source, self.language, dict(self.meta)),
                RatedAnswer(self.prompt, self.rejected, False, self.source, self.language, dict(self.meta)))

    def swapped(self) -> Pair:
        return Pair(self.prompt, self.rejected, self.chosen, self.source, self.language, dict(self.meta))


@dataclass(frozen=True)
class RatedAnswer:
    """Unpaired feedback (KTO): a prompt, one assistant answer, and whether that answer is desirable.

    TRL's unpaired preference format is ``prompt`` / ``completion`` / ``label``; ``prompt`` as in ``Pair``.
    """

    prompt: tuple[Message, ...]
    completion: str
    desirable: bool
    source: str = ""
    language: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _settle(self, self.completion)

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.prompt) if m["role"] == "user"), "")


def _settle(record: Pair | RatedAnswer, answer: str) -> None:
    """A frozen record's prompt as plain {role, content} messages, and its language detected when not given."""
    if not _is_plain_messages(record.prompt):
        object.__setattr__(record, "prompt", tuple(Message(role=m["role"], content=m["content"])
                                                   for m in record.prompt))
    if not record.language:
        text = "\n".join(m["content"] for m in record.prompt)
        object.__setattr__(record, "language", detect_language(text + "\n" + answer))


def _is_plain_messages(prompt: object) -> bool:
    """Already a tuple of {role, content} dicts: skip the copy (readers build 229k pairs at a time)."""
    return isinstance(prompt, tuple) and all(type(m) is dict and m.keys() == {"role", "content"} for m in prompt)


def user_prompt(text: str, system: str = "") -> tuple[Message, ...]:
    """A one-turn prompt, with an optional system message."""
    messages: list[Message] = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=text))
    return tuple(messages)



_ASCII_NON_LETTERS = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122))
_NON_ASCII_BYTES = bytes(range(128, 256))
# High bytes (UTF-16) of the CJK blocks we count: 3400-4DBF, 4E00-9FFF, F900-FAFF.
_NOT_CJK_HIGH = bytes(b for b in range(256) if not (0x34 <= b <= 0x9F or b in (0xF9, 0xFA)))
_HEXAGRAMS = re.compile("[\u4dc0-\u4dff]")  # share the high byte 0x4D with CJK but are not ideographs
_CJK_CLASS = "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff"
_OTHER_LETTER_CANDIDATES = re.compile(f"[^\\W\\d_\x00-\x7f{_CJK_CLASS}]")


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs are a notable share of the letters, 'en' for mostly ASCII letters, else 'other'.

    Counted with bytes.translate instead of a per-character loop: an import runs this 229k times.
    One CJK character carries about as much as a short English word, hence the factor 4.
    """
    t = text[:4000]
    utf8 = t.encode("utf-8", "surrogatepass")
    latin = len(utf8.translate(None, _ASCII_NON_LETTERS))
    if len(utf8) == len(t):
        cjk = other = 0
    else:
        high = t.encode("utf-16-le", "surrogatepass")[1::2]
        cjk = len(high.translate(None, _NOT_CJK_HIGH))
        if high.count(0x4D):
            cjk -= len(_HEXAGRAMS.findall(t))
        unsure = len(t) - len(utf8.translate(None, _NON_ASCII_BYTES)) - cjk  # bound on other-script letters
        if cjk * 4 >= latin and cjk >= max(1, unsure):
            return "zh"
        other = sum(1 for ch in _OTHER_LETTER_CANDIDATES.findall(t) if ch.isalpha())
    letters = cjk + latin + other
    if letters == 0:
        return "other"
    if cjk * 4 >= latin and cjk >= max(1, other):
        return "zh"
    if latin >= 0.8 * letters:
        return "en"
    return "other"
