"""Preference-data formats: detection, and one converter per format that turns a source row into Pairs.

A converter takes one row (a dict, as read from JSON, CSV, Parquet or a ``datasets`` table) and returns the
pairs it holds, or raises :class:`RowProblem` naming the field at fault. Checks shared by every format (empty
text, identical answers, size limit, turn order) live in :func:`make_pair`, so each converter only knows where
its format keeps the prompt and the two answers. Readers (``ctllm.pairs.readers``) add file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.schema import LANGUAGES, MAX_FIELD_CHARS, Message, Pair, RatedAnswer, detect_language

try:  # orjson parses JSON several times faster; the standard library is the fallback
    import orjson

    fast_json_loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    fast_json_loads = json.loads

PKU_CHOICES = ("safer", "better")
MAPPING_KEYS = ("prompt", "chosen", "rejected", "system")


class RowProblem(Exception):
    """One row cannot become a pair: ``field`` is the source column at fault (None for the row as a whole)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class ConvertOptions:
    source: str = ""  # Pair.source when the row has no "source" column of its own
    pku_choice: str = "safer"
    all_ranked_pairs: bool = False
    max_field_chars: int = MAX_FIELD_CHARS
    mapping: Mapping[str, str] | None = None


Converted = list["Pair | RowProblem"]  # a ranked list can yield good pairs and bad ones from one row


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    columns: tuple[str, ...]  # what identifies the format, for messages
    matches: Callable[[dict[str, Any]], bool] = field(repr=False)
    convert: Callable[[dict[str, Any], ConvertOptions], Converted] = field(repr=False)


# ---------------------------------------------------------------------------------------------------------------
# Field access and the checks every format shares.

_USER_ROLES = {"user", "human", "prompter"}
_ASSISTANT_ROLES = {"assistant", "gpt", "bot", "model", "chatgpt", "ai"}


