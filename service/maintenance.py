"""Maintenance commands for operators: ``ops/maint verify|recover|compact|backup|export|keys``,
and ``compact-table`` for the shared table of ``HR_STORE=delta`` (cron on one machine).

They work on a live data directory: every change goes through the same manifest lock,
compaction election and WAL owner locks as the workers use.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import polars as pl

from service import export, logs
from service.auth import cli as keys_cli
from service.auth.keys import KeysError
from service.backup import BackupError, backup
from service.compaction_process import run_pass, stop_on_term
from service.config import ConfigError, Settings
from service.partials import SPANS_SCHEMA
from service.schema import DAY_MS, METRICS, ROLLUP_SCHEMA, ROW_SCHEMA
from service.storage import erasure
from service.storage.compaction_policy import TOP_LEVEL
from service.storage.files import is_held, private_lock
from service.storage.fragments import FragmentInfo, rollup_name, spans_name
from service.storage.quarantine import quarantined
from service.storage.recovery import replay_orphans
from service.storage.store import Store
from service.storage.wal import list_segments, lock_path, read_segment


def verify(store: Store) -> list[str]:
    """Problems found: listed files missing or unlike their entry, orphans, quarantined
    files (their rows are missing from answers until an operator restores them), rows of
    erased users left in any file."""
    problems: list[str] = []
    snapshot = store.manifest.read()
    listed = snapshot.listed()
    for f in snapshot.fragments:
        path = store.fragment_dir / f.name
        try:
            ts, user = pl.col("ts").dt.epoch("ms"), pl.col("user_id")
            rows, low, high, first_user, last_user = (
                pl.scan_parquet(path, schema=ROW_SCHEMA)
                .select(
                    pl.len(), ts.min(), ts.max().alias("high"), user.min(), user.max().alias("last")
                )
                .collect()
                .row(0)
            )
        except (OSError, pl.exceptions.PolarsError) as exc:
            problems.append(f"{f.name}: unreadable ({str(exc).splitlines()[0]})")
            continue
        if (rows, low, high) != (f.rows, f.min_ts, f.max_ts):
            problems.append(
                f"{f.name}: has {rows} rows in [{low}, {high}], manifest says "
                f"{f.rows} in [{f.min_ts}, {f.max_ts}]"
            )
        if rows and not (f.holds(first_user) and f.holds(last_user)):
            problems.append(
                f"{f.name}: holds user ids {first_user!r} to {last_user!r}, outside its "
                f"range [{f.user_lo!r}, {f.user_hi!r})"
            )
        if f.rollup:
            problems += _verify_counts(store, f, rollup_name(f.name))
        if f.spans:
            problems += _verify_counts(store, f, spans_name(f.name), SPANS_SCHEMA)
    for r in snapshot.rollups:  # a day past raw retention: only its rollup is left
        problems += _verify_counts(store, r, r.name)
    problems += _verify_ranges(snapshot.fragments) + erasure.leftovers(store)
    return problems + _unlisted(store, listed | {name for name, _ in snapshot.retired})


def _unlisted(store: Store, named: set[str]) -> list[str]:
    """Orphans in ``fragments/`` and the quarantined files."""
    problems = []
    if store.fragment_dir.exists():
        for path in sorted(store.fragment_dir.iterdir()):
            if path.name not in named and not path.name.endswith(".tmp"):
                problems.append(f"{path.name}: not listed in the manifest (orphan)")
    for name, why in quarantined(store.root).items():
        problems.append(f"{name}: quarantined ({why or 'no reason recorded'})")
    return problems


def _verify_ranges(fragments: tuple[FragmentInfo, ...]) -> list[str]:
    """A compacted day's level-2 files must have disjoint user ranges covering every id."""
    days: dict[tuple[str, int], list[FragmentInfo]] = {}
    for f in fragments:
        if f.level == TOP_LEVEL:
            days.setdefault((f.metric, f.min_ts // DAY_MS), []).append(f)
    problems = []
    for (metric, day), files in sorted(days.items()):
        # the unbounded-below range first, then by lower bound; each must end where the
        # next one starts, the last one unbounded above
        ranges = sorted(
            ((f.user_lo, f.user_hi) for f in files), key=lambda r: (r[0] is not None, r[0] or "")
        )
        starts, ends = [lo for lo, _ in ranges], [hi for _, hi in ranges]
        if starts[0] is not None or None in starts[1:] or ends != [*starts[1:], None]:
            problems.append(f"{metric} day {day}: level-2 user ranges do not tile the ids")
    return problems


def _verify_counts(
    store: Store, f: FragmentInfo, name: str, schema: dict[str, pl.DataType] = ROLLUP_SCHEMA
) -> list[str]:
    """A rollup or spans file ``name`` must count the readings of its file ``f``."""
    try:
        counted = (
            pl.scan_parquet(store.fragment_dir / name, schema=schema)
            .select(pl.col("count").sum())
            .collect()
            .item()
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        return [f"{name}: unreadable ({str(exc).splitlines()[0]})"]
    if counted != f.rows:
        return [f"{name}: counts {counted} readings, its file has {f.rows}"]
    return []


def wal_state(store: Store) -> list[str]:
    lines = []
    for worker, segments in sorted(list_segments(store.wal_dir).items()):
        rows = sum(len(frame.rows) for path in segments for frame in read_segment(path))
        lines.append(
            f"wal {worker}: {len(segments)} segments, {rows} rows, "
            f"{'alive' if _alive(store, worker) else 'DEAD (run recover)'}"
        )
    return lines


def _alive(store: Store, worker: str) -> bool:
    return is_held(private_lock(lock_path(store.wal_dir, worker)))


class MaintenanceError(Exception):
    """A command cannot run as asked; ``main`` prints it as one line on stderr."""


def open_store(root: Path, lock_timeout_s: float) -> Store:
    """The existing data directory ``root``; never creates one (a typo must not look OK)."""
    if not root.exists():
        raise MaintenanceError(f"no data directory at {root} (check --data-dir or HR_DATA_DIR)")
    if not root.is_dir() or not any((root / n).exists() for n in _LAYOUT):
        raise MaintenanceError(
            f"{root} is not a data directory (it has no manifest.json, wal/ or fragments/)"
        )
    store = Store(root, f"maint{os.getpid()}x{secrets.token_hex(4)}", lock_timeout_s)
    store.ensure_layout()
    return store


_LAYOUT = ("manifest.json", "wal", "fragments")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ops/maint", description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data root (default: HR_DATA_DIR or data)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check every listed file, orphans and WAL state")
    sub.add_parser("recover", help="replay WALs of dead workers into fragments")
    c = sub.add_parser("compact", help="merge fragments now")
    c.add_argument("--full", action="store_true", help="merge every day down to its level-2 files")
    c.add_argument(
        "--min-files", type=int, help="files that trigger a merge (HR_COMPACT_MIN_FILES)"
    )
    c.add_argument("--grace-s", type=float, help="retired files' grace (HR_COMPACT_GRACE_S)")
    c.add_argument("--max-rows", type=int, help="rows per merge step (HR_COMPACT_MAX_ROWS)")
    b = sub.add_parser("backup", help="copy a consistent snapshot of a running data dir")
    b.add_argument("destination", type=Path, help="a directory that does not exist yet")
    e = sub.add_parser("export", help="write one user's readings to CSV, NDJSON or Parquet")
    e.add_argument("user_id")
    e.add_argument("output", type=Path, help="a .csv, .ndjson/.jsonl or .parquet path")
    e.add_argument(
        "--format", choices=export.FORMATS, help="the output format (default: by suffix)"
    )
    e.add_argument("--metric", choices=sorted(METRICS), help="one metric (default: all)")
    t = sub.add_parser("compact-table", help="HR_STORE=delta: compact (and vacuum) the table")
    t.add_argument("--min-files", type=int, help="files that trigger a day's rewrite")
    t.add_argument(
        "--vacuum-hours", type=int, help="then delete files unreferenced this long (>= 24)"
    )
    keys_cli.add_parser(sub)
    return parser


def _compact_table(settings: Settings, args: argparse.Namespace) -> int:
    """The shared table's compaction (and vacuum): needs no data directory."""
    from service.storage import delta_compaction  # deltalake only where the table is used

    if settings.store != "delta":
        raise MaintenanceError("compact-table needs HR_STORE=delta and HR_TABLE_URI")
    options = dict(settings.table_options) or None
    min_files = args.min_files or settings.compact_min_files
    report = delta_compaction.compact(
        settings.table_uri,
        options,
        min_files,
        settings.retention_days,
        settings.rollup_retention_days,
    )
    print(report)
    if args.vacuum_hours is not None:
        try:
            removed = delta_compaction.vacuum(settings.table_uri, options, args.vacuum_hours)
        except ValueError as exc:
            raise MaintenanceError(str(exc)) from exc
        print(f"vacuum removed {len(removed)} files")
    return 0


def _verify(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    problems = verify(store)
    if settings.store == "delta":
        from service.storage import delta_erasure  # deltalake only where the table is used

        options = dict(settings.table_options) or None
        problems += delta_erasure.leftovers(settings.table_uri, options)
    snapshot = store.manifest.read()
    print(
        f"manifest generation {snapshot.generation}: {len(snapshot.fragments)} fragments, "
        f"{sum(f.rows for f in snapshot.fragments)} rows, {len(snapshot.retired)} retired, "
        f"{len(snapshot.rollups)} rollups past raw retention"
    )
    print("\n".join([*wal_state(store), *problems]) or "no WAL files")
    print("OK" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


def _recover(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    print(f"replayed {replay_orphans(store)} rows")
    return 0


def _compact(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    logs.configure(settings)
    stop_on_term(with_parent=False)  # Ctrl-C or SIGTERM: the merge in progress is undone
    report = run_pass(store, settings, args)
    print("another process is compacting; try again" if report is None else report)
    return 0 if report is not None else 1


def _backup(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    fragments, segments = backup(store, args.destination)
    print(f"copied {fragments} fragments and {segments} WAL segments to {args.destination}")
    return 0


def _export(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    fmt = export.format_of(args.output, args.format)  # before any work: a bad name fails fast
    data = export.readings(store, args.user_id, [args.metric] if args.metric else list(METRICS))
    export.write(data, args.output, fmt)
    print(f"exported {data.height} readings to {args.output} ({fmt})")
    return 0


_COMMANDS = {
    "verify": _verify,
    "recover": _recover,
    "compact": _compact,
    "backup": _backup,
    "export": _export,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "keys":  # may come before the first start: no store needed
            return keys_cli.run(args.data_dir or settings.data_dir, settings.lock_timeout_s, args)
        if args.command == "compact-table":
            return _compact_table(settings, args)
        store = open_store(args.data_dir or settings.data_dir, settings.lock_timeout_s)
        return _COMMANDS[args.command](store, settings, args)
    except (MaintenanceError, BackupError, export.ExportError, ConfigError, KeysError) as exc:
        print(f"ops/maint {args.command}: {exc}", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ops/maint {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
    return 2


def cli() -> None:
    """``hr-maint``: the same commands as ``ops/maint``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
