"""Read preference data from files, ``datasets`` folders or the hub into Pairs, reporting every bad row.

Files: .json (an array, an object holding a list, or JSON Lines under a .json name), .jsonl, .parquet, .csv,
.tsv, each optionally .gz. Bad rows never stop a read: each becomes a :class:`RowError` with the file, the
1-based line (JSONL/CSV, and JSON when it can be told) and the 1-based row number. ``on_error="abort"`` raises
:class:`ImportAborted` with every error instead, so a caller writes nothing.

With ``max_bytes`` (the upload limit) a larger file is refused before it is read, and compressed data (gzip,
Parquet) that decodes to more than :data:`DECODED_RATIO` times the limit is refused as a likely bomb.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctllm.errors import UserError
from ctllm.pairs.formats import (
    FORMATS,
    PKU_CHOICES,
    ConvertOptions,
    RowProblem,
    check_mapping,
    detect_format,
    fast_json_loads,
    is_unpaired,
    rated_answer,
)
from ctllm.pairs.schema import MAX_FIELD_CHARS, Pair, RatedAnswer

ON_ERROR = ("skip", "abort")
PROGRESS_EVERY = 5000
_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")
_SURROGATE = re.compile("[\ud800-\udfff]")
DECODED_RATIO = 10  # decoded data may be this many times the upload limit (text compresses 3-5x)
_ROW_OVERHEAD = 64  # bytes a decoded Parquet row counts for beyond its data: a row bomb is mostly rows
_TOO_DEEP = "nested too deeply"


@dataclass(frozen=True)
class RowError:
    """One bad row. ``line`` is the 1-based file line (None where a file has no lines, as Parquet);
    ``row`` the 1-based record number; ``field`` the source column at fault (None: the row as a whole)."""

    file: str
    line: int | None
    row: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        if self.line is not None:
            where = f"{self.file}:{self.line}"
        elif self.row is not None:
            where = f"{self.file}: row {self.row}"
        else:
            where = self.file
        what = f" field '{self.field}':" if self.field else ""
        return f"{where}:{what} {self.reason}"


@dataclass
class ReadResult:
    pairs: list[Pair]
    errors: list[RowError]
    format: str
    rows: int  # source rows seen, good and bad


@dataclass
class RatedReadResult:
    answers: list[RatedAnswer]
    errors: list[RowError]
    rows: int


UNPAIRED_FORMAT = "trl-unpaired"


class UnpairedFile(UserError):
    """A file in TRL's unpaired format (prompt / completion / label) handed to ``read_pairs``: it holds rated
    answers, not pairs; ``read_rated`` reads it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: rows of prompt / completion / label are unpaired rated answers, not pairs "
                         f"(format {UNPAIRED_FORMAT})")


