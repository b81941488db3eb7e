"""ops/maint (service.maintenance): verify, backup and export; clear one-line errors, exports
in the API's terms and the asked format."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import stat
from pathlib import Path

import polars as pl
import pytest

from service.export import escape_formulas
from service.maintenance import backup, main, verify
from service.schema import Rows
from service.storage.compaction import compact
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.wal import SegmentWriter, encode_frame, segment_path
from tests.unit.test_compaction import BASE, answers, chunk, filled


def data_dir(root: Path) -> Path:
    store = Store(root, "w1", 5)
    store.ensure_layout()
    store.publish({"heart_rate": chunk(random.Random(13), 0)})
    wal = SegmentWriter(segment_path(store.wal_dir, "w2", 1))  # an unflushed reading
    wal.append(encode_frame("heart_rate", 10**9, Rows(["u1"], ["=cmd"], [BASE + 1], [61.0])))
    wal.close()
    return root


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "command", [["verify"], ["recover"], ["compact"], ["export", "u1", "x.csv"]]
)
def test_a_missing_data_dir_is_an_error_not_a_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    typo = tmp_path / "typo"
    assert main(["--data-dir", str(typo), *command]) != 0
    assert f"no data directory at {typo}" in one_error_line(capsys)
    assert not typo.exists()


def test_a_directory_that_is_not_a_data_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "verify"]) != 0
    assert "is not a data directory" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_backup_into_an_existing_directory_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = data_dir(tmp_path / "data")
    (tmp_path / "old").mkdir()
    assert main(["--data-dir", str(root), "backup", str(tmp_path / "old")]) != 0
    assert "already exists" in one_error_line(capsys)
    assert main(["--data-dir", str(root), "backup", str(tmp_path / "new")]) == 0
    assert main(["--data-dir", str(tmp_path / "new"), "verify"]) == 0


def test_export_rows_are_the_apis_sorted_by_metric_then_timestamp(tmp_path: Path) -> None:
    root = data_dir(tmp_path / "data")
    out = tmp_path / "u1.parquet"
    assert main(["--data-dir", str(root), "export", "u1", str(out)]) == 0
    got = pl.read_parquet(out)
    assert got.columns == ["timestamp", "device_id", "metric", "value"]
    assert got.schema["timestamp"] == pl.Datetime("ms", "UTC")
    assert got.equals(got.sort("metric", "timestamp", "device_id"))
    expected = chunk(random.Random(13), 0).filter(pl.col("user_id") == "u1")
    assert got.height == expected.unique(["device_id", "ts"]).height + 1  # + the WAL's
    assert set(got["metric"]) == {"heart_rate"}


@pytest.mark.parametrize(
    ("name", "flag", "kind"),
    [
        ("u1.csv", [], "csv"),
        ("u1.ndjson", [], "ndjson"),
        ("u1.jsonl", [], "ndjson"),
        ("u1.parquet", ["--format", "csv"], "csv"),  # --format wins over the suffix
        ("u1.out", ["--format", "ndjson"], "ndjson"),
    ],
)
def test_export_writes_the_format_asked_for(
    tmp_path: Path, name: str, flag: list[str], kind: str
) -> None:
    root = data_dir(tmp_path / "data")
    out = tmp_path / name
    assert main(["--data-dir", str(root), "export", "u1", str(out), *flag]) == 0
    text = out.read_text()
    if kind == "csv":
        header, first = text.splitlines()[:2]
        assert header == "timestamp,device_id,metric,value"
        assert first.startswith("2024-01-15T10:00:00.001Z,'=cmd,heart_rate,61.0")
    else:
        rows = [json.loads(line) for line in text.splitlines()]
        assert list(rows[0]) == ["timestamp", "device_id", "metric", "value"]
        assert rows[0] == {
            "timestamp": "2024-01-15T10:00:00.001Z",
            "device_id": "=cmd",  # JSON is no spreadsheet: kept as sent
            "metric": "heart_rate",
            "value": 61.0,
        }


def test_an_export_to_an_unknown_suffix_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = data_dir(tmp_path / "data")
    assert main(["--data-dir", str(root), "export", "u1", str(tmp_path / "u1.xlsx")]) != 0
    assert "--format" in one_error_line(capsys)
    assert not (tmp_path / "u1.xlsx").exists()


def test_csv_text_cells_that_start_a_formula_are_escaped_and_numbers_are_not() -> None:
    frame = pl.DataFrame(
        {
            "device_id": ["=cmd", "+1", "-foo", "@sum", "\tx", "ok", "a=b", "-5"],
            "value": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, -8.0],
        }
    )
    escaped = escape_formulas(frame)
    assert escaped["device_id"].to_list() == [
        *("'=cmd", "'+1", "'-foo", "'@sum", "'\tx", "ok", "a=b", "'-5"),
    ]
    assert escaped["value"].to_list() == frame["value"].to_list()
    assert escaped.write_csv().splitlines()[1] == "'=cmd,-1.5"


def test_verify_checks_rollups(tmp_path: Path) -> None:
    store = filled(tmp_path, 5, 1)
    compact(store, force=True, grace_s=3600)
    entry = next(f for f in store.manifest.read().fragments if f.rollup)
    assert verify(store) == []
    (store.fragment_dir / entry.files[1]).write_bytes(b"not parquet")
    assert [p.split(":")[0] for p in verify(store)] == [entry.files[1]]


def test_verify_finds_missing_changed_and_orphan_files(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    a, b = (store.publish({"heart_rate": chunk(rng, i * 1000)})[0] for i in range(2))
    assert verify(store) == []
    (store.fragment_dir / a.name).unlink()
    chunk(rng, 99).write_parquet(store.fragment_dir / b.name)
    chunk(rng, 98).write_parquet(store.fragment_dir / "stray.parquet")
    problems = verify(store)
    assert len(problems) == 3
    assert any(a.name in p and "unreadable" in p for p in problems)
    assert any(b.name in p and "manifest says" in p for p in problems)
    assert any("stray.parquet" in p and "orphan" in p for p in problems)


def test_backup_copies_a_consistent_restorable_snapshot(tmp_path: Path) -> None:
    store = filled(tmp_path / "live", 9, 4)
    compact(store, min_files=4, grace_s=3600)  # leaves 4 retired files on disk
    wal = SegmentWriter(segment_path(store.wal_dir, "w2", 1))
    wal.append(encode_frame("heart_rate", 10**9, Rows(["u9"], ["d"], [BASE], [80.0])))
    wal.close()
    before = answers(store, tmp_path)

    assert backup(store, tmp_path / "copy") == (len(store.manifest.read().fragments), 1)
    copy = Store(tmp_path / "copy", "restorer", 5)
    assert verify(copy) == []
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text())["retired"] == []
    assert replay_orphans(copy) == 1  # the unflushed reading came along
    assert answers(copy, tmp_path) == before


def test_maintenance_commands_export_and_verify(tmp_path: Path, capsys) -> None:
    rng = random.Random(13)
    store = Store(tmp_path, "w1", 5)
    store.ensure_layout()
    store.publish({"heart_rate": chunk(rng, 0)})
    assert main(["--data-dir", str(tmp_path), "verify"]) == 0
    assert "OK" in capsys.readouterr().out
    out = tmp_path / "u1.csv"
    assert main(["--data-dir", str(tmp_path), "export", "u1", str(out)]) == 0
    exported = pl.read_csv(out)
    assert exported.columns == ["timestamp", "device_id", "metric", "value"]
    assert (
        exported.height
        == chunk(random.Random(13), 0)
        .filter(pl.col("user_id") == "u1")
        .unique(["device_id", "ts"])
        .height
    )
    assert main(["--data-dir", str(tmp_path), "compact", "--full"]) == 0
    (tmp_path / "fragments" / "stray.parquet").write_bytes(b"x")
    assert main(["--data-dir", str(tmp_path), "verify"]) == 1


def test_verify_checks_the_user_ranges_of_day_files(tmp_path: Path) -> None:
    store = filled(tmp_path, 5, 8, rows=300)
    compact(store, force=True, grace_s=3600, max_rows=200)
    files = store.manifest.read().fragments
    assert verify(store) == []
    split = next(f for f in files if f.user_hi is not None)
    # a gap between two ranges, and a file holding ids outside its range
    store.manifest.commit(remove=[split.name], retire=False)
    store.manifest.commit(add=[dataclasses.replace(split, user_hi="u0")])
    problems = verify(store)
    assert any("do not tile" in p for p in problems)
    assert any(f"{split.name}: holds user ids" in p for p in problems)


def test_an_export_overwrites_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "data", "w1", 5)
    store.ensure_layout()
    store.publish({"heart_rate": chunk(random.Random(3), 0)})
    out = tmp_path / "u1.csv"
    out.write_text("old")
    os.chmod(out, 0o644)
    assert main(["--data-dir", str(store.root), "export", "u1", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
