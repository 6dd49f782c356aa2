"""Untrusted text (pair texts, chat messages, file names) to Markdown in which no HTML is live.

Outside code, ``& < >`` become entities (so no tag, comment or autolink survives) and ``[`` is
backslash-escaped (so no link or image, ``javascript:`` included, can form). Inside fenced code blocks
and inline code spans nothing is changed: Markdown shows code as text, and escaping there would show
the entities literally. The Gradio components get ``sanitize_html=True`` as a second layer.

Search matches are highlighted on the raw text: each piece is escaped, then a match is wrapped in ``<mark>``
(our only live tag), so no match can split an entity or let the text's own markup through. Code is left
unhighlighted (a tag there would show as text).
"""

from __future__ import annotations

import re

from ctllm.pairs.cjk_index import is_cjk
from ctllm.pairs.schema import Message

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BACKTICKS = re.compile(r"`+")
_PLAIN = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\["})


def _escape_plain(text: str, highlight: re.Pattern[str] | None = None) -> str:
    if highlight is None:
        return text.translate(_PLAIN)
    out: list[str] = []
    pos = 0
    for match in highlight.finditer(text):
        if match.end() == match.start():
            continue
        out.append(text[pos : match.start()].translate(_PLAIN))
        out.append(f"<mark>{match.group().translate(_PLAIN)}</mark>")
        pos = match.end()
    out.append(text[pos:].translate(_PLAIN))
    return "".join(out)


def search_highlighter(query: str) -> re.Pattern[str] | None:
    """What to highlight for a search box's text, as the store finds it (``ctllm.pairs.search``): a query
    holding a CJK character, or no letter or digit, is one substring; otherwise its words, each from a word's
    start (the store matches whole words, the last as a prefix). Letters compare case-insensitively."""
    query = " ".join(query.split())
    if not query:
        return None
    words = re.findall(r"[^\W_]+", query)
    if not words or any(map(is_cjk, query)):
        return re.compile(re.escape(query), re.IGNORECASE)
    words = sorted(set(words), key=len, reverse=True)  # the longest first, so "eggs" wins over "egg"
    return re.compile(r"(?<![^\W_])(?:" + "|".join(map(re.escape, words)) + ")", re.IGNORECASE)


def _escape_line(line: str, highlight: re.Pattern[str] | None = None) -> str:
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
            out.append(_escape_plain(line[pos : opening.end()], highlight))
            pos = opening.end()
            continue
        out.append(_escape_plain(line[pos : opening.start()], highlight))
        out.append(line[opening.start() : closing.end()])
        pos = closing.end()
    out.append(_escape_plain(line[pos:], highlight))
    return "".join(out)


def inert_markdown(text: str, highlight: re.Pattern[str] | None = None) -> str:
    """Markdown for ``text`` with every HTML construct shown as text; ``highlight``'s matches (outside code)
    wrapped in ``<mark>``."""
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
        out.append(_escape_line(line, highlight))
    if fence is not None:
        out.append(fence)  # close an unterminated fence so it cannot swallow what follows
    return "\n".join(out)


def inert_inline(text: str) -> str:
    """A short untrusted string (a file name, a model name) for use inside our own Markdown."""
    return _escape_plain(" ".join(text.split())).replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")


def prompt_context_markdown(
    prompt: tuple[Message, ...] | list[Message], highlight: re.Pattern[str] | None = None
) -> str:
    """System message and earlier turns (all but the last user turn), for the collapsible context."""
    turns = list(prompt)
    if turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    blocks = [f"**{m['role']}**\n\n{inert_markdown(m['content'], highlight)}" for m in turns]
    return "\n\n---\n\n".join(blocks)


def last_user_markdown(prompt: tuple[Message, ...] | list[Message], highlight: re.Pattern[str] | None = None) -> str:
    for message in reversed(list(prompt)):
        if message["role"] == "user":
            return inert_markdown(message["content"], highlight)
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