class ImportAborted(UserError):
    """Raised in abort mode when any row is bad; ``errors`` holds every problem found."""

    def __init__(self, name: str, errors: list[RowError]) -> None:
        self.errors = errors
        shown = "\n  ".join(str(e) for e in errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        super().__init__(f"{name}: import aborted, nothing imported: {len(errors)} bad row(s):\n  {shown}{more}")


@dataclass
class _Record:
    line: int | None
    row: int | None
    data: dict[str, Any] | None = None
    error: RowError | None = None


@dataclass
class _Source:
    name: str  # shown in messages
    stem: str  # default Pair.source
    records: list[_Record] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Files → records


def _object_error(name: str, line: int | None, row: int, value: Any) -> _Record:
    kind = type(value).__name__
    return _Record(line, row, error=RowError(name, line, row, None, f"wrong type: expected a JSON object, got {kind}"))


def _surrogate_field(value: dict[str, Any]) -> str | None:
    """The first column whose text holds undecodable bytes (decoded with surrogateescape)."""
    for key, item in value.items():
        if _has_surrogate(key) or _has_surrogate(item):
            return key
    return None


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _bad_bytes_record(name: str, line: int | None, row: int, column: str | None) -> _Record:
    return _Record(line, row, error=RowError(name, line, row, column, "non-UTF-8 bytes"))


def _jsonl_records(raw: bytes, name: str, first_line: int = 1) -> Iterator[_Record]:
    row = 0
    for line, chunk in enumerate(raw.split(b"\n"), first_line):
        if not chunk.strip():
            continue
        row += 1
        try:
            value = fast_json_loads(chunk)
        except ValueError:
            value = None
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as error:
                reason = f"non-UTF-8 bytes (at byte {error.start + 1} of the line)"
                yield _Record(line, row, error=RowError(name, line, row, None, reason))
                continue
            try:
                value = json.loads(text)  # also gives the readable message when both parsers refuse
                column = _surrogate_field(value) if isinstance(value, dict) else None
            except ValueError as error:
                reason = f"invalid JSON: {getattr(error, 'msg', error)} (column {getattr(error, 'colno', '?')})"
                yield _Record(line, row, error=RowError(name, line, row, None, reason))
                continue
            except RecursionError:  # orjson stops at 1024 levels; the standard parser recurses until it fails
                yield _Record(line, row, error=RowError(name, line, row, None, f"invalid JSON: {_TOO_DEEP}"))
                continue
            if column is not None:
                yield _Record(line, row, error=RowError(name, line, row, column, "invalid text: lone surrogate"))
                continue
        if isinstance(value, dict):
            yield _Record(line, row, value)
        else:
            yield _object_error(name, line, row, value)


def _decode(raw: bytes) -> tuple[str, bool]:
    """Text, and whether undecodable bytes were kept as surrogates (rows holding them are reported)."""
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8-sig", "surrogateescape"), True


def _list_in_object(data: dict[str, Any]) -> list[Any] | None:
    """{"data": [...]} or {"train": [...]}: the one list of rows in an object (None: the object is a row)."""
    lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    return lists[0] if len(lists) == 1 else None


def _json_records(raw: bytes, name: str) -> Iterator[_Record]:
    body = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    try:
        data = fast_json_loads(body)
    except ValueError:
        first_line = body.split(b"\n", 1)[0]
        if body.startswith(b"{") and _parses(first_line):  # JSON Lines saved under a .json name
            yield from _jsonl_records(body, name, raw.count(b"\n", 0, len(raw) - len(body)) + 1)
        else:
            yield from _slow_json_records(raw, name)
        return
    if isinstance(data, dict):
        data = _list_in_object(data) or [data]
    if not isinstance(data, list):
        raise UserError(f"{name}: expected a JSON array of rows, or an object holding one")
    yield from _array_records(data, name)


def _parses(chunk: bytes) -> bool:
    try:
        fast_json_loads(chunk)
    except ValueError:
        return False
    return True


def _array_records(rows: list[Any], name: str) -> Iterator[_Record]:
    for row, value in enumerate(rows, 1):
        yield _Record(None, row, value) if isinstance(value, dict) else _object_error(name, None, row, value)


def _slow_json_records(raw: bytes, name: str) -> Iterator[_Record]:
    """JSON the fast parser refused: non-UTF-8 bytes (rows holding them are reported, with the line of their first
    bad byte), values only the standard parser takes (NaN), or a broken file (UserError with line and column).

    Undecodable bytes became surrogates in order, so the k-th surrogate-holding row owns the next surrogates."""
    text, _ = _decode(raw)
    try:
        rows = json.loads(text)
    except ValueError as error:
        where = f"line {getattr(error, 'lineno', '?')}, column {getattr(error, 'colno', '?')}"
        raise UserError(f"{name}: not valid JSON ({where}: {getattr(error, 'msg', error)})") from None
    if isinstance(rows, dict):
        rows = _list_in_object(rows) or [rows]
    if not isinstance(rows, list):
        raise UserError(f"{name}: expected a JSON array of rows, or an object holding one")
    positions = [m.start() for m in _SURROGATE.finditer(text)]
    used = 0
    for row, value in enumerate(rows, 1):
        if not isinstance(value, dict):
            yield _object_error(name, None, row, value)
            continue
        column = _surrogate_field(value)
        if column is None:
            yield _Record(None, row, value)
            continue
        count = len(_SURROGATE.findall(json.dumps(value, ensure_ascii=False)))
        line = text.count("\n", 0, positions[used]) + 1 if used < len(positions) else None
        used += count
        yield _bad_bytes_record(name, line, row, column)


def _csv_records(raw: bytes, name: str, delimiter: str) -> Iterator[_Record]:
    text, escaped = _decode(raw)
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # our own limit is checked per field
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise UserError(f"{name}: cannot read the CSV header: {error}") from None
    if escaped and any(_has_surrogate(h) for h in header):
        raise UserError(f"{name}:1: the header holds non-UTF-8 bytes")
    previous, row = reader.line_num, 0
    while True:
        start = previous + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            row += 1
            previous = reader.line_num
            yield _Record(start, row, error=RowError(name, start, row, None, f"unreadable CSV row: {error}"))
            continue
        previous = reader.line_num
        if not any(v.strip() for v in values):
            continue
        row += 1
        if len(values) != len(header):
            kind = "missing field" if len(values) < len(header) else "extra fields"
            reason = f"{kind}: {len(values)} values for {len(header)} columns"
            yield _Record(start, row, error=RowError(name, start, row, None, reason))
            continue
        record = dict(zip(header, values, strict=True))
        if escaped and (column := _surrogate_field(record)) is not None:
            yield _bad_bytes_record(name, start, row, column)
            continue
        yield _Record(start, row, record)


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):g} MB"


