"""Screenshots of the dashboard for the README: ``.venv/bin/python ops/screenshots.py``.

Starts the service (real gunicorn, 2 workers) on a temporary data dir, sends a made-up day
of one user's readings (two devices, a run in the morning), opens ``/dashboard`` in
headless chromium and writes ``dashboard-desktop.png`` (1280 px wide) and
``dashboard-375.png`` (a 375 px phone) into ``--out`` (default ``ops/screenshots``). It
prints the page's weight and load time as the browser measured them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.browser import Browser
from ops.server import start_service

USER = "alice"
READY = "document.body.dataset.state === 'ready'"
WEIGHT = """(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const all = [nav, ...performance.getEntriesByType("resource")];
  return {bytes: all.reduce((n, e) => n + (e.encodedBodySize || 0), 0), requests: all.length,
          load_ms: Math.round(nav.loadEventEnd), ready_ms: Math.round(performance.now())};
})()"""


def heart_rate(minute_of_day: float, rng: random.Random) -> float:
    """A plausible day: low at night, higher by day, a run at 07:00-07:45."""
    hour = minute_of_day / 60
    base = 56 + 14 * (1 - math.cos(2 * math.pi * (hour - 3) / 24)) / 2 * 1.6
    if 7 <= hour < 7.75:
        base = 120 + 35 * math.sin(math.pi * (hour - 7) / 0.75)
    return round(min(200, max(40, base + rng.gauss(0, 3))), 1)


def sample_records(now_s: float, hours: int = 24, seed: int = 17) -> list[dict[str, object]]:
    """Records of ``USER`` every 30 s over the ``hours`` before ``now_s``: heart rate from a
    watch, or a chest strap during the run; steps and calories each minute."""
    rng = random.Random(seed)
    start = int(now_s // 60 * 60) - hours * 3600
    records: list[dict[str, object]] = []
    for k in range(hours * 120):
        t = start + 30 * k
        day_minute = (t % 86_400) / 60
        running = 7 * 60 <= day_minute < 7 * 60 + 45
        record: dict[str, object] = {
            "user_id": USER,
            "device_id": "chest-strap" if running else "watch",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
            "heart_rate": heart_rate(day_minute, rng),
        }
        awake = 7 * 60 <= day_minute < 22 * 60
        if k % 2 == 0 and awake:
            walking = running or rng.random() < 0.25
            record["steps"] = rng.randint(150, 180) if running else rng.randint(40, 110) * walking
            record["calories"] = round((11 if running else 1.4) + rng.random(), 2)
        records.append(record)
    return records


def post(port: int, records: list[dict[str, object]], batch: int = 2000) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(0, len(records), batch):
        body = json.dumps({"readings": records[i : i + batch]})
        conn.request("POST", "/readings", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        answer = r.read()
        if r.status != 202:
            raise SystemExit(f"POST /readings answered {r.status}: {answer[:300]!r}")
    conn.close()


def shoot(url: str, out: Path) -> None:
    page = f"{url}/dashboard#user={USER}&range=24h&interval=5m"
    with Browser(width=1280, height=900) as browser:
        browser.open(page)
        browser.wait_for(READY, 60, "the dashboard")
        print("desktop:", browser.evaluate(WEIGHT))
        browser.evaluate("document.activeElement.blur()")
        browser.screenshot(out / "dashboard-desktop.png")
        browser.viewport(375, 812, mobile=True)
        browser.open(page)
        browser.wait_for(READY, 60, "the dashboard at 375 px")
        width = browser.evaluate("document.documentElement.scrollWidth")
        print("375 px: page width", width, "(wider than 375 would scroll sideways)")
        browser.screenshot(out / "dashboard-375.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hr-screens-") as tmp:
        server = start_service(Path(tmp) / "data", Path(tmp) / "gunicorn.log", workers=2)
        try:
            post(server.port, sample_records(time.time()))
            shoot(server.url, args.out)
        finally:
            server.stop()
    for name in ("dashboard-desktop.png", "dashboard-375.png"):
        print(args.out / name, (args.out / name).stat().st_size // 1024, "KB")


if __name__ == "__main__":
    main()
