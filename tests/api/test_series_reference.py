"""Series and summaries of generated readings against the plain-Python reference.

Readings of all three metrics, for two users and three devices (two listed, one not),
around a DST transition in Berlin and in Sydney and in Kolkata's +05:30, are sent in
phases; each phase leaves them fresh (buffered), flushed, or flushed and compacted (with
rollups), and later phases repeat and rewrite earlier readings. Every interval, in both
priority scopes, must then answer exactly what ``ops/reference.py`` says.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reference import Reading, expected_data, expected_summary
from reference_time import HOUR_MS, label
from starlette.testclient import TestClient

from service.config import Settings
from service.storage.compaction import compact
from tests.conftest import make_client

PRIORITY = {"device_a": 1, "device_b": 2}
FIELDS = ("heart_rate", "steps", "calories")
INTERVALS = ("1s", "1m", "5m", "15m", "30m", "1h", "1d")
REL = 1e-9
# each example starts an app (~0.2 s), so shrinking a failure would run into the test
# timeout; the assertion names the metric and query, and the example is printed unshrunk
EXAMPLES = settings(
    max_examples=25,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# a zone and an instant at (or near) one of its transitions; data spans it by 30 hours
CASES = {
    "berlin-spring": ("Europe/Berlin", ms("2024-03-31T01:00:00Z")),  # 23-hour day
    "berlin-fall": ("Europe/Berlin", ms("2024-10-27T01:00:00Z")),  # 25-hour day
    "sydney-fall": ("Australia/Sydney", ms("2024-04-06T16:00:00Z")),  # 25-hour day
    "sydney-spring": ("Australia/Sydney", ms("2024-10-05T16:00:00Z")),  # 23-hour day
    "kolkata": ("Asia/Kolkata", ms("2024-01-15T10:00:00Z")),
}
SPAN_MS = 30 * HOUR_MS


@dataclass(frozen=True)
class Sent:
    metric: str
    reading: Reading
    with_offset: bool  # the timestamp written in the case's zone rather than in UTC


def value_st(metric: str) -> st.SearchStrategy[float]:
    if metric == "heart_rate":
        return st.integers(30, 220).map(float) | st.floats(30, 220).map(lambda v: round(v, 1))
    if metric == "steps":
        return st.integers(0, 400).map(float)
    return st.floats(0, 60).map(lambda v: round(v, 2))


def rewritten(metric: str, value: float) -> float:
    """Another valid value for the same identity."""
    if metric == "heart_rate":
        return 30.0 + (value - 30.0 + 17.5) % 190.0
    if metric == "steps":
        return float((int(value) + 7) % 400)
    return round((value + 1.25) % 60.0, 2)


Phases = list[tuple[list[Sent], str]]  # readings sent, then "keep", "flush" or "compact"
Plan = tuple[str, Phases]  # a case and its phases


@st.composite
def sent_st(draw: st.DrawFn, metrics: Sequence[str], pivot: int) -> Sent:
    """A reading at a few shared instants: devices and metrics collide within minutes."""
    metric = draw(st.sampled_from(metrics))
    # whole hours from the pivot, most near it; minutes that make runs of five for resting
    hour = draw(st.integers(-30, 29) | st.sampled_from([-2, -1, 0, 1]))
    minute = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 30, 59]))
    second = draw(st.sampled_from([0, 0, 1, 30, 59]))
    extra = draw(st.sampled_from([0, 0, 0, 250]))
    ts = pivot + hour * HOUR_MS + minute * 60_000 + second * 1000 + extra
    user = draw(st.sampled_from(["u1", "u1", "u2"]))
    device = draw(st.sampled_from(["device_a", "device_b", "watch_x"]))
    return Sent(metric, (user, device, ts, draw(value_st(metric))), draw(st.booleans()))


@st.composite
def phases_st(draw: st.DrawFn, metrics: Sequence[str]) -> Plan:
    """A case and its phases: readings sent, then ``keep``, ``flush`` or ``compact``."""
    case = draw(st.sampled_from(sorted(CASES)))
    pivot = CASES[case][1]
    sent: list[Sent] = []
    phases: Phases = []
    for _ in range(draw(st.integers(1, 3))):
        batch = draw(st.lists(sent_st(metrics, pivot), min_size=1, max_size=25))
        # repeats (retries) and rewrites (last write wins) of what was sent before
        for index, rewrite in draw(st.lists(st.tuples(st.integers(0, 999), st.booleans()))):
            pool = sent + batch
            old = pool[index % len(pool)]
            user, device, ts, value = old.reading
            value = rewritten(old.metric, value) if rewrite else value
            batch.append(Sent(old.metric, (user, device, ts, value), not old.with_offset))
        sent.extend(batch)
        phases.append((batch, draw(st.sampled_from(["keep", "flush", "compact"]))))
    return case, phases


def post(client: TestClient, batch: list[Sent], zone: str) -> None:
    for metric in FIELDS:
        readings = [
            {
                "user_id": s.reading[0],
                "device_id": s.reading[1],
                "timestamp": label(s.reading[2], zone if s.with_offset else "UTC"),
                # steps as JSON integers, or as floats with no fraction
                metric: int(s.reading[3]) if metric == "steps" and s.with_offset else s.reading[3],
            }
            for s in batch
            if s.metric == metric
        ]
        if readings:
            path = "/metrics/" + metric.replace("_", "-") + "/batch"
            r = client.post(path, json={"readings": readings})
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] == len(readings), r.text


def settle(client: TestClient, action: str) -> None:
    context = client.app.api.state.context  # type: ignore[attr-defined]
    if action in ("flush", "compact"):
        client.portal.call(context.ingestor.flusher.flush)  # type: ignore[union-attr]
    if action == "compact":
        assert compact(context.store, force=True, grace_s=3600) is not None


def by_metric(phases: Phases) -> dict[str, list[Reading]]:
    readings: dict[str, list[Reading]] = {metric: [] for metric in FIELDS}
    for batch, _ in phases:
        for s in batch:
            readings[s.metric].append(s.reading)
    return readings


def same_item(got: dict[str, object], want: dict[str, object], where: str) -> None:
    """Equal keys, equal text and counts, numbers within ``REL``, integers where expected."""
    assert sorted(got) == sorted(want), where
    for key, expected in want.items():
        actual = got[key]
        if isinstance(expected, float):
            assert isinstance(actual, int | float), (where, key, actual)
            assert actual == pytest.approx(expected, rel=REL), (where, key)
        elif isinstance(expected, dict):
            assert isinstance(actual, dict), (where, key, actual)
            same_item(actual, expected, f"{where}.{key}")
        else:  # strings, lists of devices, None, and integers (which must be JSON integers)
            assert actual == expected, (where, key)
            assert type(actual) is type(expected), (where, key, actual)


@dataclass(frozen=True)
class Served:
    """An app holding the example's readings, and what the reference says of them."""

    client: TestClient
    readings: dict[str, list[Reading]]
    scope: str
    zone: str

    def check_series(
        self, metric: str, user: str, span: tuple[int, int], **options: str | None
    ) -> None:
        """``GET /metrics/<metric>`` with ``options`` (None: left out) against the reference."""
        sent = {k: v for k, v in options.items() if v is not None}
        interval, tz = sent.get("interval", "1m"), sent.get("tz", "UTC")
        stats = tuple(sent["stats"].split(",")) if "stats" in sent else ()
        want = expected_data(
            self.readings[metric], user, *span, PRIORITY, self.scope, sent.get("device_id"),
            metric=metric, interval=interval, tz=tz, stats=stats,
        )  # fmt: skip
        start, end = (label(ms, self.zone) for ms in span)  # with the zone's offset
        params = {"user_id": user, "start": start, "end": end, **sent}
        r = self.client.get("/metrics/" + metric.replace("_", "-"), params=params)
        where = f"{metric} {params}"
        if not want:
            assert r.status_code == 404, (where, r.text)
            return
        assert r.status_code == 200, (where, r.text)
        body = r.json()
        assert (body["user_id"], body["count"]) == (user, len(body["data"])), where
        assert [d["timestamp"] for d in body["data"]] == [d["timestamp"] for d in want], where
        for got, expected in zip(body["data"], want, strict=True):
            same_item(got, expected, f"{where} {expected['timestamp']}")

    def check_summary(self, user: str, span: tuple[int, int]) -> None:
        want = expected_summary(self.readings, user, *span, PRIORITY, self.scope, self.zone)
        start, end = (label(ms, self.zone) for ms in span)
        params = {"user_id": user, "start": start, "end": end, "tz": self.zone}
        r = self.client.get("/summary", params=params)
        if want is None:
            assert r.status_code == 404, (params, r.text)
            return
        assert r.status_code == 200, (params, r.text)
        same_item(r.json(), want, f"summary {params}")


