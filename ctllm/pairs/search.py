"""Full-text search helpers for the store's FTS5 index (pure functions).

SQLite's trigram tokenizer would give substrings in every language, but it indexes at about 1 µs a character on
this machine: several minutes for the seed's 229k pairs. The index instead uses ``unicode61`` on text where
every CJK character (ideographs, kana, hangul) stands apart as a token of its own, which indexes several times
faster. A query becomes a phrase: a Chinese query of any length (one or two characters included) matches
exactly the texts holding it as a substring (punctuation and spaces between the characters are ignored); an
English query matches whole words in sequence, the last one also as a prefix ("passw" finds "password").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_CJK_RANGES = ((0x3040, 0x3100), (0x3400, 0x4DC0), (0x4E00, 0xA000), (0xAC00, 0xD7B0), (0xF900, 0xFB00))
_IS_CJK = np.zeros(0x10001, dtype=bool)  # indexed by code point; the last slot stands for everything above
for _lo, _hi in _CJK_RANGES:
    _IS_CJK[_lo:_hi] = True
_WORD_CHAR = re.compile(r"[^\W_]")
_TYPED_WORD = re.compile(r"([A-Za-z0-9]+)$")
MIN_PREFIX = 3  # shorter prefixes expand to too many index terms to stay fast


def search_texts(texts: Sequence[str]) -> list[str]:
    """Each text as the index sees it: a space on both sides of every CJK character, the rest unchanged.

    Done for a whole batch at once with numpy (a per-character Python pass over 220M characters takes minutes).
    """
    joined = "".join(texts)
    if joined.isascii():
        return list(texts)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cjk = _IS_CJK[np.minimum(codes, 0x10000)]
    gap = np.zeros(len(codes), dtype=bool)  # a space after character i
    gap[:-1] = cjk[:-1] | cjk[1:]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    gap[ends[lengths > 0] - 1] = False  # never across texts, nor at a text's end
    spaced = np.empty(2 * len(codes), dtype=np.uint32)
    spaced[0::2] = codes
    spaced[1::2] = 32
    keep = np.ones(2 * len(codes), dtype=bool)
    keep[1::2] = gap
    out = spaced[keep].tobytes().decode("utf-32-le", "surrogatepass")
    before = np.concatenate(([0], np.cumsum(gap)))  # spaces inserted before character i
    return [out[a:b] for a, b in zip((starts + before[starts]).tolist(), (ends + before[ends]).tolist(), strict=True)]


def search_text(text: str) -> str:
    return search_texts([text])[0]


def has_word(text: str) -> bool:
    """Whether the index can look ``text`` up (it holds a letter or digit)."""
    return _WORD_CHAR.search(text) is not None


def fts_query(text: str) -> str | None:
    """The FTS5 expression for a search box's text over the three text columns; None when it has no word."""
    text = text.strip()
    if not has_word(text):
        return None
    phrase = '"' + search_text(text).replace('"', '""') + '"'
    typed = _TYPED_WORD.search(text)
    if typed and len(typed.group(1)) >= MIN_PREFIX:
        phrase += "*"
    return "{prompt chosen rejected} : " + phrase


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') for text holding no word, as punctuation or emoji."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
