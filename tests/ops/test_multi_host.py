"""The system as several hosts on this machine: network namespaces on a bridge, each process started
on its own with GPTOSS_MULTI_HOST=1, Redis and Postgres reached by address.

The API, the batch worker and Flower run in namespace "api"; a latency_first worker runs in each of
"a" and "b". Redis is a redis-server bound to the bridge address; Postgres (loopback only here) is
reached through a forwarder on it. Phase timings are printed (`-s`) and carried in failure messages.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from app.jobs.events import events_key
from app.ops.private_redis import redis_answers, redis_server_binary
from tests.support.batches import request_line, start_batch_over_http
from tests.support.cluster import FAST_RECOVERY
from tests.support.leftovers import processes_with
from tests.support.netns import Hosts, hosts, tcp_forwarder
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import FINISHED, TEST_DATE
from tests.support.services import migrate, postgres_database

pytestmark = pytest.mark.slow

MARK = "GPTOSS_TEST_MULTI_HOST"  # every process of this test carries it: what is left is findable
API_KEY = "multi-host-key"
API_PORT, FLOWER_PORT, METRICS_PORT = 8000, 5555, 9101  # each namespace has its own ports
WORKERS = {"a": "latency_first@host-a", "b": "latency_first@host-b"}
QUIET = ["--without-gossip", "--without-mingle"]  # as the Procfile starts the batch worker
HELLO = [{"role": "user", "content": "hello"}]  # greedy tiny model: runs to max_tokens


@dataclass
class Deployment:
    hosts: Hosts
    env: dict[str, str]
    logs: Path
    redis_url: str  # as this (root) namespace reaches it
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def start(self, name: str, host: str, argv: list[str], **env: str) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                self.hosts.command(host, argv), cwd=REPO_ROOT, env={**self.env, **env},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    @property
    def url(self) -> str:
        return f"http://{self.hosts.addresses['api']}:{API_PORT}"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)

    def until(self, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if found := check():
                    return found
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited:\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{what}: not in {timeout} s; timings {self.timings}"
            time.sleep(0.1)

    def phase(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 2)


@contextmanager
def redis_server(address: str, folder: Path) -> Iterator[int]:
    """A redis-server of this test alone, listening on `address` (the bridge) only."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [redis_server_binary(), "--bind", address, "--port", str(port), "--dir", str(folder), "--save", "",
         "--appendonly", "no", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(f"redis://{address}:{port}/0"):
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.kill()
        server.wait()


def kill_everything(deployment: Deployment, token: str) -> None:
    for process in deployment.processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for pid, _ in processes_with(token, MARK):  # engine children, anything double-forked
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def deployment(
    tmp_path: Path, test_dir: Path, tiny_model_dir: Path, postgres_admin_url: str
) -> Iterator[Deployment]:
    """Namespaces, Redis, Postgres by address; the API, batch worker, Flower and two workers started."""
    started = time.monotonic()
    token = uuid.uuid4().hex
    with ExitStack() as stack:
        net = stack.enter_context(hosts(("api", "a", "b")))
        bridge = net.bridge_address
        redis_port = stack.enter_context(redis_server(bridge, tmp_path))
        database = stack.enter_context(
            postgres_database(postgres_admin_url, f"gptoss_multihost_{os.getpid()}")
        )
        migrate(database)
        local = sa.make_url(database)
        pg_port = stack.enter_context(tcp_forwarder(bridge, (local.host or "127.0.0.1", local.port or 5432)))
        profiles = tmp_path / "profiles.toml"
        profiles.write_text(
            f'[profiles.latency_first]\nmodel = "{tiny_model_dir}"\nmodel_size = "20b"\n'
            'gpu_mode = "pipeline"\nmax_batch = 4\nmax_tokens = 1024\ntemperature = 0.0\n'
        )
        env = {
            **os.environ,
            MARK: token,
            "PYTHONPATH": str(REPO_ROOT),
            "GPTOSS_MULTI_HOST": "1",
            "DATABASE_URL": local.set(host=bridge, port=pg_port).render_as_string(hide_password=False),
            "REDIS_URL": f"redis://{bridge}:{redis_port}/0",
            "GPTOSS_DATA_DIR": str(test_dir),  # the model cache and batch files: one shared folder here
            "GPTOSS_PROFILES": str(profiles),
            "GPTOSS_API_KEYS": API_KEY,
            "GPTOSS_GATE_SCHEDULE_S": "0",
            "GPTOSS_CACHE_MAX_ENTRIES": "0",
            "GPTOSS_BATCH_CHECK_INTERVAL_S": "1",
            **{f"GPTOSS_{key}": str(value) for key, value in FAST_RECOVERY.items()},
            "GPTOSS_WORKER_METRICS_PORT": str(METRICS_PORT),
        }
        deployment = Deployment(net, env, tmp_path, f"redis://{bridge}:{redis_port}/0")
        stack.callback(kill_everything, deployment, token)
        deployment.phase("hosts, Redis, Postgres", started)
        api = net.addresses["api"]
        gunicorn = ["gunicorn", "--workers", "1", "--threads", "32", "--bind", f"{api}:{API_PORT}"]
        deployment.start("api", "api", [sys.executable, "-m", *gunicorn, "app:create_app()"])
        batches = ["worker", "-Q", "batches", "-P", "threads", "-c", "4", "-n", "batches@host-api"]
        celery = [sys.executable, "-m", "celery", "-A"]
        deployment.start("batches", "api", [*celery, "make_batch_celery", *batches, *QUIET])
        flower = ["flower", f"--address={api}", f"--port={FLOWER_PORT}"]
        # Flower 2 serves its API only with auth configured, or so
        deployment.start(
            "flower", "api", [*celery, "make_celery", *flower], FLOWER_UNAUTHENTICATED_API="true"
        )
        for host, name in WORKERS.items():
            worker = [sys.executable, "-m", "workers.start", "latency_first", "--name", name]
            deployment.start(host, host, worker, GPTOSS_WORKER_METRICS_HOST=net.addresses[host])
        yield deployment


