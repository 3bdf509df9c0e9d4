"""Redis faults: a restart with jobs queued and running, a password, and a pickled message on a queue."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from kombu import Connection, Exchange, Queue

from app import create_app
from app.db import db_session
from app.ops.private_redis import redis_answers, start_private_redis, stop_private_redis
from app.queue import RUN_JOB_TASK, unacked_restore_options
from app.services import services
from tests.support.apps import insert_queued_job
from tests.support.cluster import Cluster
from tests.support.pipeline import Pipeline
from tests.support.ports import fresh_port

HELLO = [{"role": "user", "content": "hello"}]
PASSWORD = 'pass "word" with spaces'


def seconds_to_run(cluster: Cluster, jobs: int) -> float:
    """Submit short jobs to quality_first (one at a time) and time until all succeeded."""
    started = time.monotonic()
    job_ids = [cluster.submit(profile="quality_first", messages=HELLO, max_tokens=4) for _ in range(jobs)]
    assert [cluster.wait_finished(job_id, timeout=60)["status"] for job_id in job_ids] == ["succeeded"] * jobs
    return time.monotonic() - started


def test_a_redis_restart_with_jobs_queued_and_running_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, cluster_factory: Callable[..., Cluster]
) -> None:
    """A private Redis with a password and no persistence restarts: its queued messages are gone."""
    folder, port = tmp_path_factory.mktemp("redis-restart"), fresh_port()
    server, url = start_private_redis(folder / "redis", port, PASSWORD)
    try:
        # the reconciler (celery beat -> batch worker) re-sends queued jobs whose message is lost
        cluster = cluster_factory(url, RECONCILE_INTERVAL_S=1, RECONCILE_STUCK_AFTER_S=2, GATE_SCHEDULE_S=0)
        celery = [sys.executable, "-m", "celery", "-A", "make_batch_celery"]
        cluster.start("q", profile="quality_first")
        batch_worker = ["worker", "-Q", "batches", "-P", "threads", "-c", "2", "-n", "batches@faults"]
        cluster.start_process("batches", [*celery, *batch_worker, "--without-gossip", "--without-mingle"])
        cluster.start_process("beat", [*celery, "beat", "--schedule", str(folder / "beat-schedule")])
        cluster.wait_ready("q")
        before = seconds_to_run(cluster, 4)

        running = cluster.submit(profile="quality_first", messages=HELLO, max_tokens=300)
        queued = [cluster.submit(profile="quality_first", messages=HELLO, max_tokens=4) for _ in range(4)]
        cluster.wait_until(running, lambda job: job["first_token_at"] is not None)
        stop_private_redis(server)
        # Down for a few of kombu's unacked-restore sweeps (every 2 s at the cluster's visibility
        # timeout): kombu < 5.7 let a sweep's connection error end the worker's event loop.
        time.sleep(
            3
            * unacked_restore_options(services(cluster.app).settings.visibility_timeout_s)[
                "unacked_restore_interval"
            ]
        )
        server, _ = start_private_redis(folder / "redis", port, PASSWORD)

        jobs = [cluster.wait_finished(job_id, timeout=120) for job_id in [running, *queued]]
        assert [job["status"] for job in jobs] == ["succeeded"] * 5
        assert jobs[0]["attempts"] == 1  # its worker lived through the outage: it was not run twice
        assert "re-sent" in cluster.log("batches") and "Connection to broker lost" in cluster.log("q")
        after = seconds_to_run(cluster, 4)  # the worker consumes again, as fast as before
        assert after < 3 * before + 5, (before, after)
        for name in ("q", "batches", "beat"):
            assert cluster.workers[name].poll() is None, cluster.log(name)[-2000:]

        assert not redis_answers(f"redis://127.0.0.1:{port}/0")  # no password, no access
        no_password = create_app({**cluster.app.config, "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        refused = no_password.test_client().post("/v1/jobs", json={"messages": HELLO})
        assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "queue_unavailable"
        services(no_password).db_engine.dispose()
    finally:
        stop_private_redis(server)


def test_the_private_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    server, url = start_private_redis(tmp_path / "redis", fresh_port())
    try:
        config: Any = redis.Redis.from_url(url).config_get("*")
        assert (config["bind"], config["protected-mode"]) == ("127.0.0.1", "yes")
    finally:
        stop_private_redis(server)


class WritesAFile:
    """Unpickling this creates `path`: proof that a pickled message was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def publish_pickled_task(redis_url: str, queue: str, task_id: str, args: list[Any]) -> None:
    """A run_job message as an attacker with access to Redis would send it, serialized with pickle."""
    headers = {"lang": "py", "task": RUN_JOB_TASK, "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "retries": 0, "eta": None, "expires": None}  # fmt: skip
    body = (args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    with Connection(redis_url) as connection:
        connection.Producer().publish(
            body, exchange=Exchange(queue), routing_key=queue, serializer="pickle", headers=headers,
            declare=[Queue(queue, Exchange(queue), routing_key=queue)],
        )  # fmt: skip


def refused_messages(worker_log: Path) -> list[str]:
    """Each 'Received invalid task message' report of a worker's log, with the body it quotes."""
    return worker_log.read_text(errors="replace").split("Received invalid task message")[1:]


@pytest.mark.parametrize(
    "database_url", ["sqlite"], indirect=True
)  # the broker's concern: one database will do
def test_a_pickled_message_is_refused_and_never_deserialized(pipeline: Pipeline, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with pipeline.app.app_context(), db_session() as session:
        request, task_id = {"messages": HELLO, "max_tokens": 4}, f"pickled-{time.time_ns()}"
        job_id = insert_queued_job(session, "latency_first", request, task_id).id
    publish_pickled_task(pipeline.env["REDIS_URL"], "latency_first", task_id, [job_id, WritesAFile(marker)])

    backend = sa.make_url(pipeline.env["DATABASE_URL"]).get_backend_name()
    worker_log = Path(pipeline.env["GPTOSS_DATA_DIR"]) / f"logs-{backend}" / "latency_first.log"
    refusal = "Refusing to deserialize untrusted content of type pickle"
    deadline = time.monotonic() + 30
    while not any(refusal in report and job_id in report for report in refused_messages(worker_log)):
        assert time.monotonic() < deadline, "the worker never refused the message"
        time.sleep(0.1)
    client = redis.Redis.from_url(pipeline.env["REDIS_URL"])
    assert client.llen("latency_first") == 0  # discarded, not requeued
    assert all(task_id.encode() not in message for message in client.hvals("unacked"))  # type: ignore[union-attr]
    assert not marker.exists()
    untouched = pipeline.job(job_id)
    assert (untouched["status"], untouched["attempts"], untouched["started_at"]) == ("queued", 0, None)
    assert pipeline.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    proof = pipeline.submit(messages=HELLO, max_tokens=4)  # the worker still serves
    assert pipeline.wait_finished(proof["id"])["status"] == "succeeded"
