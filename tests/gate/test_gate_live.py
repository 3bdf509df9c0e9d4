"""The gate against the running stack: the API over HTTP, a tiny gpt-oss worker, the batch worker, beat."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from flask import Flask

from app import create_app
from app.db import db_session
from app.gate_runs.models import GateRun
from app.services import services
from gate.cli import main as gate_main
from gate.schedule import run_scheduled_gate
from tests.support.apps import app_config
from tests.support.gate import assert_valid_png
from tests.support.live_server import serve
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import live_workers, stop_worker, worker_answers_ping
from tests.support.services import migrate

GATE_LIVE_REDIS_DB = 6


@dataclass
class GateStack:
    app: Flask
    url: str
    env: dict[str, str]
    folder: Path

    def runs(self, trigger: str | None = None) -> list[GateRun]:
        with self.app.app_context(), db_session() as session:
            query = sa.select(GateRun).order_by(GateRun.id)
            if trigger:
                query = query.where(GateRun.trigger == trigger)
            return list(session.scalars(query))

    def stats_count(self, include_gate: bool) -> int:
        return httpx.get(f"{self.url}/v1/stats", params={"include_gate": include_gate}).json()["count"]


@pytest.fixture(scope="module")
def stack(
    test_dir: Path, profiles_file: Path, tiny_model_dir: Path, redis_base_url: str
) -> Iterator[GateStack]:
    """The API on a live port and one latency_first worker on the tiny gpt-oss, warmed up by one job."""
    folder = test_dir / "gate-live"
    folder.mkdir(exist_ok=True)
    database_url = f"sqlite:///{folder / 'gate.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{GATE_LIVE_REDIS_DB}"
    with live_workers(
        folder, profiles_file, database_url, redis_url, test_dir, ("latency_first",),
        env={"GPTOSS_WORKER_METRICS_PORT": "0"}, api_data_dir=folder, ready=worker_answers_ping,
    ) as (app, env):  # fmt: skip
        with serve(app) as url:
            warm_up = httpx.post(f"{url}/v1/jobs", json={"prompt": "Hi", "max_tokens": 4}).json()
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/v1/jobs/{warm_up['id']}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, "the warm-up job did not succeed"
                time.sleep(0.1)
            yield GateStack(app, url, env, folder)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = gate_main(list(argv))
    return status, capsys.readouterr().out


def test_a_gate_run_passes_the_personal_slo_and_is_stored_but_not_counted_in_stats(
    stack: GateStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users_before, all_before = stack.stats_count(False), stack.stats_count(True)
    status, out = run_cli(
        capsys, "--url", stack.url, "gate", "--duration", "4", "--rate", "1", "--arrivals", "fixed",
        "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert status == 0, out
    run_id = re.search(r"gate (gate_[0-9a-f]+): PASSED - personal SLO on latency_first", out).group(1)  # type: ignore[union-attr]
    assert f"stored: {stack.url}/v1/gate/runs/{run_id}" in out
    assert {path.name for path in tmp_path.iterdir()} == {f"{run_id}.json", f"{run_id}.md", f"{run_id}.png"}
    assert_valid_png((tmp_path / f"{run_id}.png").read_bytes())

    listed = httpx.get(f"{stack.url}/v1/gate/runs").json()["data"]
    assert listed[0]["id"] == run_id and listed[0]["passed"] and listed[0]["trigger"] == "cli"
    report = httpx.get(f"{stack.url}/v1/gate/runs/{run_id}").json()["report"]
    figures = report["figures"]
    assert (figures["requests"], figures["succeeded"], figures["achieved_qps"]) == (4, 4, 1.0)
    assert 0 < figures["ttft_s"]["p95"] <= figures["e2e_s"]["p95"] < 30 and figures["tokens_per_s"] > 0
    assert report["model"]["model_id"] == "tiny-gptoss" and report["trigger"] == "cli"

    job_id = report["samples"][0]["job_id"]
    assert httpx.get(f"{stack.url}/v1/jobs/{job_id}").json()["metadata"] == {"gptoss_gate": run_id}
    assert stack.stats_count(False) == users_before
    assert stack.stats_count(True) == all_before + 4


def test_an_impossible_slo_fails_and_says_which_threshold_by_how_much(
    stack: GateStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slo_file = tmp_path / "slos.toml"
    slo_file.write_text(
        "[impossible]\nmin_qps = 0.1\np95_ttft_s = 0.001\np95_e2e_s = 30\nmax_error_rate = 0\n"
    )
    status, out = run_cli(
        capsys, "--url", stack.url, "gate", "--slo", "impossible", "--slo-file", str(slo_file),
        "--duration", "2", "--rate", "1", "--no-store",
    )  # fmt: skip
    assert status == 1, out
    assert re.search(r"FAILED - impossible SLO on latency_first", out)
    assert re.search(r"FAIL  p95_ttft_s \d+\.\d+ > 0\.001 \(\+\d+%\)", out), out
    assert re.search(r"ok    p95_e2e_s \d+\.\d+ <= 30\.0", out), out


def test_two_triggers_in_one_interval_store_one_run(stack: GateStack) -> None:
    config = app_config(stack.folder, Path(stack.env["GPTOSS_PROFILES"]), stack.env["DATABASE_URL"], "")
    app = create_app(
        config
        | {"REDIS_URL": stack.env["REDIS_URL"], "GATE_API_URL": stack.url, "GATE_SCHEDULE_S": 3600.0}
        | {"GATE_DURATION_S": 1.0, "GATE_RATE": 2.0}
    )
    before = len(stack.runs("schedule"))
    now, results = time.time(), list[Any]()
    triggers = [
        threading.Thread(target=lambda: results.append(run_scheduled_gate(app, now))) for _ in range(2)
    ]
    for trigger in triggers:
        trigger.start()
    for trigger in triggers:
        trigger.join(timeout=60)
    assert sorted(results, key=bool) == [None, results[0] or results[1]]
    assert len(stack.runs("schedule")) == before + 1
    assert run_scheduled_gate(app, now + 10) is None  # same interval, later
    services(app).db_engine.dispose()


def start_celery(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "make_batch_celery", *args],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def test_celery_beat_runs_the_gate_on_its_schedule_and_stores_it(stack: GateStack) -> None:
    env = stack.env | {
        "GPTOSS_GATE_SCHEDULE_S": "2",
        "GPTOSS_GATE_DURATION_S": "1",
        "GPTOSS_GATE_RATE": "2",
        "GPTOSS_GATE_API_URL": stack.url,
    }
    before = {run.id for run in stack.runs("schedule")}
    worker_log, beat_log = stack.folder / "batches.log", stack.folder / "beat.log"
    worker = start_celery(
        ["worker", "-Q", "batches", "-P", "threads", "-c", "2", "-n", "batches@%h", "--without-gossip",
         "--without-mingle", "--loglevel", "INFO"], env, worker_log,
    )  # fmt: skip
    beat = start_celery(
        ["beat", "-s", str(stack.folder / "beat-schedule"), "--loglevel", "INFO"], env, beat_log
    )
    try:
        deadline = time.monotonic() + 60
        while not (new := [run for run in stack.runs("schedule") if run.id not in before]):
            assert worker.poll() is None and beat.poll() is None, worker_log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no scheduled run:\n{beat_log.read_text()[-2000:]}"
            time.sleep(0.5)
    finally:
        stop_worker(beat)
        stop_worker(worker)
    assert new[0].passed and new[0].profile == "latency_first" and new[0].slo == "personal"
    assert "Sending due task release-gate (gate.tasks.run_scheduled_gate)" in beat_log.read_text()
    listed = {run["id"]: run for run in httpx.get(f"{stack.url}/v1/gate/runs?limit=100").json()["data"]}
    assert listed[new[0].id]["trigger"] == "schedule"
