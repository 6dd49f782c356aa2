"""Hypothesis strategies that build hostile import files: each draws a :class:`HostileFile` (a name with the
extension that picks the reader, the bytes, and the category it was drawn from, for counting).

Valid content comes first (rows of several preference formats) and is then damaged: truncated, mistyped, blown up,
nested, NUL-laced, re-encoded, made ragged, or replaced by Parquet whose footer and metadata lie.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

FIELD_LIMIT = 2_000  # max_field_chars the fuzz tests import with
MAX_BYTES = 512 << 10  # the upload limit the fuzz tests import with
TEXT_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv")
EXTENSIONS = (*TEXT_EXTENSIONS, ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz")


@dataclass(frozen=True)
class HostileFile:
    name: str  # file name; its extension picks the reader
    data: bytes
    category: str

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep multi-megabyte files readable
        head = self.data[:120]
        return f"HostileFile({self.name!r}, {len(self.data)} bytes, {self.category!r}, starts {head!r})"


# ---------------------------------------------------------------------------------------------------------------
# Valid rows and how they are written.

_words = st.text(alphabet=st.sampled_from("abcdefgh xyz,.\"'\n\t春夏秋冬你好é"), min_size=1, max_size=24)


@st.composite
def format_rows(draw: st.DrawFn, most: int = 4) -> list[dict[str, Any]]:
    """One to ``most`` rows of one of several formats (TRL, conversational, PKU, alpaca, sharegpt, HH, canonical)."""
    template = draw(st.sampled_from(sorted(_TEMPLATES)))
    count = draw(st.integers(1, most))
    return [_TEMPLATES[template](draw(_words), draw(_words), draw(_words) + "!") for _ in range(count)]


def _messages(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


_TEMPLATES = {
    "trl": lambda p, c, r: {"prompt": p, "chosen": c, "rejected": r},
    "trl-conversational": lambda p, c, r: {
        "prompt": _messages(("user", p)),
        "chosen": _messages(("assistant", c)),
        "rejected": _messages(("assistant", r)),
    },
    "pku": lambda p, c, r: {"prompt": p, "response_0": c, "response_1": r, "safer_response_id": 0},
    "alpaca": lambda p, c, r: {"instruction": p, "input": "", "chosen": c, "rejected": r, "history": [["q", "a"]]},
    "sharegpt": lambda p, c, r: {
        "conversations": [{"from": "human", "value": p}],
        "chosen": {"from": "gpt", "value": c},
        "rejected": {"from": "gpt", "value": r},
    },
    "hh": lambda p, c, r: {
        "chosen": f"\n\nHuman: {p}\n\nAssistant: {c}",
        "rejected": f"\n\nHuman: {p}\n\nAssistant: {r}",
    },
    "canonical": lambda p, c, r: {"prompt": _messages(("user", p)), "chosen": c, "rejected": r, "meta": {"k": 1}},
}


def as_jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in rows)


def as_json(rows: list[Any]) -> bytes:
    return json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8")


def as_csv(rows: list[dict[str, Any]], delimiter: str = ",") -> bytes:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def as_parquet(table: pa.Table | list[dict[str, Any]], **options: Any) -> bytes:
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(table)
    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def encode(rows: list[dict[str, Any]], extension: str) -> bytes:
    """Rows written the way ``extension`` says (a .gz suffix compresses)."""
    if extension.endswith(".gz"):
        return gzip.compress(encode(rows, extension.removesuffix(".gz")), mtime=0)
    if extension == ".json":
        return as_json(rows)
    if extension == ".jsonl":
        return as_jsonl(rows)
    if extension in (".csv", ".tsv"):
        return as_csv(rows, "\t" if extension == ".tsv" else ",")
    if extension == ".parquet":
        return as_parquet(rows)
    raise ValueError(extension)


@st.composite
def valid_file(draw: st.DrawFn, extensions: tuple[str, ...] = EXTENSIONS, most: int = 4) -> tuple[str, bytes]:
    """(extension, bytes) of a readable file of one to ``most`` rows."""
    extension = draw(st.sampled_from(extensions))
    rows = draw(format_rows(most))
    return extension, encode(rows, extension)


# ---------------------------------------------------------------------------------------------------------------
# Hostile files, one strategy per kind of damage.

_json_scalars = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def truncated(draw: st.DrawFn) -> HostileFile:
    extension, data = draw(valid_file(most=8))
    end = max(1, len(data))
    cut = draw(st.integers(0, end - 1) | st.integers(1, end).map(lambda back: end - back))  # near either end
    return HostileFile(f"cut{extension}", data[:cut], "truncated")


@st.composite
def wrong_types(draw: st.DrawFn) -> HostileFile:
    """A field of a valid row (or the row itself) replaced by a value of any JSON type."""
    rows = draw(format_rows())
    index = draw(st.integers(0, len(rows) - 1))
    if draw(st.integers(0, 9)) == 0:
        rows[index] = draw(json_values)  # the row is not an object
    else:
        key = draw(st.sampled_from([*rows[index], "meta", "source", "language", "system", "split"]))
        rows[index][key] = draw(json_values.filter(lambda v: not isinstance(v, str)) | json_values)
    extension = draw(st.sampled_from((".json", ".jsonl", ".csv", ".jsonl.gz")))
    if extension.startswith(".csv") and not all(isinstance(r, dict) for r in rows):
        extension = ".jsonl"
    data = encode(rows, extension) if extension != ".json" else json.dumps(rows).encode()
    return HostileFile(f"types{extension}", data, "wrong types")


@st.composite
def huge_fields(draw: st.DrawFn) -> HostileFile:
    """A prompt, answer, message or meta value far over the size limit (and CSV lines as long)."""
    rows = draw(format_rows())
    row = rows[draw(st.integers(0, len(rows) - 1))]
    size = draw(st.integers(FIELD_LIMIT + 1, FIELD_LIMIT * 60))
    text = draw(st.sampled_from("a中\n ,\"é")) * size
    key = draw(st.sampled_from(sorted(row)))
    value = row[key]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value[0][next(iter(value[0]))] = text  # a message's role or content
    elif isinstance(value, dict):
        value[next(iter(value))] = text
    else:
        row[key] = text
    extension = draw(st.sampled_from((".json", ".jsonl", ".csv", ".tsv", ".parquet")))
    if extension == ".parquet":
        try:
            return HostileFile(f"huge{extension}", as_parquet(rows), "huge fields")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            extension = ".jsonl"
    return HostileFile(f"huge{extension}", encode(rows, extension), "huge fields")


@st.composite
def deep_nesting(draw: st.DrawFn) -> HostileFile:
    """Lists or objects nested up to 100,000 deep: the whole file, one field, the meta, or a CSV cell."""
    depth = draw(st.sampled_from([200, 256, 300, 999, 1_025, 5_000, 100_000]) | st.integers(2, 100_000))
    opened, closed = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = "1" if opened.startswith("{") else ""
    closing = draw(st.booleans())  # an unclosed nest is also a truncated file
    nest = opened * depth + inner + (closed * depth if closing else "")
    where = draw(st.sampled_from(["file", "field", "meta", "message", "csv"]))
    good = '{"prompt": "p", "chosen": "c", "rejected": "r"'
    if where == "file":
        extension, body = draw(st.sampled_from([".json", ".jsonl"])), nest
    elif where == "csv":
        quoted = nest.replace('"', '""')
        extension, body = ".csv", f'prompt,chosen,rejected,meta\np,c,r,"{quoted}"\nq,d,s,{{}}\n'
    else:
        extension = draw(st.sampled_from([".json", ".jsonl"]))
        if where == "message":
            row = '{"prompt": [{"role": "user", "content": ' + nest + '}], "chosen": "c", "rejected": "r"}'
        else:
            row = good + f', "{"x" if where == "field" else "meta"}": {nest}}}'
        rows = [row, good + "}"]
        body = "[" + ",\n".join(rows) + "]" if extension == ".json" else "\n".join(rows) + "\n"
    return HostileFile(f"deep{extension}", body.encode(), "deep nesting")


@st.composite
def nul_bytes(draw: st.DrawFn) -> HostileFile:
    """NUL bytes at random places in a valid text file, or escaped NULs inside fields."""
    extension, data = draw(valid_file(TEXT_EXTENSIONS))
    if draw(st.booleans()) and extension in (".json", ".jsonl"):
        data = data.replace(b'"c', b'"\\u0000c').replace(b"a", b"\\u0000", 1)
    else:
        for _ in range(draw(st.integers(1, 5))):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + b"\x00" * draw(st.integers(1, 3)) + data[at:]
    return HostileFile(f"nul{extension}", data, "NUL bytes")


_ENCODINGS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "gb18030", "shift_jis")


@st.composite
def encodings(draw: st.DrawFn) -> HostileFile:
    """Valid content in another encoding, lines in mixed encodings, stray high bytes, or lone surrogates."""
    extension = draw(st.sampled_from(TEXT_EXTENSIONS))
    rows = draw(format_rows())
    text = encode(rows, extension).decode("utf-8")
    how = draw(st.sampled_from(["encoding", "mixed", "stray", "surrogate"]))
    if how == "encoding":
        data = text.encode(draw(st.sampled_from(_ENCODINGS)), "replace")
    elif how == "mixed":
        lines = text.splitlines(keepends=True)
        data = b"".join(line.encode("latin-1", "replace") if i % 2 else line.encode() for i, line in enumerate(lines))
        data += "prompt é,chosen ü,rejected ß\n".encode("latin-1")
    elif how == "stray":
        data = text.encode()
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + data[at:]
    else:
        surrogate = draw(st.sampled_from(["\\ud800", "\\udfff", "\\udc80", "\\ud83d"]))
        if extension in (".json", ".jsonl"):
            data = text.replace('": "', '": "' + surrogate, draw(st.integers(1, 6))).encode()
        else:
            data = text.encode() + "p\ud800,c,r\n".encode("utf-8", "surrogatepass")
    return HostileFile(f"enc{extension}", data, "encodings")


@st.composite
def ragged_csv(draw: st.DrawFn) -> HostileFile:
    """CSV/TSV rows with too few or too many fields, stray quotes, and very long lines."""
    delimiter = draw(st.sampled_from([",", "\t"]))
    header = draw(st.sampled_from(["prompt,chosen,rejected", "instruction,input,chosen,rejected", "a", ""]))
    lines = [header.replace(",", delimiter)]
    for _ in range(draw(st.integers(0, 8))):
        cells = draw(st.lists(st.text(alphabet='ab"\n ,\t中', max_size=8), max_size=7))
        if draw(st.integers(0, 5)) == 0:
            cells.append("x" * draw(st.integers(FIELD_LIMIT, 200_000)))
        line = delimiter.join(cells)
        if draw(st.booleans()):
            line = '"' + line  # an unclosed quote swallows what follows
        lines.append(line)
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    extension = ".csv" if delimiter == "," else ".tsv"
    return HostileFile(f"ragged{extension}", ending.join(lines).encode(), "ragged CSV")


def _footer(metadata: bytes, claimed: int | None = None) -> bytes:
    return metadata + struct.pack("<I", len(metadata) if claimed is None else claimed) + b"PAR1"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def absurd_metadata(schema_count: int, num_rows: int, row_groups: int) -> bytes:
    """Thrift-compact FileMetaData whose lists claim ``schema_count`` / ``row_groups`` elements that never come."""
    out = b"\x15" + _varint(_zigzag(1))  # field 1 version: i32
    out += b"\x19\xfc" + _varint(schema_count)  # field 2 schema: list<struct> of schema_count
    out += b"\x18\x04name\x00"  # one SchemaElement holding only its name ... then the list runs dry
    out += b"\x16" + _varint(_zigzag(num_rows))  # field 3 num_rows: i64
    out += b"\x19\xfc" + _varint(row_groups)  # field 4 row_groups: list<struct>
    return out


@st.composite
def damaged_parquet(draw: st.DrawFn) -> HostileFile:
    """Parquet truncated, with a footer claiming huge metadata, with mutated or absurd metadata, with invalid
    UTF-8 in a string column, or with types no format expects."""
    data = as_parquet(draw(format_rows()))
    (length,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - length
    how = draw(st.sampled_from(["truncated", "claimed length", "mutated", "absurd", "utf-8", "types"]))
    if how == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "claimed length":
        claimed = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, length + 1]) | st.integers(0, 2**32 - 1))
        data = data[:-8] + struct.pack("<I", claimed) + b"PAR1"
    elif how == "mutated":
        mutable = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            mutable[draw(st.integers(start, len(data) - 9))] = draw(st.integers(0, 255))
        data = bytes(mutable)
    elif how == "absurd":
        huge = st.sampled_from([2**31 - 1, 2**32 - 1, 2**62, 10**9]) | st.integers(0, 2**63 - 1)
        metadata = absurd_metadata(draw(huge), draw(huge), draw(huge))
        claimed = draw(st.none() | st.sampled_from([2**32 - 1, 2**31]))
        data = b"PAR1" + bytes(draw(st.integers(0, 64))) + _footer(metadata, claimed)
    elif how == "utf-8":
        column = draw(st.sampled_from(["prompt", "chosen", "extra"]))
        bad = pa.array([b"ok\xff\xfe", b"fine", b"\xc3("], pa.binary()).view(pa.string())
        columns = {"prompt": pa.array(["p", "q", "t"]), "chosen": pa.array(["c", "d", "e"]),
                   "rejected": pa.array(["r", "s", "u"])}
        data = as_parquet(pa.table(columns | {column: bad}))
    else:
        weird = draw(st.sampled_from([
            pa.array([1, 2], pa.int64()),
            pa.array([b"a", b"\x00\xff"], pa.binary()),
            pa.array([[1], [2, 3]]),
            pa.array([{"x": 1}, {"x": None}]),
            pa.array([1.5, float("nan")]),
            pa.array([None, None], pa.string()),
        ]))
        column = draw(st.sampled_from(["prompt", "chosen", "rejected"]))
        columns = {"prompt": pa.array(["p", "q"]), "chosen": pa.array(["c", "d"]), "rejected": pa.array(["r", "s"])}
        data = as_parquet(pa.table(columns | {column: weird}))
    return HostileFile(f"{how.replace(' ', '-')}.parquet", data, "damaged Parquet")


@st.composite
def empty_or_garbage(draw: st.DrawFn) -> HostileFile:
    """Empty files, whitespace, a lone BOM, or random bytes, under every extension."""
    extension = draw(st.sampled_from(EXTENSIONS))
    data = draw(
        st.sampled_from([b"", b"\n\n", b" \t\r\n", b"\xef\xbb\xbf", b"\xff\xfe", b"PAR1", b"PAR1PAR1", b"\x1f\x8b"])
        | st.binary(min_size=1, max_size=2_000)
    )
    return HostileFile(f"garbage{extension}", data, "empty or garbage")


@st.composite
def damaged_gzip(draw: st.DrawFn) -> HostileFile:
    """Compressed files cut short, with a flipped byte, or a valid stream followed by junk."""
    extension, data = draw(valid_file((".jsonl.gz", ".json.gz", ".csv.gz")))
    how = draw(st.sampled_from(["cut", "flip", "junk"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        mutable = bytearray(data)
        mutable[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(mutable)
    else:
        data += draw(st.binary(min_size=1, max_size=64))
    return HostileFile(f"gz-{how}{extension}", data, "damaged gzip")


@st.composite
def over_the_limit(draw: st.DrawFn) -> HostileFile:
    """Files larger than :data:`MAX_BYTES`: valid rows repeated, or junk (the size check must come first)."""
    extension = draw(st.sampled_from(EXTENSIONS))
    size = draw(st.integers(MAX_BYTES + 1, MAX_BYTES + (64 << 10)))
    if draw(st.booleans()):
        data = (draw(st.sampled_from([b"\xff", b"[", b"x", b"\x00"])) * size)[:size]
    else:
        line = b'{"prompt": "p", "chosen": "c", "rejected": "r", "pad": "' + b"." * 200 + b'"}\n'
        data = (line * (size // len(line) + 1))[:size]
    return HostileFile(f"big{extension}", data, "over the size limit")


STRATEGIES = {
    "truncated": truncated(),
    "wrong types": wrong_types(),
    "huge fields": huge_fields(),
    "deep nesting": deep_nesting(),
    "NUL bytes": nul_bytes(),
    "encodings": encodings(),
    "ragged CSV": ragged_csv(),
    "damaged Parquet": damaged_parquet(),
    "empty or garbage": empty_or_garbage(),
    "damaged gzip": damaged_gzip(),
    "over the size limit": over_the_limit(),
}
