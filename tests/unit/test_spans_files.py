"""Spans files: a level-1 file's partials, written by the merge, read instead of its rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from service.maintenance import verify
from service.partials import SPANS_SCHEMA, file_partials
from service.query import minutes
from service.schema import DAY_MS
from service.storage import erasure
from service.storage.compaction import compact
from service.storage.fragments import FragmentInfo, spans_name
from service.storage.store import Store
from tests.unit.test_compaction import answers, filled

LEVEL1_ONLY = 4  # min_files: 20 small fragments merge into one level-1 file per day, no more


def level1(store: Store) -> list[FragmentInfo]:
    files = store.manifest.read().fragments
    assert {f.level for f in files} == {1}
    return list(files)


def spans_path(store: Store, f: FragmentInfo) -> Path:
    return store.fragment_dir / spans_name(f.name)


def test_a_level0_merge_writes_what_a_query_would_compute(tmp_path: Path) -> None:
    store = filled(tmp_path, 5, 20)
    assert compact(store, min_files=LEVEL1_ONLY) is not None
    files = level1(store)
    assert len({f.min_ts // DAY_MS for f in files}) == len(files) > 1  # one a day
    for f in files:
        assert f.spans
        assert spans_name(f.name) in f.files
        kept = pl.read_parquet(spans_path(store, f), schema=SPANS_SCHEMA)
        assert kept.equals(file_partials(store.fragment_dir / f.name))
    assert verify(store) == []


def test_queries_read_the_spans_file_and_answer_as_from_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = filled(tmp_path, 6, 20)
    before = answers(store, tmp_path)  # level-0 files: partials computed from their rows
    compact(store, min_files=LEVEL1_ONLY)
    files = level1(store)

    def no_rows(path: Path) -> pl.DataFrame:
        raise AssertionError(f"{path.name}: computed from its rows")

    with monkeypatch.context() as patched:
        patched.setattr(minutes, "file_partials", no_rows)
        assert answers(store, tmp_path) == before
    for f in files:  # without its spans file, a query computes them again
        spans_path(store, f).unlink()
    assert answers(store, tmp_path) == before


def test_an_unreadable_spans_file_costs_only_the_shortcut(tmp_path: Path) -> None:
    store = filled(tmp_path, 7, 20)
    before = answers(store, tmp_path)
    compact(store, min_files=LEVEL1_ONLY)
    f = level1(store)[0]
    spans_path(store, f).write_bytes(b"PAR1 not parquet")
    assert answers(store, tmp_path) == before
    assert any(spans_name(f.name) in problem for problem in verify(store))


def test_verify_reports_a_spans_file_that_miscounts(tmp_path: Path) -> None:
    store = filled(tmp_path, 8, 20)
    compact(store, min_files=LEVEL1_ONLY)
    f = level1(store)[0]
    kept = pl.read_parquet(spans_path(store, f), schema=SPANS_SCHEMA)
    kept.with_columns(pl.col("count") + 1).write_parquet(spans_path(store, f))
    assert [p for p in verify(store) if spans_name(f.name) in p and "counts" in p]


def test_a_day_merge_retires_the_spans_files_with_their_files(tmp_path: Path) -> None:
    store = filled(tmp_path, 9, 20)
    compact(store, min_files=LEVEL1_ONLY)
    spans = [spans_path(store, f) for f in level1(store)]
    compact(store, force=True, grace_s=0.0)
    assert {f.level for f in store.manifest.read().fragments} == {2}
    retired = {name for name, _ in store.manifest.read().retired}
    assert {p.name for p in spans} <= retired
    compact(store, force=True, grace_s=0.0)  # the next pass deletes what the last retired
    assert not any(p.exists() for p in spans)
    assert verify(store) == []


def test_an_erase_rewrites_a_level1_file_with_spans_of_what_is_left(tmp_path: Path) -> None:
    store = filled(tmp_path, 10, 20)
    compact(store, min_files=LEVEL1_ONLY)
    old = level1(store)
    erasure.begin(store, "u2")
    progress = erasure.finish(store)
    assert progress is not None
    assert progress.done
    files = level1(store)
    assert not {f.name for f in files} & {f.name for f in old}
    for f in files:
        assert f.spans
        kept = pl.read_parquet(spans_path(store, f), schema=SPANS_SCHEMA)
        assert "u2" not in kept["user_id"].to_list()
        assert kept.equals(file_partials(store.fragment_dir / f.name))
    assert verify(store) == []
