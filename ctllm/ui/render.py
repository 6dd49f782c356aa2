"""Untrusted text (pair texts, chat messages, file names) to Markdown in which no HTML is live.

Outside code, ``& < >`` become entities (so no tag, comment or autolink survives) and ``[`` is
backslash-escaped (so no link or image, ``javascript:`` included, can form). Inside fenced code blocks
and inline code spans nothing is changed: Markdown shows code as text, and escaping there would show
the entities literally. The Gradio components get ``sanitize_html=True`` as a second layer.
"""

from __future__ import annotations

import re

from ctllm.pairs.schema import Message

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BACKTICKS = re.compile(r"`+")
_PLAIN = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\["})


def _escape_plain(text: str) -> str:
    return text.translate(_PLAIN)


def _escape_line(line: str) -> str:
    """Escape a line outside fenced code, keeping inline code spans (`...`, ``...``) verbatim."""
    out: list[str] = []
    pos = 0
    while True:
        opening = _BACKTICKS.search(line, pos)
        if opening is None:
            break
        closing = re.compile(r"(?<!`)" + re.escape(opening.group()) + r"(?!`)").search(line, opening.end())
        if closing is None:
            # No closing run: the backticks are literal text.
            out.append(_escape_plain(line[pos : opening.end()]))
            pos = opening.end()
            continue
        out.append(_escape_plain(line[pos : opening.start()]))
        out.append(line[opening.start() : closing.end()])
        pos = closing.end()
    out.append(_escape_plain(line[pos:]))
    return "".join(out)


def inert_markdown(text: str) -> str:
    """Markdown for ``text`` with every HTML construct shown as text."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd").split("\n")
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
            continue
        if match:
            fence = match.group(1)
            out.append(line)
            continue
        out.append(_escape_line(line))
    if fence is not None:
        out.append(fence)  # close an unterminated fence so it cannot swallow what follows
    return "\n".join(out)


def inert_inline(text: str) -> str:
    """A short untrusted string (a file name, a model name) for use inside our own Markdown."""
    return _escape_plain(" ".join(text.split())).replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")


def prompt_context_markdown(prompt: tuple[Message, ...] | list[Message]) -> str:
    """System message and earlier turns (all but the last user turn), for the collapsible context."""
    turns = list(prompt)
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    blocks = [f"**{m['role']}**\n\n{inert_markdown(m['content'])}" for m in turns]
    return "\n\n---\n\n".join(blocks)


def last_user_markdown(prompt: tuple[Message, ...] | list[Message]) -> str:
    for message in reversed(list(prompt)):
        if message["role"] == "user":
            return inert_markdown(message["content"])
    return ""


def chat_display(history: list[Message]) -> list[dict[str, str]]:
    """A raw chat history as Chatbot messages whose content is inert Markdown."""
    return [{"role": m["role"], "content": inert_markdown(m["content"])} for m in history]


def code_block(text: str) -> str:
    """``text`` as a fenced code block whose fence is longer than any backtick run inside, so it cannot end
    early (reports and logs quote untrusted file content)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"
