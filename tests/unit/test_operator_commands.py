"""ops/maint: clear one-line errors, exports in the API's terms and the asked format."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from service.config import ConfigError, Settings
from service.export import escape_formulas
from service.maintenance import main
from service.storage.store import Store
from service.storage.wal import SegmentWriter, encode_frame, segment_path
from service.validation import Rows
from tests.unit.test_compaction import BASE, chunk


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


def test_a_batch_larger_than_the_buffer_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"HR_MAX_BATCH=1000 .*HR_MAX_BUFFER_ROWS=999"):
        Settings.from_env({"HR_MAX_BATCH": "1000", "HR_MAX_BUFFER_ROWS": "999"})
    assert Settings.from_env({"HR_MAX_BATCH": "999", "HR_MAX_BUFFER_ROWS": "999"}).max_batch == 999
