"""The Grafana dashboard (charts/pgbackup-operator/files/dashboard.json): valid JSON Grafana can import, panels that
query only metrics the operator exports, through the ${datasource} variable; shipped as a sidecar ConfigMap."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_alerts import CHART, NAMESPACE, needs_helm, needs_promtool, of_kind, promtool, render

DASHBOARD = CHART / "files" / "dashboard.json"

# The metric names of the metrics contract (issue 7): the operator exports these and nothing else.
CONTRACT_METRICS = frozenset({
    "pgbackup_last_backup_success_timestamp_seconds",
    "pgbackup_last_backup_failure_timestamp_seconds",
    "pgbackup_last_backup_size_bytes",
    "pgbackup_last_backup_duration_seconds",
    "pgbackup_backup_schedule_interval_seconds",
    "pgbackup_backups",
    "pgbackup_backups_size_bytes",
    "pgbackup_backup_size_median_bytes",
    "pgbackup_last_verification_success",
    "pgbackup_last_verification_timestamp_seconds",
    "pgbackup_last_verification_restore_seconds",
    "pgbackup_rpo_seconds",
    "pgbackup_rpo_objective_seconds",
    "pgbackup_rto_seconds",
    "pgbackup_rto_objective_seconds",
    "pgbackup_objectives_met",
    "pgbackup_wal_lag_seconds",
    "pgbackup_wal_lag_bytes",
    "pgbackup_wal_last_archived_timestamp_seconds",
    "pgbackup_wal_gaps",
    "pgbackup_wal_slot_retained_bytes",
    "pgbackup_wal_slot_retained_limit_bytes",
    "pgbackup_wal_archiving_ok",
    "pgbackup_policy_ready",
    "pgbackup_restore_requests",
    "pgbackup_reconcile_errors_total",
})

# Names in an expression that are not metrics.
PROMQL_WORDS = frozenset({
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "time", "abs", "by", "on", "without",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "histogram_quantile", "label_values",
    "clamp_min", "vector", "topk", "bottomk",
})

# What issue 7 asks the dashboard to show, as the metrics a panel must query.
REQUIRED_METRICS = CONTRACT_METRICS - {"pgbackup_backup_schedule_interval_seconds"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside a collapsed row
    return found


def queries() -> list[str]:
    exprs = [target["expr"] for panel in panels() for target in panel.get("targets", [])]
    exprs += [variable["query"]["query"] for variable in dashboard()["templating"]["list"]
              if variable["type"] == "query"]
    return exprs


def metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that are metric names: strings, label matchers, grouping label lists,
    ranges and Grafana variables taken out first."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r",\s*\w+\s*\)", ")", expr)  # label_values(metric, label)
    return {word for word in re.findall(r"[A-Za-z_:][\w:]*", expr) if word not in PROMQL_WORDS}


def test_dashboard_is_valid_grafana_json() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"] == "pgbackup-operator"
    assert board["title"]
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the dashboard"


def test_datasource_is_a_template_variable() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"]), panel["title"]
    for name in ("namespace", "policy"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_every_panel_queries_only_exported_metrics() -> None:
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel.get("description"), f"panel {panel['title']!r} does not say what it shows"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']!r} queries no metric: {target['expr']}"
            assert names <= CONTRACT_METRICS, f"{panel['title']!r} queries unknown {names - CONTRACT_METRICS}"
            if "namespace" not in target["expr"] and "kind" not in target["expr"]:
                pytest.fail(f"{panel['title']!r} ignores the namespace variable: {target['expr']}")


def test_metric_name_check_catches_a_misspelt_metric() -> None:
    assert metric_names('max by (namespace) (pgbackup_wal_lag_secs{namespace=~"$namespace"})') == \
        {"pgbackup_wal_lag_secs"}
    assert metric_names("sum by (kind) (rate(pgbackup_reconcile_errors_total[$__rate_interval]))") == \
        {"pgbackup_reconcile_errors_total"}


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    shown = set().union(*(metric_names(expr) for expr in queries()))
    assert REQUIRED_METRICS <= shown, f"no panel shows {sorted(REQUIRED_METRICS - shown)}"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's variables replaced by plain values)."""
    rules = []
    for number, expr in enumerate(queries()):
        if expr.startswith("label_values("):
            continue
        plain = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$policy", ".*")
        rules.append({"record": f"dashboard:query_{number}", "expr": plain})
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(tmp_path / "queries.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_dashboard_config_map_renders_only_when_enabled() -> None:
    assert not of_kind(render(), "ConfigMap")
    (config_map,) = of_kind(render("monitoring.grafanaDashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    (content,) = config_map["data"].values()
    assert json.loads(content) == dashboard()


@needs_helm
def test_dashboard_config_map_can_go_to_grafanas_namespace() -> None:
    (config_map,) = of_kind(render("monitoring.grafanaDashboard.enabled=true",
                                   "monitoring.grafanaDashboard.namespace=monitoring",
                                   "monitoring.grafanaDashboard.annotations.grafana_folder=Backups"), "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Backups"}
