"""Search helpers (pure functions): what the word index (FTS5) holds and how a search box's text is looked up.

A query holding a CJK character (ideographs, kana, hangul) is a substring search: the store looks it up in the
CJK index (``ctllm.pairs.cjk_index``) and checks candidates on the real text (``text_contains``: exact, letters
compared case-insensitively), so a Chinese query of any length, one character included, finds exactly the pairs
holding it. Any other query goes to the FTS5 word index, which holds the texts with their CJK characters left
out (``word_texts``): whole words in sequence, the last one also as a prefix ("passw" finds "password").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from ctllm.pairs.cjk_index import IS_CJK as _IS_CJK
from ctllm.pairs.cjk_index import is_cjk

_WORD_CHAR = re.compile(r"[^\W_]")
_TYPED_WORD = re.compile(r"([A-Za-z0-9]+)$")
MIN_PREFIX = 3  # shorter prefixes expand to too many index terms to stay fast


def word_texts(texts: Sequence[str]) -> list[str]:
    """Each text as the word index holds it: every run of CJK characters replaced by one space."""
    joined = "".join(texts)
    if joined.isascii():
        return list(texts)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cjk = _IS_CJK[np.minimum(codes, 0x10000)]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    keep = ~cjk
    keep[1:] |= cjk[1:] & ~cjk[:-1]  # the first character of each run stays, as a space
    nonempty = starts[lengths > 0]
    keep[nonempty] |= cjk[nonempty]  # a run starting a text too
    out = np.where(cjk, np.uint32(32), codes)[keep].tobytes().decode("utf-32-le", "surrogatepass")
    before = np.concatenate(([0], np.cumsum(keep)))  # characters kept before i
    return [out[a:b] for a, b in zip(before[starts].tolist(), before[ends].tolist(), strict=True)]


def has_cjk(text: str) -> bool:
    return any(map(is_cjk, text))


def text_contains(prompt_json: str, chosen: str, rejected: str, needle: str) -> bool:
    """Whether a stored pair's texts hold ``needle`` (already lower-cased when it has letters; see
    ``substring_needle``). The prompt is stored as JSON messages: a cheap test on the JSON comes first (a
    substring of a message is a substring of its JSON, the needle holding nothing JSON escapes or not), the
    messages are decoded only when that passes."""
    fold = needle != needle.upper()
    for text in (chosen, rejected):
        if needle in (text.lower() if fold else text):
            return True
    if not _JSON_ESCAPED.search(needle) and needle not in (prompt_json.lower() if fold else prompt_json):
        return False
    prompt = "\n".join(m["content"] for m in json.loads(prompt_json))
    return needle in (prompt.lower() if fold else prompt)


def substring_needle(text: str) -> str:
    """The form of a query that ``text_contains`` expects."""
    return text.lower()


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def has_word(text: str) -> bool:
    """Whether the index can look ``text`` up (it holds a letter or digit)."""
    return _WORD_CHAR.search(text) is not None


def fts_query(text: str) -> str | None:
    """The FTS5 expression for a search box's text (holding no CJK character) over the three text columns; None
    when it has no word."""
    text = text.strip()
    if not has_word(text):
        return None
    phrase = '"' + text.replace('"', '""') + '"'
    typed = _TYPED_WORD.search(text)
    if typed and len(typed.group(1)) >= MIN_PREFIX:
        phrase += "*"
    return "{prompt chosen rejected} : " + phrase


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') for text holding no word, as punctuation or emoji."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
