"""Webhooks on SQLite and Postgres against a real HTTP receiver on 127.0.0.1: finished jobs and batches
arrive signed (verified with the Standard Webhooks reference library), a 500 is retried, a host the
operator does not allow gets nothing, and one client never sees another's webhooks. Each test has a
database of its own, so what was delivered is exact."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask
from flask.testing import FlaskClient
from standardwebhooks import Webhook as ReferenceVerifier

from app import create_app
from app.batches.models import Batch, BatchStatus
from app.db import db_session
from app.models import Job, JobStatus, utcnow
from app.services import services
from app.settings import SettingsError, load_settings
from app.webhooks.models import WebhookDelivery
from tests.support.apps import app_config, insert_queued_job
from tests.support.batches import error_of, run
from tests.support.paths import REPO_ROOT
from tests.support.services import IDLE_REDIS_DB, empty_database, flushed_redis_url
from workers.webhooks import LOCK_KEY, WebhookReport, run_webhooks, webhook_context
from workers.webhooks import deliver as deliver_task

ALLOW_LOOPBACK = {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_INTERVAL_S": 0}


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers the next status of `answers`
    (200 once they run out)."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.received.append((dict(self.headers.items()), body))
            self.send_response(found.answers.pop(0) if found.answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    yield found
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request, tmp_path, "gptoss_webhooks") as url:
        yield url


@pytest.fixture
def config(
    test_dir: Path, profiles_file: Path, fresh_database_url: str, redis_base_url: str
) -> dict[str, Any]:
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    return {**app_config(test_dir, profiles_file, fresh_database_url, redis_url), **ALLOW_LOOPBACK}


@pytest.fixture
def app(config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(config)
    yield app
    services(app).db_engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def register(client: FlaskClient, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def finished_job(app: Flask, status: JobStatus = JobStatus.SUCCEEDED, batch_id: str | None = None) -> str:
    with app.app_context(), db_session() as session:
        job = insert_queued_job(session, "latency_first", {"prompt": "hi"})
        if batch_id is not None:
            job.batch_id = batch_id
            session.commit()
    run(app, job.id, status, "done")
    return job.id


def finished_batch(app: Flask) -> str:
    now = utcnow()
    batch = Batch(
        endpoint="/v1/chat/completions", input_file_id="file-in", completion_window="24h",
        status=BatchStatus.COMPLETED, request_total=1, request_completed=1,
        expires_at=now + timedelta(days=1), in_progress_at=now, finalizing_at=now, completed_at=now,
    )  # fmt: skip
    with app.app_context(), db_session() as session:
        session.add(batch)
        session.commit()
        return batch.id


def deliver(app: Flask, **kwargs: Any) -> WebhookReport:
    with app.app_context():
        return run_webhooks(webhook_context(app), **kwargs)


def verified(secret: str, received: tuple[dict[str, str], bytes]) -> Any:
    """The payload, once the reference implementation has checked its signature."""
    headers, body = received
    return ReferenceVerifier(secret).verify(body, headers)


def test_finished_jobs_and_batches_reach_the_receiver_signed(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    webhook = register(client, receiver.url)
    assert webhook["secret"].startswith("whsec_") and len(webhook["events"]) == 7
    job_id = finished_job(app)
    batch_id = finished_batch(app)
    finished_job(app, batch_id=batch_id)  # a batch's line: the batch's event covers it

    report = deliver(app)
    assert (report.attempts, report.delivered) == (2, 2)
    events = {event["type"]: event for event in (verified(webhook["secret"], r) for r in receiver.received)}
    assert set(events) == {"job.completed", "batch.completed"}
    job = events["job.completed"]["data"]
    assert (job["id"], job["status"], job["result"]["content"]) == (job_id, "succeeded", "done")
    batch = events["batch.completed"]["data"]
    assert (batch["id"], batch["object"], batch["request_counts"]["completed"]) == (batch_id, "batch", 1)
    headers = receiver.received[0][0]
    assert headers["webhook-id"] in {event["id"] for event in events.values()}
    assert headers["webhook-signature"].startswith("v1,")

    assert deliver(app).attempts == 0  # a second scan finds the same events and sends nothing again
    assert len(receiver.received) == 2
    attempts = client.get(f"/v1/webhooks/{webhook['id']}/deliveries").get_json()["data"]
    assert sorted(a["event_type"] for a in attempts) == ["batch.completed", "job.completed"]
    assert {(a["attempt"], a["status_code"], a["error"], a["delivery_status"]) for a in attempts} == {
        (1, 200, None, "delivered")
    }


def test_a_webhook_gets_only_the_events_it_asked_for(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    webhook = register(client, receiver.url, events=["job.failed"])
    assert webhook["events"] == ["job.failed"]
    finished_job(app, JobStatus.SUCCEEDED)
    failed = finished_job(app, JobStatus.FAILED)
    finished_job(app, JobStatus.CANCELLED)
    assert deliver(app).delivered == 1
    event = verified(webhook["secret"], receiver.received[0])
    assert (event["type"], event["data"]["id"]) == ("job.failed", failed)
    register(client, receiver.url)  # registered now: the events that came before it are not its own
    assert deliver(app).attempts == 0


def test_a_500_is_retried_with_backoff_and_delivered_once(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    webhook = register(client, receiver.url)
    receiver.answers = [500]
    finished_job(app)
    assert (deliver(app).attempts, len(receiver.received)) == (1, 1)
    assert deliver(app).attempts == 0  # the retry waits WEBHOOK_FIRST_RETRY_S (5 s)
    report = deliver(app, now=utcnow() + timedelta(seconds=6))
    assert (report.attempts, report.delivered) == (1, 1)
    assert deliver(app, now=utcnow() + timedelta(hours=1)).attempts == 0  # delivered: never again

    first, second = (verified(webhook["secret"], r) for r in receiver.received)
    assert first == second  # the same event, same id: a receiver can drop a repeat
    attempts = client.get(f"/v1/webhooks/{webhook['id']}/deliveries").get_json()["data"]  # newest first
    assert [(a["attempt"], a["status_code"], a["delivery_status"]) for a in attempts] == [
        (2, 200, "delivered"),
        (1, 500, "pending"),
    ]
    assert {a["event_id"] for a in attempts} == {first["id"]}


def test_a_delivery_that_never_succeeds_fails_a_day_after_its_first_attempt(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    register(client, receiver.url)
    receiver.answers = [503] * 10
    finished_job(app)
    start = utcnow() + timedelta(seconds=1)  # after the delivery is recorded
    assert deliver(app, now=start).attempts == 1
    assert deliver(app, now=start + timedelta(hours=23)).attempts == 1  # backoff: one try, not seven
    report = deliver(app, now=start + timedelta(hours=24, seconds=1))
    assert (report.attempts, report.failed) == (1, 1)
    assert deliver(app, now=start + timedelta(days=3)).attempts == 0
    with app.app_context(), db_session() as session:
        assert session.scalar(sa.select(WebhookDelivery.status)) == "failed"


def test_a_host_the_operator_does_not_allow_gets_nothing(
    config: dict[str, Any], app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    elsewhere = receiver.url.replace("127.0.0.1", "127.0.0.2")
    error = error_of(client.post("/v1/webhooks", json={"url": elsewhere}), 400)
    assert (error["param"], error["code"]) == ("url", "webhook_host_not_allowed")
    assert "127.0.0.2" in error["message"]
    closed = create_app({**config, "WEBHOOK_ALLOWED_HOSTS": ""})
    error = error_of(closed.test_client().post("/v1/webhooks", json={"url": receiver.url}), 400)
    assert "allows no webhook hosts" in error["message"]
    services(closed).db_engine.dispose()

    webhook = register(client, receiver.url)  # allowed when registered; then the operator narrows the list
    finished_job(app)
    narrowed = create_app({**config, "WEBHOOK_ALLOWED_HOSTS": "10.0.0.0/8, hooks.example.com"})
    report = deliver(narrowed)
    services(narrowed).db_engine.dispose()
    assert (report.attempts, report.failed) == (1, 1)
    assert receiver.received == []
    attempt = client.get(f"/v1/webhooks/{webhook['id']}/deliveries").get_json()["data"][0]
    assert attempt["status_code"] is None and "not in the operator's allowed hosts" in attempt["error"]
    assert attempt["delivery_status"] == "failed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://127.0.0.1/hooks"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hooks"}, "url"),
        ({"url": "http://127.0.0.1/hooks", "events": ["job.started"]}, "events[0]"),
        ({"url": "http://127.0.0.1/hooks", "events": []}, "events"),
        ({"url": "http://127.0.0.1/hooks", "secret": "mine"}, "secret"),
    ],
)
def test_a_bad_registration_is_a_400_naming_the_field(
    client: FlaskClient, body: dict[str, Any], param: str
) -> None:
    assert error_of(client.post("/v1/webhooks", json=body), 400)["param"] == param


def alices_webhook(config: dict[str, Any], receiver: Receiver) -> tuple[Flask, dict, dict, dict[str, Any]]:
    """An app with two keys (alice's and bob's headers) and a webhook of alice's."""
    app = create_app({**config, "API_KEYS": "sk-alice,sk-bob"})
    alice, bob = ({"Authorization": f"Bearer sk-{name}"} for name in ("alice", "bob"))
    webhook = app.test_client().post("/v1/webhooks", json={"url": receiver.url}, headers=alice).get_json()
    return app, alice, bob, webhook