def _bomb(name: str, verb: str, cap: int) -> UserError:
    return UserError(
        f"{name}: {verb} to more than {_megabytes(cap)} ({DECODED_RATIO} times the upload size limit); "
        "refused as a likely decompression bomb"
    )


def _gunzip(raw: bytes, name: str, cap: int | None) -> bytes:
    if cap is None:
        return gzip.decompress(raw)
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise _bomb(name, "decompresses", cap)
    return data


def _parquet_records(path: Path, name: str, cap: int | None) -> Iterator[_Record]:
    # Lazy: importing pyarrow takes seconds; start-up (the app, the CLI) does not need it.
    import pyarrow.parquet as pq

    batches, decoded = [], 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=16_384):
            decoded += batch.nbytes + _ROW_OVERHEAD * batch.num_rows
            if cap is not None and decoded > cap:
                raise _bomb(name, "decodes", cap)
            batches.append(batch)
    except UserError:
        raise
    except Exception as error:  # pyarrow raises several kinds for a damaged file
        raise UserError(f"{name}: cannot read Parquet: {error}") from None
    row = 0
    for batch in batches:
        try:
            values: list[dict[str, Any] | None] = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holding bytes that are not UTF-8
            values = [_parquet_row(batch, i) for i in range(batch.num_rows)]
        for i, value in enumerate(values):
            row += 1
            if value is None:
                column = next(c for c in batch.column_names if _not_utf8(batch.column(c).slice(i, 1)))
                yield _bad_bytes_record(name, None, row, column)
            else:
                yield _Record(None, row, value)


def _parquet_row(batch: Any, i: int) -> dict[str, Any] | None:
    try:
        return batch.slice(i, 1).to_pylist()[0]
    except UnicodeDecodeError:
        return None


def _not_utf8(cell: Any) -> bool:
    try:
        cell.to_pylist()
    except UnicodeDecodeError:
        return True
    return False


def _dataset_records(dataset: Any, name: str) -> Iterator[_Record]:
    """A ``datasets`` Dataset or DatasetDict; a DatasetDict's split name goes into each row as "split"."""
    splits = dataset.items() if hasattr(dataset, "keys") else [(None, dataset)]
    row = 0
    for split, table in splits:
        for value in table.to_list():
            row += 1
            if split is not None and "split" not in value:
                value["split"] = split
            yield _Record(None, row, value)


def _strip_suffixes(name: str) -> str:
    stem = name.removesuffix(".gz")
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem or name


