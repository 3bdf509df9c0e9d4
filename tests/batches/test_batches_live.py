"""The Batch API end to end: a live HTTP server, model workers on the tiny gpt-oss and the batch worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from argparse import Namespace
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from app.db import db_session
from app.models import Job
from app.services import services
from cli.batch import batch_run
from tests.support.apps import TEST_MAX_TOKENS
from tests.support.batches import (
    batch_app,
    private_redis,
    request_line,
    start_batch_over_http,
    start_batch_worker,
    wait_for_batch_worker,
)
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import start_worker, stop_worker, wait_for_workers
from tests.support.services import migrate

FINAL = {"completed", "failed", "cancelled", "expired"}
BIG_BATCH = 1_000  # lines: interactive jobs must not wait behind them (~30 s of them on the tiny model)


@dataclass
class LiveBatches:
    app: Flask
    url: str  # http://127.0.0.1:<port>
    http: httpx.Client

    def start(self, lines: list[str], filename: str) -> str:
        """Upload the request lines and create their batch over HTTP; returns the batch id."""
        return start_batch_over_http(self.http, lines, filename)

    def wait_final(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (batch := self.http.get(f"/v1/batches/{batch_id}").json())["status"] not in FINAL:
            assert time.monotonic() < deadline, f"timed out; batch is {batch}"
            time.sleep(0.1)
        return batch

    def jsonl(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        return [json.loads(line) for line in self.http.get(f"/v1/files/{file_id}/content").text.splitlines()]


@pytest.fixture(scope="module")
def live_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def live_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: test_files_batches runs the batch logic on both backends; this is about processes."""
    url = f"sqlite:///{tmp_path_factory.mktemp('live-sqlite') / 'gptoss.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def live(
    test_dir: Path, profiles_file: Path, tiny_model_dir: Path, live_database_url: str, live_redis_url: str
) -> Iterator[LiveBatches]:
    """Model workers for both profiles, the batch worker and the API on a real port."""
    redis_url = live_redis_url
    env = {
        **os.environ,
        "GPTOSS_PROFILES": str(profiles_file),
        "DATABASE_URL": live_database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(test_dir),
        "GPTOSS_BATCH_CHECK_INTERVAL_S": "60",  # batches end on their last job's end or a cancel, not a timer
        "PYTHONPATH": str(REPO_ROOT),
    }
    logs = test_dir / "batch-logs"
    logs.mkdir(exist_ok=True)
    workers = {
        name: start_worker(name, env, logs / f"{name}.log") for name in ("latency_first", "quality_first")
    }
    workers["batches"] = start_batch_worker(env, logs / "batches.log")
    app = batch_app(test_dir, profiles_file, live_database_url, redis_url)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        wait_for_batch_worker(app, workers["batches"], logs / "batches.log")
        wait_for_workers(app, {k: v for k, v in workers.items() if k != "batches"}, logs)
        with httpx.Client(base_url=url, timeout=30) as http:
            yield LiveBatches(app, url, http)
    finally:
        server.shutdown()
        for worker in workers.values():  # all at once: each warm shutdown takes seconds
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers.values():
            stop_worker(worker)
        services(app).db_engine.dispose()


def test_the_openai_sdk_runs_a_batch_and_reads_its_answers(live: LiveBatches, test_dir: Path) -> None:
    watches_before = (test_dir / "batch-logs" / "batches.log").read_text().count("watch_batch[")
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="not-checked", max_retries=0)
    lines = [request_line(f"q{i}", f"Question {i}?", max_tokens=4 + i) for i in range(6)]
    uploaded = client.files.create(
        file=("questions.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    assert (uploaded.object, uploaded.purpose, uploaded.filename) == ("file", "batch", "questions.jsonl")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "sdk"},
    )
    assert batch.status == "validating" and batch.metadata == {"run": "sdk"}
    deadline = time.monotonic() + 60
    while (batch := client.batches.retrieve(batch.id)).status not in FINAL:
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    assert batch.status == "completed", batch
    watches = (test_dir / "batch-logs" / "batches.log").read_text().count("watch_batch[") - watches_before
    assert watches <= 8  # a few checks (after ingest, a timed one, after the last job), not one a second
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        6,
        6,
        0,
    )
    assert batch.output_file_id is not None and batch.error_file_id is None
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == [f"q{i}" for i in range(6)]
    for i, line in enumerate(output):
        body = line["response"]["body"]
        job = live.http.get(f"/v1/jobs/{line['response']['request_id']}").json()
        assert body["choices"][0]["message"]["content"] == job["result"]["content"]  # the job's own answer
        assert body["usage"]["completion_tokens"] <= 4 + i
        assert body["model"] == job["tags"]["model_id"]
    assert batch.id in [b.id for b in client.batches.list(limit=100)]


