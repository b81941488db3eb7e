"""A user's spanned partials of each not-yet-compacted fragment, for the minute path.

Each fragment's partials of every user are made once and kept (``RollupCache`` over
``file_partials``): later queries of any user slice them. When a query finds more files
missing than it should make partials of, which happens while compaction lags behind
ingestion and the files outnumber what the budget holds, the rest are read in one scan of
the user's rows instead: making every file's partials costs ~6 ms a file (a query of 106
fragments under ``ops/soak``: ~650 ms, evicting what the next query needs), one scan of
their rows ~80-130 ms, and it allocates only the user's rows.
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import polars as pl

from service.query.aggregate import SMALL
from service.query.minutes import file_partials, spanned
from service.query.rollups import RollupCache
from service.schema import ROW_SCHEMA
from service.storage.fragments import FragmentInfo

# the missing files a query makes (and keeps) the partials of; the rest are scanned
MADE_PER_QUERY = 4


class LoosePartials:
    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self._directory = directory
        self._files = RollupCache(directory, budget_bytes, file_partials)

    def keep(self, listed: Container[str]) -> None:
        self._files.keep(listed)

    def of_user(self, user_id: str, files: list[FragmentInfo]) -> list[pl.DataFrame]:
        """The user's partials of each of ``files`` (``file_partials`` columns, sorted by
        minute), in their order."""
        found = [self._files.found(f.name, user_id) for f in files]
        missing = [i for i, frame in enumerate(found) if frame is None]
        cut = max(0, len(missing) - MADE_PER_QUERY)  # the last ones listed: the newest
        for i in missing[cut:]:
            found[i] = self._files.user_rows(files[i].name, user_id)
        if cut:
            scanned = self._scanned(user_id, [files[i] for i in missing[:cut]])
            for i in missing[:cut]:
                found[i] = scanned[files[i].name]
        return [frame for frame in found if frame is not None]

    def _scanned(self, user_id: str, files: list[FragmentInfo]) -> dict[str, pl.DataFrame]:
        """The user's partials of each of ``files``, from one scan of the user's rows."""
        paths = [self._directory / f.name for f in files]
        rows = pl.scan_parquet(paths, schema=ROW_SCHEMA, include_file_paths="path")
        mine = rows.filter(pl.col("user_id") == user_id)
        parts = spanned(mine, ("path",)).with_columns(pl.lit(user_id).alias("user_id"))
        frame = parts.select("path", *_COLUMNS).collect(engine=SMALL)
        empty = frame.clear().drop("path")
        by_path = frame.partition_by("path", as_dict=True, include_key=False)
        return {f.name: by_path.get((str(p),), empty) for f, p in zip(files, paths, strict=True)}


# ``file_partials``' columns, in its order
_COLUMNS = list(spanned(pl.LazyFrame(schema=ROW_SCHEMA), ("user_id",)).collect_schema())
