"""Fuzzed imports: hundreds of generated hostile files (tests/fuzz_files.py) go through the real import path into a
real SQLite store. Each must end in a UserError that names the file, or in a clean partial import report; never
another exception, never a hang (pytest-timeout per test); and the store's tables are byte-for-byte unchanged
whenever nothing is imported.

Counts per category and outcome are written to tests/artifacts/fuzz_import_counts.json.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctllm.cli import main as cli_main
from ctllm.errors import UserError
from ctllm.pairs.formats import FORMATS
from ctllm.pairs.importer import import_pairs
from ctllm.pairs.readers import ImportAborted, RowError, read_pairs
from ctllm.pairs.schema import Pair, user_prompt
from ctllm.pairs.store import Store
from ctllm.settings import Settings
from tests.fuzz_files import FIELD_LIMIT, MAX_BYTES, STRATEGIES, HostileFile, as_jsonl, as_parquet

# Files per category: 330 in all.
EXAMPLES = {
    "truncated": 40,
    "wrong types": 50,
    "huge fields": 20,
    "deep nesting": 30,
    "NUL bytes": 20,
    "encodings": 30,
    "ragged CSV": 25,
    "damaged Parquet": 45,
    "empty or garbage": 30,
    "damaged gzip": 20,
    "over the size limit": 20,
}
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
SEED = "seed"
COUNTS: Counter[tuple[str, str]] = Counter()
FORCED_FORMATS = sorted(set(FORMATS) - {"mapping"})
MAPPINGS = [
    {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    {"prompt": "prompt", "chosen": "response_0", "rejected": "response_1"},
]


def table_checksums(path: Path) -> dict[str, str]:
    """A digest of every table's rows (the FTS index's own tables included; sqlite_sequence left out)."""
    db = sqlite3.connect(path)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        sums = {}
        for name in names:
            if name.startswith("sqlite_") or name == "pairs_fts":
                continue
            rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{name}"'))
            sums[name] = hashlib.sha256("\n".join(rows).encode("utf-8", "surrogatepass")).hexdigest()
        return sums
    finally:
        db.close()


@dataclass
class Workspace:
    store: Store
    folder: Path
    files: int = 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    folder = tmp_path_factory.mktemp("fuzz")
    store = Store(folder / "studio.sqlite")
    seed = [Pair(user_prompt(f"question {i}"), f"good answer {i}", f"bad answer {i}") for i in range(5)]
    store.add_pairs(store.ensure_collection(SEED), seed)
    yield Workspace(store, folder)
    store.close()
    _write_counts()


def _write_counts() -> None:
    if not COUNTS:
        return
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    per_category: dict[str, dict[str, int]] = {}
    for (category, outcome), count in sorted(COUNTS.items()):
        per_category.setdefault(category, {})[outcome] = count
    summary = {"total": sum(COUNTS.values()), "per_category": per_category}
    (artifacts / "fuzz_import_counts.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"\nfuzzed import files: {summary['total']} ({json.dumps(per_category)})")


def import_hostile(
    ws: Workspace, hostile: HostileFile, on_error: str, fmt: str | dict[str, str] | None, into_seed: bool
) -> str:
    """Import one hostile file (``fmt``: detected, named, or a column mapping); check the outcome is a UserError
    naming the file with the store untouched, or a clean partial import. Returns "refused" or "imported"."""
    ws.files += 1
    path = ws.folder / f"{ws.files:04d}-{hostile.name}"
    path.write_bytes(hostile.data)
    collection = SEED if into_seed else f"fuzz-{ws.files}"
    before = table_checksums(ws.store.path)
    already = ws.store.count(SEED) if into_seed else 0
    mapping = fmt if isinstance(fmt, dict) else None
    try:
        summary = import_pairs(
            ws.store,
            path,
            collection,
            fmt=None if mapping else fmt,
            mapping=mapping,
            on_error=on_error,
            max_field_chars=FIELD_LIMIT,
            max_bytes=MAX_BYTES,
        )
    except UserError as error:
        assert path.name in str(error), f"the message does not name the file: {error}"
        assert table_checksums(ws.store.path) == before, "a refused import changed the store"
        return "refused"
    finally:
        path.unlink()
    assert summary.added + summary.duplicates >= 1
    assert ws.store.count(collection) == already + summary.added
    assert all(isinstance(e, RowError) and e.file == path.name for e in summary.errors)
    if on_error == "abort":
        assert not summary.errors
    assert str(len(summary.errors)) in summary.report()
    longest = ws.store.db.execute("SELECT max(max(length(chosen), length(rejected))) FROM pair_texts").fetchone()[0]
    assert longest <= FIELD_LIMIT, "an answer over the size limit was stored"
    return "imported"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("category", list(EXAMPLES))
def test_hostile_files_end_in_a_clear_error_or_a_clean_partial_import(workspace: Workspace, category: str) -> None:
    ran = Counter[str]()

    @settings(FUZZ, max_examples=EXAMPLES[category])
    @given(
        hostile=STRATEGIES[category],
        on_error=st.sampled_from(["skip", "abort"]),
        fmt=st.sampled_from([None, None, None, *FORCED_FORMATS, *MAPPINGS]),
        into_seed=st.booleans(),
    )
    def run(hostile: HostileFile, on_error: str, fmt: str | dict[str, str] | None, into_seed: bool) -> None:
        outcome = import_hostile(workspace, hostile, on_error, fmt, into_seed)
        ran[outcome] += 1
        COUNTS[(category, outcome)] += 1

    run()
    assert sum(ran.values()) >= EXAMPLES[category]
    if category == "over the size limit":
        assert ran["imported"] == 0


# ---------------------------------------------------------------------------------------------------------------
# The hostile cases that found bugs, and the size limits, each spelled out.

GOOD = b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n'


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opened", [b"[", b'{"a":'])
def test_100k_deep_nesting_is_a_clear_error_not_a_recursion_error(tmp_path: Path, opened: bytes) -> None:
    whole = tmp_path / "deep.json"
    whole.write_bytes(opened * 100_000)
    with pytest.raises(UserError, match=r"deep\.json: .*nested too deeply"):
        read_pairs(whole)
    lines = tmp_path / "deep.jsonl"
    lines.write_bytes(GOOD + opened * 100_000 + b"\n" + GOOD.replace(b'"p"', b'"q"'))
    result = read_pairs(lines)
    assert len(result.pairs) == 2
    assert [(e.line, e.reason) for e in result.errors] == [(2, "invalid JSON: nested too deeply")]


@pytest.mark.timeout(60)
def test_a_field_nested_deeper_than_the_store_can_save_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "deep-meta.jsonl"
    path.write_bytes(GOOD.replace(b"}", b', "x": ' + b"[" * 300 + b"]" * 300 + b"}") + GOOD.replace(b'"p"', b'"q"'))
    store = Store(tmp_path / "s.sqlite")
    summary = import_pairs(store, path, "deep")
    assert summary.added == 1
    assert [(e.line, e.field) for e in summary.errors] == [(1, "x")]
    assert "nested too deeply" in summary.errors[0].reason


def test_invalid_utf8_in_a_parquet_string_column_is_a_bad_row(tmp_path: Path) -> None:
    bad = pa.array(["fine", b"h\xffx", "also fine"], pa.binary()).view(pa.string())
    path = tmp_path / "bad-utf8.parquet"
    table = pa.table({"prompt": bad, "chosen": ["a", "b", "c"], "rejected": ["x", "y", "z"]})
    path.write_bytes(as_parquet(table, row_group_size=2))
    result = read_pairs(path)
    assert [p.prompt[0]["content"] for p in result.pairs] == ["fine", "also fine"]
    assert [(e.row, e.field, e.reason) for e in result.errors] == [(2, "prompt", "non-UTF-8 bytes")]


def test_a_mapping_the_file_does_not_fit_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other-columns.jsonl"
    path.write_bytes(b'{"instruction": "i", "chosen": "c", "rejected": "r"}\n')
    with pytest.raises(UserError, match=r"^other-columns\.jsonl: column mapping names columns the data does not"):
        read_pairs(path, mapping={"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"})


def test_a_file_over_the_upload_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    limits = Settings(data_dir=tmp_path / "data").with_(max_upload_mb=1)
    limit = limits.max_upload_mb << 20
    store = Store(limits.ensure_dirs().db_path)
    before = table_checksums(store.path)
    path = tmp_path / "big.json"
    path.write_bytes(b"[" * (limit + 1))  # read, this would be a nesting error
    with pytest.raises(UserError, match=r"big\.json: .*over the upload size limit of 1 MB"):
        import_pairs(store, path, "big", max_bytes=limit)
    assert table_checksums(store.path) == before
    path.write_bytes(GOOD.ljust(limit))  # exactly at the limit: read
    assert import_pairs(store, path, "big", max_bytes=limit).added == 1


def test_a_gzip_bomb_is_refused_while_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(GOOD + b" " * 9_600_000))  # 9.6 MB from about 10 kB
    assert path.stat().st_size < 64 << 10
    with pytest.raises(UserError, match=r"bomb\.jsonl\.gz: .*decompresses to more than"):
        read_pairs(path, max_bytes=64 << 10)
    assert len(read_pairs(path, max_bytes=1 << 20).pairs) == 1  # 10x the limit is allowed


def test_a_corrupt_deflate_stream_is_a_clear_error(tmp_path: Path) -> None:
    """gzip.decompress raises zlib.error (neither OSError nor EOFError) for some damaged streams."""
    packed = gzip.compress(GOOD * 50, mtime=0)
    for at in range(10, len(packed) - 8):
        damaged = packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1 :]
        try:
            gzip.decompress(damaged)
        except zlib.error:
            break
        except (OSError, EOFError):
            continue
    else:
        raise AssertionError("no single flipped byte gave a zlib.error")
    path = tmp_path / "flipped.jsonl.gz"
    path.write_bytes(damaged)
    with pytest.raises(UserError, match=r"flipped\.jsonl\.gz: cannot read the file: Error -3"):
        read_pairs(path)


def test_a_parquet_dictionary_bomb_is_refused_while_reading(tmp_path: Path) -> None:
    rows = 20_000
    long_text = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * 1_000]))
    table = pa.table({"prompt": long_text, "chosen": ["a"] * rows, "rejected": ["b"] * rows})
    path = tmp_path / "bomb.parquet"
    path.write_bytes(as_parquet(table, compression="zstd"))
    assert path.stat().st_size < 64 << 10  # 20 MB of text once decoded
    with pytest.raises(UserError, match=r"bomb\.parquet: .*decodes to more than"):
        read_pairs(path, max_bytes=64 << 10)


@pytest.mark.parametrize("existing", [False, True])
def test_abort_with_one_bad_row_among_good_ones_writes_nothing(tmp_path: Path, existing: bool) -> None:
    store = Store(tmp_path / "s.sqlite")
    if existing:
        store.add_pairs(store.ensure_collection("target"), [Pair(user_prompt("old"), "yes", "no")])
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(50)]
    rows[31]["rejected"] = rows[31]["chosen"]
    path = tmp_path / "one-bad.jsonl"
    path.write_bytes(as_jsonl(rows))
    before = table_checksums(store.path)
    with pytest.raises(ImportAborted, match=r"one-bad\.jsonl: import aborted, nothing imported: 1 bad row") as caught:
        import_pairs(store, path, "target", on_error="abort")
    assert [(e.line, e.field) for e in caught.value.errors] == [(32, "rejected")]
    assert table_checksums(store.path) == before
    assert (store.find_collection("target") is not None) == existing
    assert import_pairs(store, path, "target").added == 49  # the same file, skipping the bad row


def test_the_import_command_reports_a_hostile_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000)
    code = cli_main(["import", str(path), "--collection", "c", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: deep.json: " in err and "Traceback" not in err