def _file_records(path: Path, name: str, cap: int | None) -> Iterator[_Record]:
    """Records of one file; ``cap`` bounds the decoded size of compressed data (None: no bound)."""
    lower = path.name.lower()
    kind = lower.removesuffix(".gz")
    if kind.endswith(".parquet"):
        yield from _parquet_records(path, name, cap)
        return
    if not any(kind.endswith(s) for s in _SUFFIXES):
        raise UserError(f"{name}: unknown file type (expected one of {', '.join(_SUFFIXES)}, optionally .gz)")
    try:
        raw = path.read_bytes()
        if lower.endswith(".gz"):
            raw = _gunzip(raw, name, cap)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{name}: cannot read the file: {error}") from None
    if kind.endswith(".jsonl"):
        yield from _jsonl_records(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw, name)
    elif kind.endswith(".json"):
        yield from _json_records(raw, name)
    else:
        yield from _csv_records(raw, name, "\t" if kind.endswith(".tsv") else ",")


def _check_size(path: Path, max_bytes: int | None) -> None:
    """Refuse a file (or a ``datasets`` folder, all its files) over the upload limit before reading any of it."""
    if max_bytes is None:
        return
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    if size > max_bytes:
        raise UserError(f"{path.name}: {size:,} bytes is over the upload size limit of {_megabytes(max_bytes)}")


def _load(source: str | Path, allow_hub: bool, max_bytes: int | None = None) -> _Source:
    path = Path(source)
    if path.is_dir() or path.is_file():
        _check_size(path, max_bytes)
    if path.is_dir():
        # Lazy: importing datasets takes seconds; start-up (the app, the CLI) does not need it.
        from datasets import load_from_disk

        try:
            dataset = load_from_disk(str(path))
        except Exception as error:  # datasets raises FileNotFoundError or its own errors
            raise UserError(f"{path.name}: not a saved `datasets` folder: {error}") from None
        return _Source(path.name, path.name, list(_dataset_records(dataset, path.name)))
    if path.is_file():
        cap = None if max_bytes is None else max_bytes * DECODED_RATIO
        try:
            records = list(_file_records(path, path.name, cap))
        except RecursionError:  # the standard JSON parser (or a check after it) on data nested thousands deep
            raise UserError(f"{path.name}: not valid JSON: {_TOO_DEEP} to read") from None
        return _Source(path.name, _strip_suffixes(path.name), records)
    text = str(source)
    looks_like_file = path.suffix.lower() in (*_SUFFIXES, ".gz") or text.startswith(("/", ".", "~"))
    if looks_like_file:
        raise UserError(f"{text}: no such file or folder")
    if not allow_hub:
        raise UserError(f"{text}: no such file or folder (a hub dataset id is read only when the hub is allowed)")
    # Lazy: importing datasets takes seconds; start-up (the app, the CLI) does not need it.
    from datasets import load_dataset

    try:
        dataset = load_dataset(text)
    except Exception as error:  # network, auth and not-found errors all land here
        raise UserError(f"{text}: cannot load the hub dataset: {error}") from None
    return _Source(text, text, list(_dataset_records(dataset, text)))


# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects: it would rescan them all repeatedly
    (measured: a third of the time of reading 229k rows). Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_pairs(
    source: str | Path,
    *,
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    on_error: str = "skip",
    max_field_chars: int = MAX_FIELD_CHARS,
    pku_choice: str = "safer",
    all_ranked_pairs: bool = False,
    allow_hub: bool = False,
    progress: Callable[[int], None] | None = None,
    max_bytes: int | None = None,
) -> ReadResult:
    """Read every pair in ``source``; the format is detected unless ``fmt`` or ``mapping`` is given.

    ``on_error``: "skip" reports bad rows in ``errors`` and keeps the good ones; "abort" raises ImportAborted
    when any row is bad. ``progress`` is called with the number of rows handled so far. ``max_bytes``: the upload
    size limit in bytes (``Settings.max_upload_mb << 20``), None for none.
    """
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if mapping and fmt not in (None, "mapping"):
        raise UserError(f"a column mapping replaces the format; got both format {fmt!r} and a mapping")
    if fmt == "mapping" and not mapping:
        raise UserError("format 'mapping' needs a column mapping (prompt=..., chosen=..., rejected=...)")
    if on_error not in ON_ERROR:
        raise UserError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    if pku_choice not in PKU_CHOICES:
        raise UserError(f"pku_choice must be one of {', '.join(PKU_CHOICES)}, not {pku_choice!r}")

    with _bulk_allocation():
        return _read(
            source, fmt, mapping, on_error, max_field_chars, pku_choice, all_ranked_pairs, allow_hub, progress,
            max_bytes,
        )


