"""API keys: every route but /healthz needs one when keys are set; without keys, local clients only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

import app.auth
from app import create_app
from app.services import services
from cli.main import main as gptoss
from tests.support.apps import api_app, app_config
from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.ports import fresh_port
from tests.support.services import IDLE_REDIS_DB

KEYS = "sk-first-key, sk-second-key"
HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def keyed_app(test_dir: Path, profiles_file: Path, database_url: str, redis_base_url: str) -> Iterator[Flask]:
    config = app_config(test_dir, profiles_file, database_url, f"{redis_base_url}/{IDLE_REDIS_DB}")
    with api_app({**config, "API_KEYS": KEYS}) as app:
        yield app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_code(response: Any, status: int = 401) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"type", "message", "param", "code"}
    return str(error["code"])


ROUTES = [
    ("get", "/v1/jobs"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/job_x/events"),  # SSE
    ("post", "/v1/chat/completions"),
    ("get", "/v1/models"),
    ("post", "/tokenize"),  # at the root, as vLLM serves it, and keyed like /v1
    ("post", "/detokenize"),
    ("get", "/v1/batches"),
    ("get", "/v1/files"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/no/such/route"),  # no hint which routes exist
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_but_healthz_needs_a_key(keyed_app: Flask, method: str, path: str) -> None:
    client = keyed_app.test_client()
    response = getattr(client, method)(path, json=HELLO if method == "post" else None)
    assert error_code(response) == "missing_api_key"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = getattr(client, method)(
        path, headers=bearer("sk-wrong"), json=HELLO if method == "post" else None
    )
    assert error_code(wrong) == "invalid_api_key"


def test_healthz_is_open_and_either_key_works(keyed_app: Flask) -> None:
    client = keyed_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/jobs", headers=bearer("sk-first-key")).status_code == 200
    assert client.get("/metrics", headers=bearer("sk-second-key")).status_code == 200
    assert client.get("/v1/jobs", headers={"Authorization": "Basic sk-first-key"}).status_code == 401
    submitted = client.post("/v1/jobs", json=HELLO, headers=bearer("sk-second-key"))
    assert submitted.status_code == 202
    events = client.get(f"/v1/jobs/{submitted.get_json()['id']}/events", headers=bearer("sk-first-key"))
    assert events.status_code == 200 and events.mimetype == "text/event-stream"
    events.close()


def test_keys_are_compared_in_constant_time_against_every_key(
    keyed_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = app.auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app.auth.hmac, "compare_digest", spy)
    assert keyed_app.test_client().get("/v1/jobs", headers=bearer("sk-first-key")).status_code == 200
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)  # digests, no early exit


def test_keys_come_from_the_environment_at_start(
    monkeypatch: pytest.MonkeyPatch,
    test_dir: Path,
    profiles_file: Path,
    database_url: str,
    redis_base_url: str,
) -> None:
    monkeypatch.setenv("GPTOSS_API_KEYS", "sk-from-env")
    config = app_config(test_dir, profiles_file, database_url, f"{redis_base_url}/{IDLE_REDIS_DB}")
    app = create_app(config)
    monkeypatch.delenv("GPTOSS_API_KEYS")  # read once, at start
    client = app.test_client()
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers=bearer("sk-from-env")).status_code == 200
    services(app).db_engine.dispose()


def test_without_keys_only_local_clients_are_served(idle_client: FlaskClient) -> None:
    assert idle_client.get("/v1/jobs").status_code == 200
    assert idle_client.get("/v1/jobs", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    remote = idle_client.get("/v1/jobs", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert error_code(remote) == "api_keys_not_configured"
    assert idle_client.get("/healthz", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_without_keys_the_app_warns_at_start(
    caplog: pytest.LogCaptureFixture, test_dir: Path, profiles_file: Path, database_url: str
) -> None:
    with caplog.at_level("WARNING", logger="app.auth"):
        app = create_app(app_config(test_dir, profiles_file, database_url, "redis://127.0.0.1:9/0"))
    assert "no API keys configured" in caplog.text and "127.0.0.1 only" in caplog.text
    services(app).db_engine.dispose()


def this_machines_other_address() -> str | None:
    """A non-loopback address of this machine, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_gunicorn_without_keys_binds_loopback_even_when_asked_for_all_interfaces(
    tmp_path: Path, profiles_file: Path, redis_base_url: str
) -> None:
    port = fresh_port()
    env = {
        **os.environ,
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gptoss.db'}",  # /healthz reads no database
        "REDIS_URL": f"{redis_base_url}/{IDLE_REDIS_DB}",
        "GPTOSS_DATA_DIR": str(tmp_path),
    }
    env.pop("GPTOSS_API_KEYS", None)
    command = [sys.executable, "-m", "gunicorn", "--bind", f"0.0.0.0:{port}", "app:create_app()"]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
        assert f"binding 127.0.0.1:{port} instead of 0.0.0.0:{port}" in log_path.read_text()
        other = this_machines_other_address()
        if other is not None:
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://{other}:{port}/healthz", timeout=2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_cli_sends_gptoss_api_key(keyed_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPTOSS_API_KEY", raising=False)
    with serve(keyed_app) as url:
        with pytest.raises(SystemExit, match="401"):
            gptoss(["--url", url, "status", "job_nope"])
        monkeypatch.setenv("GPTOSS_API_KEY", "sk-first-key")
        with pytest.raises(SystemExit, match="404"):  # past the key check: no such job
            gptoss(["--url", url, "status", "job_nope"])