def test_per_request_failures_go_to_the_error_file_and_nothing_is_dropped(live: LiveBatches) -> None:
    # a valid request the engine refuses: prompt + max_tokens beyond the tiny model's 4096-token context
    too_long = "x" * (4096 - TEST_MAX_TOKENS + 100)
    lines = [
        request_line(f"r{i}", too_long, max_tokens=TEST_MAX_TOKENS)
        if i % 3 == 1
        else request_line(f"r{i}", f"Hello {i}", max_tokens=3)
        for i in range(9)
    ]
    batch = live.wait_final(live.start(lines, "m.jsonl"))
    counts = batch["request_counts"]
    assert batch["status"] == "completed" and counts == {"total": 9, "completed": 6, "failed": 3}
    output, errors = live.jsonl(batch["output_file_id"]), live.jsonl(batch["error_file_id"])
    assert [line["custom_id"] for line in output] == [f"r{i}" for i in range(9) if i % 3 != 1]
    assert [line["custom_id"] for line in errors] == ["r1", "r4", "r7"]
    assert all(e["response"]["status_code"] == 500 and "context" in e["response"]["body"]["error"]["message"]
               for e in errors)  # fmt: skip


def test_cancel_mid_batch_keeps_what_finished(live: LiveBatches) -> None:
    # quality_first runs one job at a time: the first short job finishes, a long one runs, the rest wait
    lines = [request_line("short", "Hi", model="quality_first", max_tokens=2)]
    lines += [
        request_line(f"long{i}", "Hi", model="quality_first", max_tokens=TEST_MAX_TOKENS) for i in range(4)
    ]
    batch_id = live.start(lines, "c.jsonl")
    deadline = time.monotonic() + 30
    while live.http.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = live.http.post(f"/v1/batches/{batch_id}/cancel").json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    batch = live.wait_final(batch_id, timeout=30)
    assert batch["status"] == "cancelled" and batch["cancelled_at"] is not None
    counts = batch["request_counts"]
    assert counts["total"] == 5 == counts["completed"] + counts["failed"] and counts["completed"] >= 1
    done = [line["custom_id"] for line in live.jsonl(batch["output_file_id"])]
    stopped = live.jsonl(batch["error_file_id"])
    assert "short" in done and len(done) + len(stopped) == 5
    assert {e["error"]["code"] for e in stopped} == {"batch_cancelled"}


def test_the_cli_runs_a_plain_prompt_file_with_progress(
    live: LiveBatches, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('\ufeffWhat is 1+1?\n\n{"prompt": "Name a colour.", "custom_id": "colour"}\nSay hi\n')
    results = tmp_path / "results.jsonl"
    args = Namespace(
        url=live.url, input=str(prompts), profile="latency_first", output=str(results), system="Be brief.",
        max_tokens=5, temperature=None, reasoning_effort="low", poll=0.1, no_progress=False,
    )  # fmt: skip
    assert batch_run(args) == 0
    answers = [json.loads(line) for line in results.read_text().splitlines()]
    assert [a["custom_id"] for a in answers] == ["line-1", "colour", "line-4"]
    assert all(isinstance(a["content"], str) and a["usage"]["completion_tokens"] <= 5 for a in answers)
    progress = capsys.readouterr().err
    assert "3/3" in progress and "completed: 3 completed, 0 failed of 3" in progress


def test_the_cli_reports_bad_lines_by_their_line_in_the_prompt_file(
    live: LiveBatches, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text('fine\n\n{"prompt": "too long an answer", "max_tokens": 999999}\n')
    args = Namespace(
        url=live.url, input=str(prompts), profile=None, output=str(tmp_path / "out.jsonl"), system=None,
        max_tokens=None, temperature=None, reasoning_effort=None, poll=0.1, no_progress=True,
    )  # fmt: skip
    assert batch_run(args) == 1
    assert "prompts.txt: line 3: body.max_tokens" in capsys.readouterr().err


def test_interactive_jobs_go_before_a_running_batchs_lines_and_the_batch_still_finishes(
    live: LiveBatches,
) -> None:
    lines = [request_line(f"b{i}", "Hi", max_tokens=1) for i in range(BIG_BATCH)]
    batch_id = live.start(lines, "big.jsonl")
    deadline = time.monotonic() + 60
    while live.http.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 40:
        assert time.monotonic() < deadline  # the batch keeps latency_first's worker busy now
        time.sleep(0.05)
    body = {"messages": [{"role": "user", "content": "Hi"}], "profile": "latency_first", "max_tokens": 1}
    interactive = [live.http.post("/v1/jobs", json=body).json()["id"] for _ in range(20)]
    batch = live.wait_final(batch_id, timeout=600)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == BIG_BATCH

    with live.app.app_context(), db_session() as session:
        mine = session.execute(sa.select(Job.created_at, Job.started_at).where(Job.id.in_(interactive))).all()
        lines_started = sorted(
            session.scalars(
                sa.select(Job.started_at).where(Job.batch_id == batch_id, Job.started_at.is_not(None))
            )
        )
    assert len(mine) == 20 and all(started is not None for _, started in mine)
    # between its submit and its start, each interactive job let fewer than 20 batch lines start
    overtaken = [sum(created < line < started for line in lines_started) for created, started in mine]
    assert max(overtaken) < 20, overtaken
    assert sum(1 for line in lines_started if line > max(started for _, started in mine)) > 0  # batch went on
