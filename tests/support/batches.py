"""Helpers shared by the Batch API tests: an app with the files/batches API, batch files, fake job ends."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.batches.ingest import ingest_batch
from app.batches.models import FileChunk
from app.batches.storage import LocalStorage
from app.db import db_session
from app.jobs import store as job_store
from app.jobs.store import JobOutcome
from app.models import JobStatus
from app.ops.private_redis import start_private_redis, stop_private_redis
from app.services import services
from tests.support.apps import FAKE_TAGS, app_config
from tests.support.paths import REPO_ROOT
from tests.support.ports import fresh_port
from workers.tasks import ingest_context


@contextmanager
def private_redis(data_dir: Path) -> Iterator[str]:
    """A redis-server of this test run alone: a shared db number is not enough, since a concurrent run's
    batch worker on the same db would take this run's tasks (and find no such batch in its database)."""
    server, url = start_private_redis(data_dir, fresh_port())
    try:
        yield url
    finally:
        stop_private_redis(server)


def batch_app(test_dir: Path, profiles_file: Path, database_url: str, redis_url: str, **config: Any) -> Flask:
    """The API with the files and batches blueprints (registered here until create_app registers them)."""
    app = create_app({**app_config(test_dir, profiles_file, database_url, redis_url), **config})
    from app.batches import files_views as files_api
    from app.batches import views as batches_api

    for blueprint in (files_api.bp, batches_api.bp):
        if blueprint.name not in app.blueprints:
            app.register_blueprint(blueprint)
    return app


def stored_ids(app: Flask) -> set[str]:
    """The ids of every file whose bytes the app's storage holds (a folder, or file_chunks rows)."""
    storage = services(app).files
    if isinstance(storage, LocalStorage):
        return {path.name for path in storage.folder.glob("file-*")} if storage.folder.exists() else set()
    with app.app_context(), db_session() as session:
        return set(session.scalars(sa.select(FileChunk.file_id).distinct()))


def request_line(custom_id: str, content: str = "Hi", **body: Any) -> str:
    body = {"model": "latency_first", "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def upload(client: FlaskClient, data: bytes, filename: str = "input.jsonl", purpose: str = "batch") -> Any:
    return client.post(
        "/v1/files",
        data={"purpose": purpose, "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def create_batch(client: FlaskClient, lines: list[str], **extra: Any) -> dict[str, Any]:
    """Upload the lines and create a batch on them (status validating)."""
    file = upload(client, ("\n".join(lines) + "\n").encode()).get_json()
    body = {
        "input_file_id": file["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **extra,
    }
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ingest(app: Flask, batch_id: str) -> str | None:
    """Run the ingest task's work now, in this process."""
    with app.app_context():
        return ingest_batch(ingest_context(app), batch_id)


def claim(app: Flask, job_id: str) -> None:
    """What a worker does first: queued -> running."""
    with app.app_context(), db_session() as session:
        assert job_store.claim_job(session, job_id, "test@host")


def finish(app: Flask, job_id: str, status: JobStatus, content: str = "", error: str | None = None) -> None:
    """What a worker does last: store the running job's outcome."""
    reason = {JobStatus.SUCCEEDED: "stop", JobStatus.CANCELLED: "cancelled"}.get(status, "error")
    outcome = JobOutcome(
        status,
        content=content,
        finish_reason=reason,
        error=error,
        prompt_tokens=3,
        completion_tokens=2,
        tags=FAKE_TAGS,
    )
    with app.app_context(), db_session() as session:
        assert job_store.finish_job(session, job_id, outcome)


def run(app: Flask, job_id: str, status: JobStatus, content: str = "", error: str | None = None) -> None:
    claim(app, job_id)
    finish(app, job_id, status, content, error)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The OpenAI-style error of a response that must have this status."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"type", "message", "param", "code"}
    return error


def jsonl(client: FlaskClient, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    return [json.loads(line) for line in response.get_data().splitlines()]


def start_batch_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The batch worker, as the Procfile's `batches` line starts it."""
    command = [
        sys.executable, "-m", "celery", "-A", "make_batch_celery", "worker", "-Q", "batches", "-P", "threads",
        "-c", "4", "-n", "batches@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_batch_worker(app: Flask, worker: subprocess.Popen[bytes], log_path: Path) -> None:
    name, deadline = f"batches@{socket.gethostname()}", time.monotonic() + 60
    while not app.extensions["celery"].control.ping(destination=[name], timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the batch worker is not up:\n{log_path.read_text()[-3000:]}")


def start_batch_over_http(http: httpx.Client, lines: list[str], filename: str = "input.jsonl") -> str:
    """Upload the request lines and create their batch over HTTP, as a client does; returns its id."""
    file = http.post("/v1/files", data={"purpose": "batch"}, files={"file": (filename, "\n".join(lines))})
    body = {
        "input_file_id": file.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    return http.post("/v1/batches", json=body).json()["id"]
