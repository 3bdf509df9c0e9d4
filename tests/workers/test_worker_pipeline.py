"""End to end: API -> Redis -> one real Celery worker process per profile -> DB, on SQLite and Postgres."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from app.models import Job
from app.queue import send_run_job
from app.services import services
from cli.main import main as gptoss
from tests.support.apps import TEST_MAX_TOKENS
from tests.support.pipeline import Pipeline

HELLO = [{"role": "user", "content": "hello"}]  # greedy tiny model: runs to max_tokens


@pytest.mark.parametrize("profile", ["latency_first", "quality_first"])
def test_job_succeeds_on_its_profiles_worker_with_all_five_tags(pipeline: Pipeline, profile: str) -> None:
    submitted = pipeline.submit(messages=HELLO, profile=profile, max_tokens=8, reasoning_effort="low")
    job = pipeline.wait_finished(submitted["id"])
    assert job["status"] == "succeeded", job
    assert job["worker"].startswith(f"{profile}@")
    tags = job["tags"]
    assert tags["profile"] == profile
    assert tags["engine"] == "transformers-cb" and tags["model_id"] == "tiny-gptoss"
    assert tags["model_size"] and tags["gpu_mode"] == "cpu"  # the truth: a CPU run, not "pipeline"
    result = job["result"]
    assert result["finish_reason"] == "length" and (result["content"] + result["reasoning"])
    assert job["usage"]["completion_tokens"] == 8 and job["usage"]["prompt_tokens"] > 0
    assert job["attempts"] == 1 and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["first_token_at"] <= job["finished_at"]
    timings = job["timings"]
    assert 0 < timings["ttft_s"] <= timings["e2e_s"] <= timings["total_s"] and timings["queue_s"] >= 0


def test_readyz_sees_a_worker_per_profile(pipeline: Pipeline) -> None:
    ready = pipeline.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["profiles"] == {"latency_first": "ready", "quality_first": "ready"}
    workers = ready.get_json()["checks"]["workers"]
    assert [name.split("@")[0] for name in workers["latency_first"]] == ["latency_first"]
    assert [name.split("@")[0] for name in workers["quality_first"]] == ["quality_first"]


def test_cancel_queued_behind_a_busy_worker_then_the_running_job(pipeline: Pipeline) -> None:
    # quality_first runs one job at a time (max_batch 1), so a second job waits in Redis.
    running = pipeline.submit(messages=HELLO, profile="quality_first", max_tokens=TEST_MAX_TOKENS)
    pipeline.wait_until(running["id"], lambda job: job["first_token_at"] is not None)
    waiting = pipeline.submit(messages=HELLO, profile="quality_first", max_tokens=8)

    cancelled = pipeline.client.post(f"/v1/jobs/{waiting['id']}/cancel").get_json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

    asked = pipeline.client.post(f"/v1/jobs/{running['id']}/cancel").get_json()
    assert (asked["status"], asked["cancel_requested"]) == ("running", True)
    job = pipeline.wait_finished(running["id"], timeout=30)
    assert (job["status"], job["result"]["finish_reason"]) == ("cancelled", "cancelled")
    assert 0 < job["usage"]["completion_tokens"] < TEST_MAX_TOKENS
    assert job["result"]["content"] + job["result"]["reasoning"]  # the partial text is kept
    assert job["tags"]["profile"] == "quality_first"

    assert pipeline.client.post(f"/v1/jobs/{running['id']}/cancel").status_code == 409
    # The revoked task of the cancelled queued job never runs, even after the worker frees up.
    after = pipeline.submit(messages=HELLO, profile="quality_first", max_tokens=4)
    pipeline.wait_finished(after["id"])
    never_ran = pipeline.job(waiting["id"])
    assert (never_ran["status"], never_ran["attempts"], never_ran["started_at"]) == ("cancelled", 0, None)


def test_cancel_of_a_finished_job_is_409(pipeline: Pipeline) -> None:
    job = pipeline.submit(messages=HELLO, max_tokens=2)
    pipeline.wait_finished(job["id"])
    response = pipeline.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert "succeeded" in response.get_json()["error"]["message"]


def test_the_same_task_delivered_twice_runs_once(pipeline: Pipeline) -> None:
    first = pipeline.wait_finished(
        pipeline.submit(messages=HELLO, profile="quality_first", max_tokens=4)["id"]
    )
    with services(pipeline.app).sessions() as session:
        task_id = session.get(Job, first["id"]).task_id
    send_run_job(pipeline.app.extensions["celery"], first["id"], "quality_first", task_id, "quality_first")
    # quality_first runs one task at a time, in order: once this one ends, the duplicate was handled.
    pipeline.wait_finished(pipeline.submit(messages=HELLO, profile="quality_first", max_tokens=2)["id"])
    again = pipeline.job(first["id"])
    assert again == first


def test_idempotent_submit_runs_one_job(pipeline: Pipeline) -> None:
    headers = {"Idempotency-Key": f"once-{time.time_ns()}"}
    body = {"messages": HELLO, "max_tokens": 4}
    ids = {pipeline.client.post("/v1/jobs", json=body, headers=headers).get_json()["id"] for _ in range(3)}
    assert len(ids) == 1
    job = pipeline.wait_finished(ids.pop())
    assert (job["status"], job["attempts"]) == ("succeeded", 1)


@pytest.fixture
def api_url(pipeline: Pipeline) -> Iterator[str]:
    """The pipeline's API served over real HTTP on a free port."""
    server = make_server("127.0.0.1", 0, pipeline.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_cli_submit_wait_status_and_cancel(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert gptoss(["--url", api_url, "submit", "hello", "--max-tokens", "4", "--wait"]) == 0
    assert (
        gptoss(["--url", api_url, "submit", "hello", "--max-tokens", "4", "--profile", "quality_first"]) == 0
    )
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert job_id.startswith("job_")
    assert gptoss(["--url", api_url, "status", job_id]) == 0
    assert f'"id": "{job_id}"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="max_tokens"):
        gptoss(["--url", api_url, "submit", "hello", "--max-tokens", str(TEST_MAX_TOKENS + 1)])
    with pytest.raises(SystemExit, match="404"):
        gptoss(["--url", api_url, "cancel", "job_nope"])