@contextmanager
def served(scope: str, case: str, phases: Phases) -> Iterator[Served]:
    """A fresh app in its own directory (an example cannot use ``tmp_path``), fed ``phases``."""
    zone = CASES[case][0]
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(
            data_dir=Path(root) / "data",
            flush_interval_s=3600,
            recovery_interval_s=3600,
            compact_interval_s=3600,
        )
        with make_client(settings, priority_scope=scope) as client:
            for batch, action in phases:
                post(client, batch, zone)
                settle(client, action)
            yield Served(client, by_metric(phases), scope, zone)


def window(pivot: int, interval: str) -> tuple[int, int]:
    """The queried range: every reading, or two hours around the pivot for ``1s`` buckets."""
    if interval == "1s":
        return pivot - HOUR_MS, pivot + HOUR_MS
    return pivot - SPAN_MS, pivot + SPAN_MS


@pytest.mark.parametrize("scope", ["bucket", "timestamp"])
@EXAMPLES
@given(
    plan=phases_st(FIELDS),
    stats=st.sampled_from([None, "min,max,count", "count", "max,min"]),
    device=st.sampled_from(["device_b", "watch_x"]),
)
def test_every_interval_and_the_summary_match_the_reference(
    scope: str, plan: Plan, stats: str | None, device: str
) -> None:
    case, phases = plan
    zone, pivot = CASES[case]
    with served(scope, case, phases) as app:
        for metric in FIELDS:
            for interval in INTERVALS:
                span = window(pivot, interval)
                app.check_series(metric, "u1", span, interval=interval, tz=zone, stats=stats)
        for user in ("u1", "u2"):
            app.check_summary(user, window(pivot, "1h"))
        # one device alone: no priority
        span = window(pivot, "1h")
        app.check_series("steps", "u2", span, interval="1h", tz=zone, device_id=device)


@pytest.mark.parametrize("scope", ["bucket", "timestamp"])
@EXAMPLES
@given(plan=phases_st(["heart_rate"]))
def test_the_default_series_is_per_utc_minute(scope: str, plan: Plan) -> None:
    """No interval, tz or stats: heart rate per UTC minute, written with ``Z``."""
    case, phases = plan
    with served(scope, case, phases) as app:
        for user in ("u1", "u2"):
            app.check_series("heart_rate", user, window(CASES[case][1], "1m"))
