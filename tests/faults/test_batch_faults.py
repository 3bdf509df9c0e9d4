"""A batch worker killed while it validates: the batch does not wait for the visibility timeout, the
reconciler (celery beat -> the restarted batch worker) sends its ingest again once the lease lapses."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from app.batches.lease import LEASE_S, lease_key
from app.db import db_session
from app.models import Job
from tests.support.batches import create_batch, request_line
from tests.support.cluster import Cluster

BATCH_FAULTS_REDIS_DB = 15
LINES = 5_000  # validating them takes long enough to be killed in it


def start_batch_processes(cluster: Cluster, folder: str) -> None:
    celery = [sys.executable, "-m", "celery", "-A", "make_batch_celery"]
    worker = ["worker", "-Q", "batches", "-P", "threads", "-c", "2", "-n", "batches@faults"]
    cluster.start_process("batches", [*celery, *worker, "--without-gossip", "--without-mingle"])
    if "beat" not in cluster.workers:
        cluster.start_process("beat", [*celery, "beat", "--schedule", f"{folder}/beat-schedule"])


def test_a_batch_whose_worker_died_while_validating_is_ingested_again(
    cluster_factory: Callable[..., Cluster], redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = cluster_factory(
        f"{redis_base_url}/{BATCH_FAULTS_REDIS_DB}", RECONCILE_INTERVAL_S=1, RECONCILE_STUCK_AFTER_S=2,
        GATE_SCHEDULE_S=0, VISIBILITY_TIMEOUT_S=21600,  # the lost message itself would come back in 6 hours
    )  # fmt: skip
    cluster.redis().flushdb()
    folder = str(tmp_path_factory.mktemp("batch-faults"))
    start_batch_processes(cluster, folder)
    lines = [request_line(f"r{i}", max_tokens=1) for i in range(LINES)]
    batch = create_batch(cluster.app.test_client(), lines)
    deadline = time.monotonic() + 60
    while not cluster.redis().exists(lease_key(batch["id"])):  # the batch worker is validating it
        assert time.monotonic() < deadline, cluster.log("batches")[-3000:]
        time.sleep(0.02)
    cluster.kill("batches")  # SIGKILL mid-validation: its message stays unacked
    cluster.workers["batches"].wait()
    assert cluster.app.test_client().get(f"/v1/batches/{batch['id']}").get_json()["status"] == "validating"
    start_batch_processes(cluster, folder)
    deadline = time.monotonic() + LEASE_S + 60
    while (shown := cluster.app.test_client().get(f"/v1/batches/{batch['id']}").get_json())[
        "status"
    ] == "validating":
        assert time.monotonic() < deadline, cluster.log("batches")[-3000:]
        time.sleep(0.5)
    assert shown["request_counts"]["total"] == LINES
    assert "sent again" in cluster.log("batches")

    def lines_made() -> list[int]:
        with cluster.app.app_context(), db_session() as session:
            return sorted(session.scalars(sa.select(Job.batch_line).where(Job.batch_id == batch["id"])))

    deadline = time.monotonic() + 60
    while len(made := lines_made()) < LINES:  # the resumed ingest inserts them a chunk at a time
        assert time.monotonic() < deadline, len(made)
        time.sleep(0.5)
    assert made == list(range(1, LINES + 1))  # every line made a job, each once
    cancelled = cluster.app.test_client().post(f"/v1/batches/{batch['id']}/cancel").get_json()
    assert cancelled["status"] in ("cancelling", "cancelled")  # no model worker here: do not run them all
