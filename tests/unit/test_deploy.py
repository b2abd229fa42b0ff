"""The deployment files: Compose accepts them, Prometheus scrapes what runs, the dashboard asks
only for metrics zonepurge exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from zonepurge.metrics import exposition

ROOT = Path(__file__).parents[2]


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "scripts/test installs docker-compose; run the suite through it"
    return ["docker-compose"]


@pytest.mark.parametrize("profile", [[], ["--profile", "monitoring"]])
def test_compose_accepts_the_file_with_and_without_the_monitoring_profile(profile):
    result = subprocess.run([*compose_command(), *profile, "config", "--services"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {"redis", "worker", "ingest", "sandbox", "prometheus", "grafana"} <= set(result.stdout.split())


def test_monitoring_runs_only_with_its_profile():
    services = compose()["services"]
    profiled = {name for name, service in services.items() if "profiles" in service}
    assert profiled == {"prometheus", "grafana"}
    assert all(services[name]["profiles"] == ["monitoring"] for name in profiled)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_redis_persists_with_the_append_only_file_and_workers_can_scale():
    services = compose()["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    for name in ("redis", "worker", "ingest", "sandbox"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_prometheus_scrapes_the_workers_and_the_ingest_where_they_listen():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    services = compose()["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["zonepurge-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"]
    assert str(worker_sd["port"]) == services["worker"]["environment"]["ZONEPURGE_METRICS_PORT"]
    [ingest_target] = jobs["zonepurge-ingest"]["static_configs"][0]["targets"]
    host, port = ingest_target.split(":")
    assert host == "ingest" and port in services["ingest"]["command"]
    mounted = services["prometheus"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).resolve() == (ROOT / "deploy/prometheus/prometheus.yml").resolve()


def exported_metric_names() -> set[str]:
    text = exposition().decode() + _state_metric_names()
    names = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)", text, flags=re.MULTILINE):
        name, kind = match.groups()
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def _state_metric_names() -> str:
    """The Redis-state gauges' exposition, from a report with one of everything."""
    from prometheus_client import CollectorRegistry, generate_latest

    from zonepurge.metrics import QueueStateCollector

    report = {"lanes": [{"zone": "z", "environment": "production", "kind": "files", "mode": "purge",
                         "pending": 1, "in_flight": 0, "oldest_pending_age_s": 1.0}],
              "dead_letters": 0, "budget": {"default": {"urls": {"tokens": 1.0, "closed_for_s": 0.0}}},
              "paused_zones": [{"zone": "z"}]}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueStateCollector(lambda: report))
    return generate_latest(registry).decode()


def test_the_dashboard_asks_only_for_metrics_zonepurge_exports():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/zonepurge.json").read_text())
    exported = exported_metric_names()
    asked = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            asked |= set(re.findall(r"\bzonepurge_[a-z_]+", target["expr"]))
    assert asked, "the dashboard queries nothing"
    assert asked - exported == set()
    provisioning = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/zonepurge.yml").read_text())
    assert provisioning["providers"][0]["options"]["path"] in " ".join(compose()["services"]["grafana"]["volumes"])
