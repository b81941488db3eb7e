"""The shipped Prometheus, alerting and Grafana files are valid and name real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service import metrics

MONITORING = Path(__file__).resolve().parents[2] / "ops" / "monitoring"
KNOWN = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}


def referenced(text: str) -> set[str]:
    names = set(re.findall(r"\bhr_[a-z_]+", text))
    return {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names}


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    known = {re.sub(r"_total$", "", n) for n in KNOWN}
    for name in ("alerts.yml", "grafana-dashboard.json"):
        unknown = referenced((MONITORING / name).read_text()) - known
        assert not unknown, f"{name} names metrics the service does not export: {unknown}"


def test_the_dashboard_shows_every_exported_metric() -> None:
    shown = referenced((MONITORING / "grafana-dashboard.json").read_text())
    missing = {n for n in KNOWN if re.sub(r"_total$", "", n) not in shown}
    assert not missing, f"metrics missing from the dashboard: {sorted(missing)}"


def test_dashboard_is_valid_json_with_panels() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert len(dashboard["panels"]) >= 8
    assert all(p["targets"] for p in dashboard["panels"])
