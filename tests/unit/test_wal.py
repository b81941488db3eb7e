"""WAL frames, torn tails and incremental tail reading."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from service.schema import Rows
from service.storage.wal import (
    SegmentWriter,
    TailReader,
    decode_frames,
    encode_frame,
    list_segments,
    read_segment,
    segment_path,
)

rows_st = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=8),
        st.text(min_size=1, max_size=8),
        st.integers(-(2**40), 2**40),
        st.floats(30, 220),
    ),
    min_size=1,
    max_size=20,
).map(lambda items: Rows(*map(list, zip(*items, strict=True))))


@given(st.lists(rows_st, min_size=1, max_size=5))
def test_frames_round_trip(batches: list[Rows]) -> None:
    data = b"".join(encode_frame("heart_rate", 100 * i, rows) for i, rows in enumerate(batches))
    frames, used = decode_frames(data)
    assert used == len(data)
    assert [f.rows for f in frames] == batches
    assert [f.first_seq for f in frames] == [100 * i for i in range(len(batches))]


@given(rows_st, rows_st, st.data())
def test_a_torn_tail_is_ignored(first: Rows, second: Rows, data: st.DataObject) -> None:
    good = encode_frame("heart_rate", 1, first)
    torn = encode_frame("heart_rate", 2, second)
    cut = data.draw(st.integers(0, len(torn) - 1))
    frames, used = decode_frames(good + torn[:cut])
    assert [f.rows for f in frames] == [first]
    assert used == len(good)


def test_a_corrupt_frame_stops_the_reader() -> None:
    one = encode_frame("heart_rate", 1, Rows(["u"], ["d"], [1], [70.0]))
    two = bytearray(encode_frame("heart_rate", 2, Rows(["u"], ["d"], [2], [71.0])))
    two[-1] ^= 0xFF
    frames, used = decode_frames(one + bytes(two) + one)
    assert len(frames) == 1
    assert used == len(one)


def test_tail_reader_sees_appends_and_forgets_deleted_files(tmp_path: Path) -> None:
    path = segment_path(tmp_path, "w1", 1)
    writer = SegmentWriter(path)
    reader = TailReader("heart_rate")
    writer.append(encode_frame("heart_rate", 10, Rows(["u"], ["d"], [1], [70.0])))
    assert [df.height for df in reader.read([path])] == [1]
    writer.append(encode_frame("heart_rate", 11, Rows(["u", "u"], ["d", "e"], [2, 3], [71, 72])))
    (frame,) = reader.read([path])
    assert frame.get_column("seq").to_list() == [10, 11, 12]
    assert reader.read([path])[0].height == 3
    path.unlink()
    assert reader.read([path]) == []
    writer.close()


def test_segments_are_listed_per_worker_oldest_first(tmp_path: Path) -> None:
    for worker, seg in [("w1", 2), ("w1", 1), ("w2", 1)]:
        segment_path(tmp_path, worker, seg).write_bytes(b"")
    (tmp_path / "w1.lock").write_bytes(b"")
    found = list_segments(tmp_path)
    assert found == {
        "w1": [segment_path(tmp_path, "w1", 1), segment_path(tmp_path, "w1", 2)],
        "w2": [segment_path(tmp_path, "w2", 1)],
    }
    assert read_segment(tmp_path / "missing.log") == []