def _type_name(value: Any) -> str:
    return {str: "text", list: "list", dict: "object", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _get(row: Mapping[str, Any], name: str) -> Any:
    value = row.get(name)
    if value is None:
        raise RowProblem(name, "missing field")
    return value


def _text(row: Mapping[str, Any], name: str) -> str:
    value = _get(row, name)
    if not isinstance(value, str):
        raise RowProblem(name, f"wrong type: expected text, got {_type_name(value)}")
    return value


def _optional_text(row: Mapping[str, Any], name: str) -> str:
    return "" if row.get(name) is None else _text(row, name)


def _maybe_json(value: Any) -> Any:
    """CSV cells and some Parquet columns hold lists/objects as JSON text."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return fast_json_loads(value)
        except ValueError:
            return value
    return value


def _role(raw: Any, name: str) -> str:
    role = str(raw).lower()
    if role in _USER_ROLES:
        return "user"
    if role in _ASSISTANT_ROLES:
        return "assistant"
    if role == "system":
        return "system"
    raise RowProblem(name, f"unsupported role {raw!r} (expected system, user or assistant)")


def _message(item: Any, name: str) -> Message:
    """A chat message as {role, content} (OpenAI/TRL) or {from, value} (ShareGPT)."""
    if isinstance(item, Mapping):
        role_key, text_key = ("role", "content") if "role" in item else ("from", "value")
        content = item.get(text_key)
        if isinstance(content, list):  # [{"type": "text", "text": ...}] blocks
            if all(isinstance(b, Mapping) and isinstance(b.get("text"), str) for b in content):
                content = "".join(b["text"] for b in content)
        if role_key in item and isinstance(content, str):
            return Message(role=_role(item[role_key], name), content=content)
    raise RowProblem(name, "wrong type: expected messages like {'role': ..., 'content': text}")


def _messages(value: Any, name: str) -> list[Message]:
    value = _maybe_json(value)
    if isinstance(value, Mapping):
        return [_message(value, name)]
    if not isinstance(value, list):
        raise RowProblem(name, f"wrong type: expected a list of messages, got {_type_name(value)}")
    return [_message(item, name) for item in value]


def _history(row: Mapping[str, Any], name: str = "history") -> list[Message]:
    """LLaMA-Factory history: [[question, answer], ...]."""
    value = _maybe_json(row.get(name))
    if value is None or value == "":
        return []
    if not isinstance(value, list) or not all(
        isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn) for turn in value
    ):
        raise RowProblem(name, "wrong type: expected a list of [question, answer] pairs")
    messages: list[Message] = []
    for question, answer in value:
        messages += [Message(role="user", content=question), Message(role="assistant", content=answer)]
    return messages


def _check_prompt(prompt: Sequence[Message], name: str, limit: int) -> tuple[Message, ...]:
    if len(prompt) == 1 and prompt[0]["role"] == "user":  # the common case, kept fast
        content = prompt[0]["content"]
        if not content or content.isspace():
            raise RowProblem(name, "empty text")
        if len(content) > limit:
            raise RowProblem(name, f"over the size limit: {len(content):,} > {limit:,} characters")
        return tuple(prompt)
    if prompt and prompt[0]["role"] == "system" and not prompt[0]["content"].strip():
        prompt = prompt[1:]
    turns = prompt[1:] if prompt and prompt[0]["role"] == "system" else prompt
    if not turns:
        raise RowProblem(name, "missing field: no user turn")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RowProblem(name, f"turn {i + 1} is from {message['role']}: turns must alternate user/assistant")
    if turns[-1]["role"] != "user":
        raise RowProblem(name, "the prompt must end with a user turn")
    for i, message in enumerate(prompt):
        where = "" if len(prompt) == 1 else f" (turn {i + 1})"
        if not message["content"].strip():
            raise RowProblem(name, "empty text" + where)
        if len(message["content"]) > limit:
            raise RowProblem(name, f"over the size limit{where}: {len(message['content']):,} > {limit:,} characters")
    return tuple(prompt)


_SPECIAL_COLUMNS = frozenset(("source", "language", "meta"))
MAX_NESTING = 200  # the store saves meta with orjson, which refuses more than 253 levels


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether lists/objects in ``value`` nest more than ``limit`` levels (a loop: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def make_pair(
    prompt: Sequence[Message],
    chosen: str,
    rejected: str,
    row: Mapping[str, Any],
    consumed: frozenset[str],
    options: ConvertOptions,
    fields: tuple[str, str, str] = ("prompt", "chosen", "rejected"),
    extra_meta: Mapping[str, Any] | None = None,
) -> Pair:
    """Validate and build one pair; the row's columns not in ``consumed`` become meta (see :func:`_checked`)."""
    prompt_field, chosen_field, rejected_field = fields
    checked = _checked(prompt, {chosen_field: chosen, rejected_field: rejected}, row, consumed, options, prompt_field,
                       extra_meta)
    if chosen == rejected or chosen.strip() == rejected.strip():
        raise RowProblem(rejected_field, f"identical to '{chosen_field}'")
    return Pair(chosen=chosen, rejected=rejected, **checked)


def _checked(
    prompt: Sequence[Message],
    answers: Mapping[str, str],
    row: Mapping[str, Any],
    consumed: frozenset[str],
    options: ConvertOptions,
    prompt_field: str = "prompt",
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A record's checked prompt, source, language and meta, after its answers (field → text) are checked.

    A "source" text column becomes the source, a valid "language" column the language, and a "meta" column
    (an object, or JSON text as the project's own exports write it) is merged into meta; the language is detected
    from the prompt and the first answer when not given.
    """
    limit = options.max_field_chars
    prompt = _check_prompt(prompt, prompt_field, limit)
    for name, text in answers.items():
        if not text or text.isspace():
            raise RowProblem(name, "empty text")
        if len(text) > limit:
            raise RowProblem(name, f"over the size limit: {len(text):,} > {limit:,} characters")

    meta = {k: v for k, v in row.items() if v is not None and k not in consumed}
    source, language = options.source, ""
    if not _SPECIAL_COLUMNS.isdisjoint(meta):
        if isinstance(meta.get("source"), str) and meta["source"]:
            source = meta.pop("source")
        if meta.get("language") in LANGUAGES:
            language = meta.pop("language")
        if isinstance(parsed := _maybe_json(meta.get("meta")), dict):
            del meta["meta"]
            meta.update(parsed)
    if extra_meta:
        meta.update(extra_meta)
    for key, value in meta.items():
        if isinstance(value, dict | list) and _nests_deeper(value, MAX_NESTING):
            raise RowProblem(key, f"nested too deeply (more than {MAX_NESTING} levels)")
    if not language:
        text = prompt[0]["content"] if len(prompt) == 1 else "\n".join(m["content"] for m in prompt)
        language = detect_language(text + "\n" + next(iter(answers.values())))
    return {"prompt": prompt, "source": source, "language": language, "meta": meta}


UNPAIRED_COLUMNS = frozenset(("prompt", "completion", "label"))
_LABEL_TEXT = {"true": True, "1": True, "false": False, "0": False}


def is_unpaired(rows: Sequence[Mapping[str, Any]]) -> bool:
    """TRL's unpaired preference format: sampled rows with prompt, completion and label, none with chosen or
    rejected (a row missing a field is still this format's row, reported bad)."""
    return any(UNPAIRED_COLUMNS <= row.keys() for row in rows) and not any(_CHOSEN_REJECTED & row.keys()
                                                                            for row in rows)


def _label(row: Mapping[str, Any]) -> bool:
    value = _get(row, "label")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_TEXT:  # CSV cells
        return _LABEL_TEXT[value.strip().lower()]
    raise RowProblem("label", f"wrong type: expected true or false, got {_type_name(value)} {value!r}"[:200])


def rated_answer(row: dict[str, Any], options: ConvertOptions) -> RatedAnswer:
    """One row of TRL's unpaired format (standard: texts; conversational: messages) as a RatedAnswer; the row's
    other columns become meta, and source / language / meta columns are read as ``make_pair`` reads them."""
    raw_prompt, raw_completion = _maybe_json(_get(row, "prompt")), _maybe_json(_get(row, "completion"))
    prompt = [Message(role="user", content=raw_prompt)] if isinstance(raw_prompt, str) else _messages(
        raw_prompt, "prompt")
    if isinstance(raw_completion, str):
        completion = raw_completion
    else:
        answer = _messages(raw_completion, "completion")
        if len(answer) != 1 or answer[0]["role"] != "assistant":
            raise RowProblem("completion", "expected one assistant message")
        completion = answer[0]["content"]
    desirable = _label(row)
    return RatedAnswer(completion=completion, desirable=desirable,
                       **_checked(prompt, {"completion": completion}, row, UNPAIRED_COLUMNS, options))


def _conversation_split(
    chosen: list[Message], rejected: list[Message], fields: tuple[str, str]
) -> tuple[list[Message], str, str]:
    """Two full conversations that differ only in the last assistant message → (shared prompt, chosen, rejected)."""
    for messages, name in zip((chosen, rejected), fields, strict=True):
        if not messages or messages[-1]["role"] != "assistant":
            raise RowProblem(name, "the last message must be the assistant's answer")
    if chosen[:-1] != rejected[:-1]:
        raise RowProblem(fields[1], f"conversation differs from '{fields[0]}' before the last assistant message")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _user_turn(row: Mapping[str, Any], name: str, system: str = "") -> list[Message]:
    messages = [Message(role="system", content=system)] if system else []
    return messages + [Message(role="user", content=_text(row, name))]


# ---------------------------------------------------------------------------------------------------------------
# Converters, one per format.


def _simple(prompt_col: str, chosen_col: str, rejected_col: str) -> Callable[[dict, ConvertOptions], Converted]:
    """Formats with prompt/chosen/rejected as plain text columns (TRL standard, cvalues, zhihu, huozi)."""
    fields = (prompt_col, chosen_col, rejected_col)
    consumed = frozenset((*fields, "system"))

    def convert(row: dict[str, Any], options: ConvertOptions) -> Converted:
        prompt = _user_turn(row, prompt_col, _optional_text(row, "system"))
        chosen, rejected = _text(row, chosen_col), _text(row, rejected_col)
        return [make_pair(prompt, chosen, rejected, row, consumed, options, fields)]

    return convert


_PROMPT_CHOSEN_REJECTED = frozenset(("prompt", "chosen", "rejected"))
_CHOSEN_REJECTED = frozenset(("chosen", "rejected"))


def _trl_conversational(row: dict[str, Any], options: ConvertOptions) -> Converted:
    prompt = _messages(_get(row, "prompt"), "prompt")
    chosen = _messages(_get(row, "chosen"), "chosen")
    rejected = _messages(_get(row, "rejected"), "rejected")
    shared, c, r = _conversation_split(prompt + chosen, prompt + rejected, ("chosen", "rejected"))
    return [make_pair(shared, c, r, row, _PROMPT_CHOSEN_REJECTED, options)]


def _implicit(row: dict[str, Any], options: ConvertOptions) -> Converted:
    """TRL implicit prompt: the prompt is what chosen and rejected share."""
    chosen, rejected = _get(row, "chosen"), _get(row, "rejected")
    consumed = _CHOSEN_REJECTED
    if isinstance(chosen, str) and isinstance(rejected, str):
        end = 0
        for a, b in zip(chosen, rejected, strict=False):
            if a != b:
                break
            end += 1
        if not chosen[:end].strip():
            raise RowProblem("rejected", "no shared prompt at the start of 'chosen' and 'rejected'")
        prompt = [Message(role="user", content=chosen[:end].strip())]
        return [make_pair(prompt, chosen[end:].strip(), rejected[end:].strip(), row, consumed, options)]
    chosen_messages, rejected_messages = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    shared, c, r = _conversation_split(chosen_messages, rejected_messages, ("chosen", "rejected"))
    return [make_pair(shared, c, r, row, consumed, options)]


def _ultrafeedback(row: dict[str, Any], options: ConvertOptions) -> Converted:
    chosen = _messages(_get(row, "chosen"), "chosen")
    rejected = _messages(_get(row, "rejected"), "rejected")
    shared, c, r = _conversation_split(chosen, rejected, ("chosen", "rejected"))
    if not shared:  # answers stored without the user turn: the prompt column holds it
        shared = _user_turn(row, "prompt")
    consumed = _PROMPT_CHOSEN_REJECTED
    if row.get("messages") == row.get("chosen"):  # a copy of the chosen conversation
        consumed = consumed | {"messages"}
    return [make_pair(shared, c, r, row, consumed, options)]


def _alpaca_prompt(row: Mapping[str, Any]) -> list[Message]:
    """LLaMA-Factory alpaca: system, history, then instruction + "\\n" + input (input only when non-empty)."""
    instruction = _text(row, "instruction")
    query = _optional_text(row, "input")
    system = _optional_text(row, "system")
    messages = [Message(role="system", content=system)] if system else []
    messages += _history(row)
    messages.append(Message(role="user", content=f"{instruction}\n{query}" if query.strip() else instruction))
    return messages


_ALPACA_COLUMNS = frozenset(("instruction", "input", "system", "history"))


def _alpaca_ranking(row: dict[str, Any], options: ConvertOptions) -> Converted:
    prompt = _alpaca_prompt(row)
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    fields = ("instruction", "chosen", "rejected")
    return [make_pair(prompt, chosen, rejected, row, _ALPACA_COLUMNS | _CHOSEN_REJECTED, options, fields)]


def _alpaca_ranking_old(row: dict[str, Any], options: ConvertOptions) -> Converted:
    """``output`` is a ranked list, best first: the first two, or every ordered pair when asked."""
    prompt = _alpaca_prompt(row)
    outputs = _maybe_json(_get(row, "output"))
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise RowProblem("output", f"wrong type: expected a list of answers, got {_type_name(outputs)}")
    if len(outputs) < 2:
        raise RowProblem("output", f"needs at least 2 ranked answers, found {len(outputs)}")
    consumed = _ALPACA_COLUMNS | {"output"}
    fields = ("instruction", "output", "output")
    if not options.all_ranked_pairs:
        return [make_pair(prompt, outputs[0], outputs[1], row, consumed, options, fields)]
    results: Converted = []
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            ranks = {"rank_chosen": i, "rank_rejected": j}
            names = ("instruction", f"output[{i}]", f"output[{j}]")
            try:
                results.append(make_pair(prompt, outputs[i], outputs[j], row, consumed, options, names, ranks))
            except RowProblem as problem:
                results.append(problem)
    return results


def _sharegpt_ranking(row: dict[str, Any], options: ConvertOptions) -> Converted:
    conversation = _messages(_get(row, "conversations"), "conversations")
    system = _optional_text(row, "system")
    if system and not (conversation and conversation[0]["role"] == "system"):
        conversation.insert(0, Message(role="system", content=system))
    chosen = _messages(_get(row, "chosen"), "chosen")
    rejected = _messages(_get(row, "rejected"), "rejected")
    shared, c, r = _conversation_split(conversation + chosen, conversation + rejected, ("chosen", "rejected"))
    fields = ("conversations", "chosen", "rejected")
    return [make_pair(shared, c, r, row, frozenset((*fields, "system")), options, fields)]


def _pku_id(row: Mapping[str, Any], name: str) -> int:
    value = _get(row, name)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, int) and value in (0, 1):  # also True/False
        return int(value)
    raise RowProblem(name, f"wrong type: expected 0 or 1, got {value!r}")


def _pku_saferlhf(row: dict[str, Any], options: ConvertOptions) -> Converted:
    """PKU-SafeRLHF: two responses; the chosen one is named by safer_response_id (default) or better_response_id."""
    id_column = f"{options.pku_choice}_response_id"
    best = _pku_id(row, id_column)
    chosen_col, rejected_col = f"response_{best}", f"response_{1 - best}"
    prompt = _user_turn(row, "prompt")
    chosen, rejected = _text(row, chosen_col), _text(row, rejected_col)
    fields = ("prompt", chosen_col, rejected_col)
    consumed = frozenset(("prompt", "response_0", "response_1"))
    return [make_pair(prompt, chosen, rejected, row, consumed, options, fields, {"pku_choice": options.pku_choice})]


_HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _hh_turns(prefix: str) -> list[Message]:
    if prefix.startswith("Human:"):
        prefix = "\n\n" + prefix
    pieces = _HH_TURN.split(prefix)
    messages = [Message(role="system", content=pieces[0].strip())] if pieces[0].strip() else []
    for speaker, text in zip(pieces[1::2], pieces[2::2], strict=True):
        messages.append(Message(role="user" if speaker == "Human" else "assistant", content=text.strip()))
    return messages


def _hh_rlhf(row: dict[str, Any], options: ConvertOptions) -> Converted:
    """Anthropic HH: two transcripts; the prompt is what precedes the last "\\n\\nAssistant:", parsed into turns."""
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    cut_c, cut_r = chosen.rfind(_HH_ASSISTANT), rejected.rfind(_HH_ASSISTANT)
    for cut, name in ((cut_c, "chosen"), (cut_r, "rejected")):
        if cut < 0:
            raise RowProblem(name, "no '\\n\\nAssistant:' turn in the transcript")
    if chosen[:cut_c] != rejected[:cut_r]:
        raise RowProblem("rejected", "transcript differs from 'chosen' before the last assistant turn")
    answer_c = chosen[cut_c + len(_HH_ASSISTANT) :].strip()
    answer_r = rejected[cut_r + len(_HH_ASSISTANT) :].strip()
    return [make_pair(_hh_turns(chosen[:cut_c]), answer_c, answer_r, row, _CHOSEN_REJECTED, options)]


def _canonical(row: dict[str, Any], options: ConvertOptions) -> Converted:
    prompt = _messages(_get(row, "prompt"), "prompt")
    chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    return [make_pair(prompt, chosen, rejected, row, _PROMPT_CHOSEN_REJECTED, options)]


def _mapped(row: dict[str, Any], options: ConvertOptions) -> Converted:
    """A user's column map: {"prompt": col, "chosen": col, "rejected": col, optional "system": col}."""
    mapping = dict(options.mapping or {})
    prompt_col, chosen_col, rejected_col = mapping["prompt"], mapping["chosen"], mapping["rejected"]
    system = _optional_text(row, mapping["system"]) if mapping.get("system") else ""
    raw_prompt = _maybe_json(_get(row, prompt_col))
    if isinstance(raw_prompt, str):
        prompt = _user_turn(row, prompt_col, system)
    else:
        prompt = _messages(raw_prompt, prompt_col)
        if system and not (prompt and prompt[0]["role"] == "system"):
            prompt.insert(0, Message(role="system", content=system))
    fields = (prompt_col, chosen_col, rejected_col)
    consumed = frozenset(c for c in mapping.values() if c)
    raw_c, raw_r = _get(row, chosen_col), _get(row, rejected_col)
    if isinstance(raw_c, str) and isinstance(raw_r, str) and not raw_c.lstrip().startswith(("[", "{")):
        return [make_pair(prompt, raw_c, raw_r, row, consumed, options, fields)]
    shared, c, r = _conversation_split(
        prompt + _messages(raw_c, chosen_col), prompt + _messages(raw_r, rejected_col), (chosen_col, rejected_col)
    )
    return [make_pair(shared, c, r, row, consumed, options, fields)]


# ---------------------------------------------------------------------------------------------------------------
# Detection: each format's test on one row; the most specific formats come first.


def _has(row: Mapping[str, Any], *names: str) -> bool:
    return all(row.get(n) is not None for n in names)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


_PROMPT_COLUMNS = ("prompt", "instruction", "conversations", "input")


def _no_prompt_column(row: Mapping[str, Any]) -> bool:
    """Implicit-prompt formats keep the prompt inside the answers: a prompt-like column means another format."""
    return not any(name in row for name in _PROMPT_COLUMNS)


def _looks_hh(row: Mapping[str, Any]) -> bool:
    chosen = row.get("chosen")
    return _no_prompt_column(row) and isinstance(chosen, str) and _HH_ASSISTANT in chosen and "Human:" in chosen


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "canonical",
            "this project's Pair rows: prompt messages, chosen, rejected, source, language, meta",
            ("prompt[messages]", "chosen", "rejected"),
            lambda r: _is_list(r.get("prompt")) and isinstance(r.get("chosen"), str) and "rejected" in r,
            _canonical,
        ),
        Format(
            "pku-saferlhf",
            "PKU-SafeRLHF: two responses, chosen by safer_response_id (default) or better_response_id",
            ("prompt", "response_0", "response_1", "safer_response_id|better_response_id"),
            lambda r: (
                _has(r, "prompt", "response_0", "response_1")
                and ("safer_response_id" in r or "better_response_id" in r)
            ),
            _pku_saferlhf,
        ),
        Format(
            "cvalues",
            "CValues-Comparison (cvalues_rlhf): prompt, pos_resp, neg_resp, pos_type, neg_type",
            ("prompt", "pos_resp", "neg_resp"),
            lambda r: _has(r, "prompt", "pos_resp", "neg_resp"),
            _simple("prompt", "pos_resp", "neg_resp"),
        ),
        Format(
            "huozi",
            "huozi_rlhf_data: prompt, chosen, reject",
            ("prompt", "chosen", "reject"),
            lambda r: _has(r, "prompt", "chosen", "reject"),
            _simple("prompt", "chosen", "reject"),
        ),
        Format(
            "zhihu",
            "zhihu_rlhf_3k: prompt, chosen, rejected, question_id, upvotes_chosen, upvotes_rejected",
            ("prompt", "chosen", "rejected", "question_id|upvotes_chosen"),
            lambda r: _has(r, "prompt", "chosen", "rejected") and ("question_id" in r or "upvotes_chosen" in r),
            _simple("prompt", "chosen", "rejected"),
        ),
        Format(
            "ultrafeedback",
            "UltraFeedback-binarized: prompt text, chosen/rejected conversations including the user turn",
            ("prompt", "chosen[messages]", "rejected[messages]"),
            lambda r: isinstance(r.get("prompt"), str) and _is_list(r.get("chosen")) and _is_list(r.get("rejected")),
            _ultrafeedback,
        ),
        Format(
            "trl-conversational",
            "TRL conversational: prompt messages, chosen/rejected as [assistant message]",
            ("prompt[messages]", "chosen[messages]", "rejected[messages]"),
            lambda r: _is_list(r.get("prompt")) and _is_list(r.get("chosen")),
            _trl_conversational,
        ),
        Format(
            "trl",
            "TRL standard: prompt, chosen, rejected as text (other columns kept as metadata)",
            ("prompt", "chosen", "rejected"),
            lambda r: isinstance(r.get("prompt"), str) and isinstance(r.get("chosen"), str) and "rejected" in r,
            _simple("prompt", "chosen", "rejected"),
        ),
        Format(
            "sharegpt-ranking",
            "LLaMA-Factory sharegpt ranking: conversations [{from, value}], chosen {from, value}, rejected",
            ("conversations", "chosen", "rejected"),
            lambda r: _has(r, "conversations", "chosen", "rejected"),
            _sharegpt_ranking,
        ),
        Format(
            "alpaca-ranking",
            "LLaMA-Factory alpaca ranking: instruction, input, chosen, rejected, optional system and history",
            ("instruction", "chosen", "rejected"),
            lambda r: _has(r, "instruction", "chosen", "rejected"),
            _alpaca_ranking,
        ),
        Format(
            "alpaca-ranking-old",
            "LLaMA-Factory ranking, old style: instruction, input, output [best, worse, ...], optional history",
            ("instruction", "output[list]"),
            lambda r: _has(r, "instruction") and _is_list(_maybe_json(r.get("output"))),
            _alpaca_ranking_old,
        ),
        Format(
            "hh-rlhf",
            'Anthropic HH-RLHF: chosen/rejected transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..."',
            ("chosen[transcript]", "rejected[transcript]"),
            _looks_hh,
            _hh_rlhf,
        ),
        Format(
            "trl-implicit",
            "TRL implicit prompt: chosen and rejected (text or messages) that start with the shared prompt",
            ("chosen", "rejected"),
            lambda r: _no_prompt_column(r) and _has(r, "chosen", "rejected"),
            _implicit,
        ),
        Format(
            "mapping",
            "your own columns: mapping {prompt: column, chosen: column, rejected: column, system: column}",
            ("<mapped columns>",),
            lambda r: False,
            _mapped,
        ),
    )
}

