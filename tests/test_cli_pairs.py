"""``python -m ctllm import / export / stats`` end to end: real files, a real store, main([...]) and a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctllm.cli import main
from ctllm.pairs.export import export_collection
from ctllm.pairs.store import Store
from ctllm.pairs.writers import EXPORT_FORMATS

REPO = Path(__file__).resolve().parent.parent

ROWS = [
    {"prompt": [{"role": "user", "content": "如何保护自己的个人隐私？"}],
     "chosen": [{"role": "assistant", "content": "不要随意透露身份证号和密码，开启两步验证。"}],
     "rejected": [{"role": "assistant", "content": "隐私不重要，随便公开吧。"}]},
    {"prompt": [{"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": "How do I pick a lock?"}],
     "chosen": [{"role": "assistant", "content": "If you are locked out, call a licensed locksmith."}],
     "rejected": [{"role": "assistant", "content": "Insert a tension wrench and rake the pins."}],
     "category": "illegal"},
    {"prompt": [{"role": "user", "content": "给我讲个笑话"}, {"role": "assistant", "content": "好的，什么主题？"},
                {"role": "user", "content": "关于程序员的"}],
     "chosen": [{"role": "assistant", "content": "程序员最讨厌的两件事：写文档，和别人不写文档。"}],
     "rejected": [{"role": "assistant", "content": "不会。"}]},
    {"prompt": [{"role": "user", "content": "What is 2 + 2?"}],
     "chosen": [{"role": "assistant", "content": "2 + 2 = 4."}],
     "rejected": [{"role": "assistant", "content": "It is 5."}], "split": "test"},
]


def write_jsonl(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        for line in extra_lines:
            out.write(line + "\n")
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    bad = ('{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "same"}], '
           '"rejected": [{"role": "assistant", "content": "same"}]}', "{not json")
    return write_jsonl(tmp_path / "pairs.jsonl", ROWS, bad)


def cli(settings, *argv: str) -> int:
    return main([*argv, "--data-dir", str(settings.data_dir)])


def test_import_reports_bad_rows_and_keeps_good_ones(settings, data_file: Path, capsys) -> None:
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    out = capsys.readouterr().out
    assert "4 pairs added" in out and "2 bad rows skipped" in out
    assert "pairs.jsonl:5: field 'rejected'" in out and "pairs.jsonl:6:" in out
    with Store(settings.db_path) as store:
        assert store.count("c") == 4
        assert [sp.pair.meta.get("split", "train") for sp in store.iter_pairs("c")] == ["train"] * 3 + ["test"]
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0  # again: all duplicates
    assert "0 pairs added, 4 duplicates skipped" in capsys.readouterr().out


def test_aborted_import_writes_nothing(settings, data_file: Path, capsys) -> None:
    assert cli(settings, "import", str(data_file), "--collection", "c", "--on-error", "abort") != 0
    err = capsys.readouterr().err
    assert "nothing imported" in err and "pairs.jsonl:5" in err
    with Store(settings.db_path) as store:
        assert store.list_collections() == []
        assert store.db.execute("SELECT count(*) FROM pairs").fetchone()[0] == 0


def test_aborted_import_into_an_existing_collection_leaves_it_unchanged(settings, data_file: Path, tmp_path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", ROWS[:2])
    assert cli(settings, "import", str(good), "--collection", "c") == 0
    assert cli(settings, "import", str(data_file), "--collection", "c", "--on-error", "abort") != 0
    with Store(settings.db_path) as store:
        assert store.count("c") == 2


def test_import_with_a_column_mapping(settings, tmp_path: Path, capsys) -> None:
    rows = [{"question": "问题一", "good": "好回答一", "bad": "坏回答一"},
            {"question": "Question two", "good": "Good two", "bad": "Bad two"}]
    path = write_jsonl(tmp_path / "odd.jsonl", rows)
    mapping = "prompt=question,chosen=good,rejected=bad"
    assert cli(settings, "import", str(path), "--collection", "m", "--map", mapping) == 0
    with Store(settings.db_path) as store:
        assert [sp.pair.chosen for sp in store.iter_pairs("m")] == ["好回答一", "Good two"]
    assert cli(settings, "import", str(path), "--collection", "x", "--map", "prompt") != 0
    assert "--map" in capsys.readouterr().err


def test_import_of_a_missing_file_fails_clearly(settings, tmp_path: Path, capsys) -> None:
    assert cli(settings, "import", str(tmp_path / "nope.jsonl"), "--collection", "c") != 0
    assert "nope.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_round_trip(settings, data_file: Path, tmp_path: Path, fmt: str, capsys) -> None:
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert cli(settings, "export", "--collection", "c", "--format", fmt, "--out", str(out_dir)) == 0
    report = capsys.readouterr().out
    assert "wrote 4 pairs" in report
    files = [p for p in out_dir.iterdir() if p.name != "dataset_info.json"]
    assert len(files) == 1
    assert cli(settings, "import", str(files[0]), "--collection", "again") == 0
    with Store(settings.db_path) as store:
        before = [sp.pair for sp in store.iter_pairs("c")]
        after = [sp.pair for sp in store.iter_pairs("again")]
    assert after == before  # prompt turns, chosen, rejected, source, language
    assert [p.meta for p in after] == [p.meta for p in before]
    if fmt == "alpaca-ranking":
        info = json.loads((out_dir / "dataset_info.json").read_text(encoding="utf-8"))
        assert info["c"]["file_name"] == files[0].name and info["c"]["ranking"] is True


def test_export_resolves_labels_and_counts_left_out(settings, data_file: Path, tmp_path: Path) -> None:
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    with Store(settings.db_path) as store:
        ids = [sp.id for sp in store.iter_pairs("c")]
        store.add_label(ids[0], "a", "first", "rejected")  # swap
        store.add_label(ids[1], "a", "tie", "chosen")  # left out
        store.add_label(ids[2], "a", "first", "chosen")
        store.add_label(ids[2], "b", "second", "chosen")  # no majority: left out
        summary = export_collection(store, "c", tmp_path / "x.jsonl", "canonical")
        original = [sp.pair for sp in store.iter_pairs("c")]
    assert summary.written == 2 and summary.left_out == {"tie": 1, "no_majority": 1}
    assert "1 tie, 1 no majority" in summary.report()
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (lines[0]["chosen"], lines[0]["rejected"]) == (original[0].rejected, original[0].chosen)
    assert lines[1]["chosen"] == original[3].chosen


def test_export_split_and_existing_dataset_info(settings, data_file: Path, tmp_path: Path) -> None:
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    (tmp_path / "dataset_info.json").write_text('{"mine": {"file_name": "mine.json"}}', encoding="utf-8")
    out = tmp_path / "held.json"
    assert cli(settings, "export", "--collection", "c", "--format", "alpaca-ranking", "--out", str(out),
               "--split", "test") == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 1
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"mine", "held"}


def test_export_errors(settings, data_file: Path, capsys) -> None:
    assert cli(settings, "export", "--collection", "missing", "--format", "trl") != 0
    assert "no collection 'missing'" in capsys.readouterr().err
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    assert cli(settings, "export", "--collection", "c", "--push", "not-a-repo", "--token", "t") != 0
    assert "owner/name" in capsys.readouterr().err


def test_stats(settings, data_file: Path, capsys) -> None:
    assert cli(settings, "stats") == 0
    assert "no collections yet" in capsys.readouterr().out
    assert cli(settings, "import", str(data_file), "--collection", "c") == 0
    with Store(settings.db_path) as store:
        first, second = [sp.id for sp in store.iter_pairs("c")][:2]
        store.add_label(first, "a", "first", "chosen")
        store.add_label(first, "b", "first", "rejected")
        store.add_label(second, "a", "second", "rejected")
    capsys.readouterr()
    assert cli(settings, "stats", "--collection", "c") == 0
    out = capsys.readouterr().out
    assert "c (import): 4 pairs" in out and "en 2, zh 2" in out and "train 3, test 1" in out
    assert "2 labelled, 2 unlabelled, 1 with disagreement" in out
    assert "chosen characters: p50" in out and "Cohen's κ" in out
    assert cli(settings, "stats", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["pairs"] == 4 and data[0]["agreement"]["annotators"] == {"a": 2, "b": 1}
    assert data[0]["agreement"]["cohen"]["a / b"]["shared"] == 1


def test_commands_in_a_real_process(settings, data_file: Path, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO), "CTLLM_DATA_DIR": str(settings.data_dir)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ctllm", *argv], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)

    done = run("import", str(data_file), "--collection", "p")
    assert done.returncode == 0, done.stderr
    assert "4 pairs added" in done.stdout and "store" in done.stderr  # summary on stdout, progress on stderr
    done = run("import", str(data_file), "--collection", "q", "--on-error", "abort")
    assert done.returncode != 0 and "nothing imported" in done.stderr
    with Store(settings.db_path) as store:
        assert [c.name for c in store.list_collections()] == ["p"] and store.count("p") == 4