def test_each_client_sees_and_deletes_only_its_own_webhooks(
    config: dict[str, Any], receiver: Receiver
) -> None:
    app, alice, bob, webhook = alices_webhook(config, receiver)
    client = app.test_client()
    path = f"/v1/webhooks/{webhook['id']}"
    assert client.get("/v1/webhooks", headers=bob).get_json()["data"] == []
    for answer in (
        client.get(path, headers=bob),
        client.get(f"{path}/deliveries", headers=bob),
        client.delete(path, headers=bob),
    ):
        assert error_of(answer, 404)["code"] == "webhook_not_found"
    listed = client.get("/v1/webhooks", headers=alice).get_json()["data"]
    assert [item["id"] for item in listed] == [webhook["id"]] and "secret" not in listed[0]
    assert "secret" not in client.get(path, headers=alice).get_json()
    assert client.delete(path, headers=alice).get_json() == {
        "id": webhook["id"],
        "object": "webhook.deleted",
        "deleted": True,
    }
    assert client.get(path, headers=alice).status_code == 404
    services(app).db_engine.dispose()


def test_the_migration_goes_down_and_up_again(fresh_database_url: str) -> None:
    alembic = AlembicConfig(str(REPO_ROOT / "alembic.ini"))
    alembic.set_main_option("sqlalchemy.url", fresh_database_url)
    alembic.attributes["configure_logger"] = False
    command.downgrade(alembic, "0008_retention")
    engine = sa.create_engine(fresh_database_url.replace("postgresql://", "postgresql+psycopg://"))
    assert "webhooks" not in sa.inspect(engine).get_table_names()
    command.upgrade(alembic, "head")
    assert {"webhooks", "webhook_deliveries", "webhook_attempts", "webhook_scans"} <= set(
        sa.inspect(engine).get_table_names()
    )
    engine.dispose()


