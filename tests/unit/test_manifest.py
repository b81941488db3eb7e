"""Manifest commits: atomic, locked, and lossless under concurrent writers."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from service.storage.fragments import FragmentInfo
from service.storage.manifest import Manifest


def info(name: str) -> FragmentInfo:
    return FragmentInfo(name, "heart_rate", 1, 0, 1)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15)), max_size=40))
def test_commits_apply_like_a_set(tmp_path_factory, ops) -> None:
    manifest = Manifest(tmp_path_factory.mktemp("m") / "manifest.json", 5)
    model: list[str] = []
    for is_add, n in ops:
        name = f"f{n}"
        if is_add:
            manifest.commit(add=[info(name)])
            if name not in model:
                model.append(name)
        else:
            manifest.commit(remove=[name])
            model = [m for m in model if m != name]
        assert [f.name for f in manifest.read().fragments] == model


def test_readers_see_a_replaced_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    reader, writer = Manifest(path, 5), Manifest(path, 5)
    assert reader.read().fragments == ()
    writer.commit(add=[info("a")])
    assert [f.name for f in reader.read().fragments] == ["a"]
    writer.commit(add=[info("b")], remove=["a"])
    assert [f.name for f in reader.read().fragments] == ["b"]
