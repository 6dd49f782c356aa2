"""The canonical preference pair every reader produces and every writer consumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

ROLES = ("system", "user", "assistant")
LANGUAGES = ("zh", "en", "other")


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
        object.__setattr__(self, "prompt", tuple(Message(role=m["role"], content=m["content"]) for m in self.prompt))
        if not self.language:
            object.__setattr__(self, "language", detect_language(self.prompt_text + "\n" + self.chosen))

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

    def swapped(self) -> Pair:
        return Pair(self.prompt, self.rejected, self.chosen, self.source, self.language, dict(self.meta))


def user_prompt(text: str, system: str = "") -> tuple[Message, ...]:
    """A one-turn prompt, with an optional system message."""
    messages: list[Message] = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=text))
    return tuple(messages)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs are a notable share of the letters, 'en' for mostly ASCII letters."""
    cjk = latin = other = 0
    for ch in text[:4000]:
        if _is_cjk(ch):
            cjk += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
        elif ch.isalpha():
            other += 1
    letters = cjk + latin + other
    if letters == 0:
        return "other"
    # One CJK character carries about as much as a short English word.
    if cjk * 4 >= latin and cjk >= max(1, other):
        return "zh"
    if latin >= 0.8 * letters:
        return "en"
    return "other"
