"""The chart's monitoring extras: the PrometheusRule's alerts fire on failing series and stay silent on healthy ones
(`promtool test rules` on tests/unit/alerts/*.yaml), and the ServiceMonitor scrapes the metrics Service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pgbackup-operator"
HELM = ROOT / ".tools" / "bin" / "helm"
ALERT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.yaml"))
RELEASE, NAMESPACE = "pgb", "backup-system"
PROMTOOL = shutil.which("promtool")

needs_helm = pytest.mark.skipif(not HELM.exists(), reason=f"helm is not at {HELM}: run `make tools`")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed: `apt-get install prometheus` (scripts/install-deps.sh)")

ISSUE_ALERTS = {
    "PgBackupFailed", "PgBackupMissing", "PgBackupVerificationFailed", "PgBackupVerificationStale",
    "PgBackupObjectivesMissed", "PgBackupWALLagHigh", "PgBackupWALGap", "PgBackupWALArchivingDown",
    "PgBackupReplicationSlotRetainingTooMuch", "PgBackupWALSpoolFilling", "PgBackupSizeAnomaly", "PgBackupOperatorReconcileErrors",
}


def helm_template(*sets: str, json_sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`helm template` with --set values (strings, integers, booleans) and --set-json ones (e.g. fractions)."""
    args = [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for value in sets:
        args += ["--set", value]
    for value in json_sets:
        args += ["--set-json", value]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def render(*sets: str, json_sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    result = helm_template(*sets, json_sets=json_sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def rule_spec(*sets: str, json_sets: tuple[str, ...] = ()) -> dict[str, Any]:
    (rule,) = of_kind(render("monitoring.prometheusRule.enabled=true", *sets, json_sets=json_sets), "PrometheusRule")
    return rule["spec"]


def alerts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in spec["groups"] for rule in group["rules"]}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def write_test_rules(spec: dict[str, Any], directory: Path) -> None:
    """rules.yaml for the unit tests: the rendered groups with only the summary annotation, so that a test file
    states the summary a user reads but not the whole runbook (`promtool check rules` sees the full text)."""
    for rule in alerts(spec).values():
        rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    (directory / "rules.yaml").write_text(yaml.safe_dump(spec))
    for test_file in ALERT_TESTS:
        shutil.copy(test_file, directory / test_file.name)


# ---------------------------------------------------------------- rendering


@needs_helm
def test_monitoring_extras_are_off_by_default() -> None:
    kinds = {doc["kind"] for doc in render("metrics.enabled=true")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert not [d for d in render() if d["kind"] == "ConfigMap"]


@needs_helm
def test_prometheus_rule_has_every_alert_of_the_issue_with_a_runbook() -> None:
    found = alerts(rule_spec())
    assert set(found) == ISSUE_ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert re.fullmatch(r"\d+m", rule["for"]), f"{name} fires on a single evaluation"
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        runbook = annotations["runbook"]
        assert "kubectl" in runbook, f"{name}'s runbook names no command to run"
        assert len(re.findall(r"^\d\. ", runbook, re.M)) >= 3, f"{name}'s runbook is not a list of steps"
        label = "kind" if name == "PgBackupOperatorReconcileErrors" else "policy"
        assert f"$labels.{label}" in annotations["summary"], f"{name}'s summary does not say which {label}"


@needs_helm
def test_prometheus_rule_carries_extra_labels() -> None:
    (rule,) = of_kind(render("monitoring.prometheusRule.enabled=true",
                             "monitoring.prometheusRule.labels.release=kube-prometheus-stack"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@needs_helm
@pytest.mark.parametrize("value, complaint", [
    ("monitoring.prometheusRule.thresholds.sizeChangeRatio=-1", "sizeChangeRatio"),
    ("monitoring.prometheusRule.thresholds.walLagSeconds=soon", "walLagSeconds"),
    ("monitoring.prometheusRule.thresholds.walLagSecond=60", "walLagSecond"),
    ("monitoring.serviceMonitor.interval=often", "interval"),
    ("monitoring.grafanaDashboard.enable=true", "enable"),
])
def test_bad_monitoring_values_are_rejected(value: str, complaint: str) -> None:
    result = helm_template(value)
    assert result.returncode != 0, f"--set {value} was accepted"
    assert complaint in result.stderr, result.stderr


# ---------------------------------------------------------------- promtool


@needs_helm
@needs_promtool
def test_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    result = promtool("check", "rules", str(tmp_path / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ISSUE_ALERTS)} rules found" in result.stdout


@needs_helm
@needs_promtool
@pytest.mark.parametrize("test_file", ALERT_TESTS, ids=[path.stem for path in ALERT_TESTS])
def test_alerts_fire_on_failing_series_and_stay_silent_on_healthy_ones(test_file: Path, tmp_path: Path) -> None:
    write_test_rules(rule_spec(), tmp_path)
    result = promtool("test", "rules", test_file.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
@needs_promtool
def test_thresholds_change_when_alerts_fire(tmp_path: Path) -> None:
    """wal.yaml expects a 600 s lag to fire at the default 300 s; with a 900 s threshold it must not."""
    write_test_rules(rule_spec("monitoring.prometheusRule.thresholds.walLagSeconds=900"), tmp_path)
    result = promtool("test", "rules", "wal.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "PgBackupWALLagHigh" in result.stdout + result.stderr
    lagging = alerts(rule_spec("monitoring.prometheusRule.thresholds.walLagSeconds=900",
                               "monitoring.prometheusRule.thresholds.verificationMaxAgeHours=12",
                               json_sets=("monitoring.prometheusRule.thresholds.sizeChangeRatio=0.25",)))
    assert lagging["PgBackupWALLagHigh"]["expr"].endswith("> 900")
    assert "> 0.25" in lagging["PgBackupSizeAnomaly"]["expr"]
    assert "12 * 3600" in lagging["PgBackupVerificationStale"]["expr"]


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a test that expects it to fire, next to series of a policy that must not fire."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in ALERT_TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            series = {_subject(item["series"]) for item in case["input_series"]}
            for check in case["alert_rule_test"]:
                expected = {_subject(_selector(alert["exp_labels"])) for alert in check.get("exp_alerts") or []}
                if expected:
                    firing.add(check["alertname"])
                if series - expected:
                    silent.add(check["alertname"])
    assert firing == ISSUE_ALERTS
    assert silent == ISSUE_ALERTS


def _selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def _subject(series: str) -> tuple[str, ...]:
    """What an alert is about: (namespace, policy), or the kind for the operator's own alert."""
    labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
    if "kind" in labels:
        return (labels["kind"],)
    return labels["namespace"], labels["policy"]


# ---------------------------------------------------------------- ServiceMonitor


@needs_helm
def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render("metrics.enabled=true", "monitoring.serviceMonitor.enabled=true",
                  "monitoring.serviceMonitor.interval=15s", "monitoring.serviceMonitor.labels.release=prom")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (deployment,) = of_kind(docs, "Deployment")
    assert not selector.items() <= deployment["metadata"]["labels"].items(), "selects the Service only"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert "metrics" in [port["name"] for port in service["spec"]["ports"]]


@needs_helm
def test_service_monitor_without_metrics_is_an_error() -> None:
    result = helm_template("metrics.enabled=false", "monitoring.serviceMonitor.enabled=true")
    assert result.returncode != 0
    assert "monitoring.serviceMonitor.enabled needs metrics.enabled=true" in result.stderr