def _read(
    source: str | Path,
    fmt: str | None,
    mapping: dict[str, str] | None,
    on_error: str,
    max_field_chars: int,
    pku_choice: str,
    all_ranked_pairs: bool,
    allow_hub: bool,
    progress: Callable[[int], None] | None,
    max_bytes: int | None,
) -> ReadResult:
    loaded = _load(source, allow_hub, max_bytes)
    if not loaded.records:
        raise UserError(f"{loaded.name}: no rows found")
    sample = [r.data for r in loaded.records[:1000] if r.data is not None][:200]
    if mapping:
        try:
            fmt, mapping = "mapping", check_mapping(mapping, sample)
        except UserError as error:
            raise UserError(f"{loaded.name}: {error}") from None
    elif fmt is None:
        if not sample:
            raise UserError(
                f"{loaded.name}: no readable rows to recognise the format from (first: {loaded.records[0].error})"
            )
        if is_unpaired(sample):
            raise UnpairedFile(loaded.name)
        try:
            fmt = detect_format(sample)
        except UserError as error:
            raise UserError(f"{loaded.name}: {error}") from None
    options = ConvertOptions(loaded.stem, pku_choice, all_ranked_pairs, max_field_chars, mapping)
    convert = FORMATS[fmt].convert

    pairs: list[Pair] = []
    errors: list[RowError] = []
    for done, record in enumerate(loaded.records, 1):
        if record.error is not None:
            errors.append(record.error)
        else:
            try:
                results = convert(record.data, options)  # type: ignore[arg-type]
            except RowProblem as problem:
                results = [problem]
            for item in results:
                if isinstance(item, RowProblem):
                    errors.append(RowError(loaded.name, record.line, record.row, item.field, item.reason))
                else:
                    pairs.append(item)
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done)
    if progress is not None:
        progress(len(loaded.records))
    if errors and on_error == "abort":
        raise ImportAborted(loaded.name, errors)
    return ReadResult(pairs=pairs, errors=errors, format=fmt, rows=len(loaded.records))


def read_rated(
    source: str | Path,
    *,
    on_error: str = "skip",
    max_field_chars: int = MAX_FIELD_CHARS,
    allow_hub: bool = False,
    max_bytes: int | None = None,
) -> RatedReadResult:
    """Every rated answer of a file in TRL's unpaired format (``prompt`` / ``completion`` / ``label``); bad rows as
    in ``read_pairs`` (file, line or row, field)."""
    if on_error not in ON_ERROR:
        raise UserError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    loaded = _load(source, allow_hub, max_bytes)
    if not loaded.records:
        raise UserError(f"{loaded.name}: no rows found")
    options = ConvertOptions(loaded.stem, max_field_chars=max_field_chars)
    answers: list[RatedAnswer] = []
    errors: list[RowError] = []
    for record in loaded.records:
        if record.error is not None:
            errors.append(record.error)
            continue
        try:
            answers.append(rated_answer(record.data, options))  # type: ignore[arg-type]
        except RowProblem as problem:
            errors.append(RowError(loaded.name, record.line, record.row, problem.field, problem.reason))
    if errors and on_error == "abort":
        raise ImportAborted(loaded.name, errors)
    return RatedReadResult(answers, errors, len(loaded.records))