DETECTION_SAMPLE = 200


def detect_format(rows: list[dict]) -> str:
    """The format most of the sampled rows fit (ties go to the more specific format); UserError when none fits."""
    sample = [r for r in rows[:DETECTION_SAMPLE] if isinstance(r, dict)]
    best, best_count = "", 0
    for name, fmt in FORMATS.items():
        count = sum(1 for r in sample if fmt.matches(r))
        if count > best_count:
            best, best_count = name, count
    if best:
        return best
    columns: dict[str, None] = {}
    for r in sample:
        columns.update(dict.fromkeys(r))
    tried = "; ".join(f"{f.name} ({', '.join(f.columns)})" for f in FORMATS.values() if f.name != "mapping")
    found = ", ".join(columns) or "none"
    raise UserError(
        f"could not recognise the preference-data format. Columns found: {found}. Formats tried: {tried}. "
        "Name the format, or give a column mapping such as prompt=question,chosen=good,rejected=bad."
    )


def check_mapping(mapping: Mapping[str, str], rows: list[dict]) -> dict[str, str]:
    """Validate a user's column map against the sampled rows (UserError naming what is wrong)."""
    unknown = sorted(set(mapping) - set(MAPPING_KEYS))
    missing = [k for k in ("prompt", "chosen", "rejected") if not mapping.get(k)]
    if unknown or missing:
        raise UserError(
            f"column mapping needs prompt, chosen and rejected (system optional); "
            f"unknown keys: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}"
        )
    sample = [r for r in rows[:DETECTION_SAMPLE] if isinstance(r, dict)]
    columns: dict[str, None] = {}
    for r in sample:
        columns.update(dict.fromkeys(r))
    absent = [f"{k}={c}" for k, c in mapping.items() if c and c not in columns]
    if sample and absent:
        raise UserError(
            f"column mapping names columns the data does not have: {', '.join(absent)}. "
            f"Columns found: {', '.join(columns)}"
        )
    return {k: c for k, c in mapping.items() if c}
