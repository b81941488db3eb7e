"""The Delta store on a local path: the flush and query contract of the local store, each
WAL's rows committed once however often they are published, and the start-up checks."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from service import export
from service.config import ConfigError, Settings
from service.ingest.buffer import Buffer
from service.ingest.ingestor import Ingestor
from service.query.reader import Reader
from service.query.series import json_body
from service.query.sources import Query
from service.schema import DAY_MS, ROW_SCHEMA, rows_frame
from service.storage import delta_setup
from service.storage.delta import DeltaStore
from service.storage.delta_setup import TableRefused, check_put_if_absent
from service.storage.recovery import replay_orphans
from service.storage.wal import list_segments
from tests.unit.test_write_path import BASE, dead_worker_wal, rows


def store_at(root: Path, table: Path, worker: str = "w1") -> DeltaStore:
    store = DeltaStore(root, worker, 5.0, str(table), {})
    store.ensure_layout()
    return store


def frames(n: int, first_seq: int = 1, start: int = 0, user: str = "u") -> dict[str, pl.DataFrame]:
    return {"heart_rate": rows_frame(rows(n, user, start), list(range(first_seq, first_seq + n)))}


def table_frame(store: DeltaStore, metric: str = "heart_rate") -> pl.DataFrame:
    lf = store.table_rows(metric, 0, BASE + 30 * DAY_MS)
    return pl.DataFrame(schema=ROW_SCHEMA) if lf is None else lf.collect()


def test_published_rows_come_back_with_the_row_schema(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    assert store.table_rows("heart_rate", BASE, BASE + 1000) is None  # an empty table
    assert store.publish(frames(5)) == []
    got = table_frame(store)
    assert got.schema == pl.Schema(ROW_SCHEMA)
    assert got.sort("seq").equals(frames(5)["heart_rate"])
    assert not store.manifest.read().fragments  # the local manifest lists nothing
    config = DeltaTable(str(tmp_path / "table")).metadata().configuration
    assert config["delta.setTransactionRetentionDuration"] == "interval 30 days"


def test_a_query_lists_only_the_files_of_its_metric_and_days(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(3))
    store.publish(frames(2, first_seq=10, start=2 * 86_400))  # two days later
    store.publish({"steps": rows_frame(rows(4), list(range(20, 24)))})
    day = store.table_rows("heart_rate", BASE, BASE + 1000)
    assert day is not None
    assert day.collect()["seq"].to_list() == [1, 2, 3]
    assert table_frame(store, "steps").height == 4
    assert store.table_rows("heart_rate", BASE + DAY_MS, BASE + DAY_MS + 1) is None


def test_publishing_a_wal_again_commits_only_the_rows_the_table_lacks(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(5))
    store.publish(frames(5))  # a retry after a commit whose answer was lost
    assert table_frame(store).height == 5
    store.publish(frames(8))  # a replay: the committed rows and three more
    assert sorted(table_frame(store)["seq"]) == list(range(1, 9))
    version = DeltaTable(str(tmp_path / "table")).transaction_version(store.app_id("w1"))
    assert version == 8


def test_each_wal_has_its_own_transaction(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(5))
    store.publish(frames(5), owner="other")  # the same seqs from another worker's WAL
    assert table_frame(store).height == 10


def test_a_dead_workers_wal_committed_before_the_crash_is_not_added_again(
    tmp_path: Path,
) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table", worker="alive")
    dead_worker_wal(store, "dead", 7)  # seqs 1..7
    store.publish(frames(4), owner="dead")  # its flush of seqs 1..4 committed, then it died
    assert replay_orphans(store) == 7
    assert not list_segments(store.wal_dir)
    assert sorted(table_frame(store)["seq"]) == list(range(1, 8))
    assert replay_orphans(store) == 0


def test_two_machines_share_the_table_and_each_has_its_own_id(tmp_path: Path) -> None:
    one = store_at(tmp_path / "m1", tmp_path / "table")
    two = store_at(tmp_path / "m2", tmp_path / "table")
    assert one.app_id("w1") != two.app_id("w1")
    one.publish(frames(3))
    two.publish(frames(3, user="v"))  # the same worker name and seqs on another machine
    assert table_frame(one).height == table_frame(two).height == 6


def test_concurrent_commits_from_several_stores_all_land(tmp_path: Path) -> None:
    stores = [store_at(tmp_path / f"m{i}", tmp_path / "table") for i in range(3)]
    errors: list[BaseException] = []

    def flush(store: DeltaStore) -> None:
        try:
            for k in range(4):
                store.publish(frames(5, first_seq=1 + 5 * k, start=5 * k))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert table_frame(stores[0]).height == 3 * 4 * 5


def test_the_query_path_reads_the_table_and_the_unflushed_rows(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = Settings(data_dir=tmp_path / "m1", flush_interval_s=3600)
        store = DeltaStore(settings.data_dir, "w1", 5.0, str(tmp_path / "table"), {})
        ingestor = Ingestor(settings, store, Buffer())
        await ingestor.start()
        await ingestor.submit("heart_rate", rows(3))
        assert await ingestor.flusher.flush()
        await ingestor.submit("heart_rate", rows(2, start=120))  # two minutes later
        other = store_at(tmp_path / "m2", tmp_path / "table")
        for reader, buckets in (
            (Reader(settings, store, ingestor.buffer), 2),
            (
                Reader(settings, other, Buffer()),
                1,  # the other machine sees the flushed rows
            ),
        ):
            body = json_body(reader, Query("heart_rate", "u", BASE, BASE + 3_600_000))
            assert body is not None
            assert json.loads(body)["count"] == buckets
        await ingestor.stop()
        assert table_frame(store).height == 5

    asyncio.run(scenario())


def test_the_put_if_absent_check_passes_on_a_store_that_refuses_overwrites(
    tmp_path: Path,
) -> None:
    check_put_if_absent(str(tmp_path / "table"), None)
    check_put_if_absent(str(tmp_path / "table"), None)  # again, as at every start


def test_a_store_that_overwrites_log_entries_is_refused(tmp_path: Path, monkeypatch) -> None:
    real = delta_setup.write_deltalake
    check_put_if_absent(str(tmp_path / "table"), None)  # creates the probe table

    def overwriting(table, data, **kwargs):  # the second commit "succeeds"
        if isinstance(table, DeltaTable):
            return None
        return real(table, data, **kwargs)

    monkeypatch.setattr(delta_setup, "write_deltalake", overwriting)
    with pytest.raises(TableRefused, match="If-None-Match"):
        check_put_if_absent(str(tmp_path / "table"), None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HR_STORE": "delta"}, "needs HR_TABLE_URI"),
        ({"HR_STORE": "delta", "HR_TABLE_URI": "gs://bucket/t"}, "is not s3://"),
        ({"HR_STORE": "delta", "HR_TABLE_URI": "s3:///t"}, "is not s3://"),
        ({"HR_STORE": "lake"}, "HR_STORE='lake' is not one of local, delta"),
    ],
)
def test_a_delta_store_without_a_usable_uri_stops_start_up(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_store_settings_and_credentials_are_read_but_not_shown() -> None:
    env = {"HR_STORE": "delta", "HR_TABLE_URI": "s3://b/t", "AWS_SECRET_ACCESS_KEY": "hush"}
    settings = Settings.from_env(env)
    assert (settings.store, settings.table_uri) == ("delta", "s3://b/t")
    assert settings.table_options == {"AWS_SECRET_ACCESS_KEY": "hush"}
    assert "hush" not in repr(settings)
    assert Settings.from_env({}).store == "local"


def test_an_export_includes_the_tables_rows(tmp_path: Path) -> None:
    store = store_at(tmp_path / "m1", tmp_path / "table")
    store.publish(frames(4))
    store.publish(frames(3, first_seq=10, start=2 * 86_400))  # two days later
    got = export.readings(store, "u", ["heart_rate", "steps"])
    assert got.height == 7
    assert store.table_rows("heart_rate", 0, 2**62) is not None  # "forever" is a range too