def test_celery_beat_runs_the_sender_on_the_batch_worker() -> None:
    settings = load_settings({"WEBHOOK_INTERVAL_S": 2})
    from app.queue import celery_config

    entry = celery_config(settings, ["latency_first"])["beat_schedule"]["deliver-webhooks"]
    assert entry == {
        "task": "workers.webhooks.deliver",
        "schedule": 2.0,
        "options": {"queue": "batches", "expires": 2.0},
    }
    off = load_settings({"WEBHOOK_INTERVAL_S": 0})
    assert "deliver-webhooks" not in celery_config(off, ["latency_first"])["beat_schedule"]


def test_the_allowed_hosts_setting_refuses_a_bad_cidr() -> None:
    hosts = load_settings({"WEBHOOK_ALLOWED_HOSTS": "Hooks.Example.com, 10.0.0.0/8"}).webhooks.allowed_hosts
    assert hosts == ("hooks.example.com", "10.0.0.0/8")
    with pytest.raises(SettingsError, match="GPTOSS_WEBHOOK_ALLOWED_HOSTS"):
        load_settings({"WEBHOOK_ALLOWED_HOSTS": "10.0.0.0/33"})


def test_jobs_that_are_not_finished_make_no_event(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    register(client, receiver.url)
    with app.app_context(), db_session() as session:
        insert_queued_job(session, "latency_first", {"prompt": "hi"})
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1
    assert deliver(app).attempts == 0


def test_a_refused_connection_is_recorded_and_retried_until_the_webhook_is_deleted(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    webhook = register(client, f"http://127.0.0.1:{closed.getsockname()[1]}/hooks")
    finished_job(app)
    assert deliver(app).attempts == 1
    attempt = client.get(f"/v1/webhooks/{webhook['id']}/deliveries").get_json()["data"][0]
    assert attempt["status_code"] is None and attempt["error"].startswith("ConnectError")
    assert attempt["delivery_status"] == "pending"
    assert client.delete(f"/v1/webhooks/{webhook['id']}").status_code == 200
    assert deliver(app, now=utcnow() + timedelta(minutes=1)).attempts == 0  # its delivery went with it
    closed.close()


def test_the_beat_task_sends_unless_another_pass_holds_the_lock(
    app: Flask, client: FlaskClient, receiver: Receiver
) -> None:
    register(client, receiver.url)
    finished_job(app)
    redis_client = services(app).redis
    redis_client.set(LOCK_KEY, "1", ex=60)  # another pass is running
    with app.app_context():
        deliver_task.run()
    assert receiver.received == []
    redis_client.delete(LOCK_KEY)
    with app.app_context():
        deliver_task.run()
    assert len(receiver.received) == 1 and redis_client.get(LOCK_KEY) is None


def test_a_keys_webhook_gets_the_events_of_that_keys_jobs_only(
    config: dict[str, Any], receiver: Receiver
) -> None:
    app, alice, bob, webhook = alices_webhook(config, receiver)
    client = app.test_client()
    jobs = {}
    for name, headers in (("alice", alice), ("bob", bob)):
        jobs[name] = client.post("/v1/jobs", json={"prompt": "hi"}, headers=headers).get_json()["id"]
        run(app, jobs[name], JobStatus.SUCCEEDED, "done")
    assert deliver(app).delivered == 1
    event = verified(webhook["secret"], receiver.received[0])
    assert (event["type"], event["data"]["id"]) == ("job.completed", jobs["alice"])
    services(app).db_engine.dispose()