def readiness(deployment: Deployment) -> dict[str, Any]:
    with deployment.http() as http:
        return http.get("/readyz", params={"profile": "latency_first"}).json()


def both_serving(deployment: Deployment) -> dict[str, Any] | None:
    ready = readiness(deployment)
    serving = ready["checks"]["workers"]["latency_first"]
    return ready if ready["status"] == "ready" and sorted(serving) == sorted(WORKERS.values()) else None


def flower_workers(deployment: Deployment) -> set[str] | None:
    url = f"http://{deployment.hosts.addresses['api']}:{FLOWER_PORT}/api/workers"
    listed = set(httpx.get(url, params={"refresh": "true"}, timeout=10).json())
    return listed if set(WORKERS.values()) <= listed else None


def submit(http: httpx.Client, **body: Any) -> str:
    response = http.post("/v1/jobs", json={"current_date": TEST_DATE, "profile": "latency_first", **body})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finished(http: httpx.Client, job_ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [http.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]
    return jobs if all(job["status"] in FINISHED for job in jobs) else None


def first_running(http: httpx.Client, job_ids: list[str]) -> dict[str, Any] | None:
    jobs = (http.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids)
    return next((job for job in jobs if job["first_token_at"]), None)


def test_the_system_runs_as_several_hosts(deployment: Deployment) -> None:
    d, timings = deployment, deployment.timings
    started = time.monotonic()
    ready = d.until("both workers serving on /readyz", lambda: both_serving(d))
    d.phase("processes up, both workers ready on /readyz", started)
    assert ready["profiles"] == {"latency_first": "ready"}
    beats = ready["checks"]["worker_heartbeats"]["latency_first"]
    assert {(w["name"], w["state"]) for w in beats} == {(name, "serving") for name in WORKERS.values()}
    started = time.monotonic()
    listed = d.until("Flower lists both workers", lambda: flower_workers(d), timeout=30)
    assert "batches@host-api" in listed
    for host in WORKERS:  # each worker's /metrics on its own host's address
        metrics = httpx.get(f"http://{d.hosts.addresses[host]}:{METRICS_PORT}/metrics", timeout=10)
        assert metrics.status_code == 200
    d.phase("Flower, metrics", started)

    with d.http() as http:
        started = time.monotonic()
        job_ids = [submit(http, prompt=f"spread {i}", max_tokens=24) for i in range(16)]
        jobs = d.until("16 short jobs", lambda: finished(http, job_ids), timeout=60)
        assert {job["status"] for job in jobs} == {"succeeded"}, timings
        assert {job["worker"] for job in jobs} == set(WORKERS.values()), (jobs, timings)
        d.phase("16 jobs spread over both", started)

        started = time.monotonic()
        lines = [request_line(f"line-{i}", f"line {i}", max_tokens=2) for i in range(200)]
        batch_id = start_batch_over_http(http, lines, "in.jsonl")
        batch = d.until(
            "the 200-line batch",
            lambda: (
                (b := http.get(f"/v1/batches/{batch_id}").json())["status"] in ("completed", "failed") and b
            ),
        )
        assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 200, batch
        output = http.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
        answers = [json.loads(line) for line in output]
        assert sorted(a["custom_id"] for a in answers) == sorted(f"line-{i}" for i in range(200))
        assert {a["response"]["status_code"] for a in answers} == {200}
        d.phase("200-line batch, outputs read", started)

        started = time.monotonic()
        long_ids = [submit(http, messages=HELLO, max_tokens=200) for _ in range(4)]
        running = d.until("a long job running", lambda: first_running(http, long_ids))
        victim = next(host for host, name in WORKERS.items() if name == running["worker"])
        survivor = WORKERS["b" if victim == "a" else "a"]
        os.killpg(d.processes.pop(victim).pid, signal.SIGKILL)  # no warm shutdown: its tasks stay unacked
        done = d.until("the long jobs after the kill", lambda: finished(http, long_ids), timeout=90)
        d.phase("SIGKILL mid-job, jobs finished on the other", started)
        client = redis.Redis.from_url(d.redis_url)
        for job in done:
            assert job["status"] == "succeeded" and job["usage"]["completion_tokens"] == 200, (job, timings)
            assert job["worker"] == survivor, (job, timings)
            events = [f[b"type"].decode() for _, f in client.xrange(events_key(job["id"]))]  # type: ignore[union-attr]
            assert [t for t in events if t in ("done", "error", "cancelled")] == ["done"], (job, timings)
        assert any(job["attempts"] == 2 for job in done), (done, timings)
    print(f"\nmulti-host phase timings (s): {timings}")
