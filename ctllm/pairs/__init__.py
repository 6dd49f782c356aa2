"""Preference pairs: the canonical Pair, format readers and writers, the SQLite store."""

from ctllm.pairs.schema import Message, Pair, detect_language

__all__ = ["Message", "Pair", "detect_language"]
