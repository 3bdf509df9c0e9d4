"""A non-streamed call runs only while its client waits, and the openai SDK's retries of it share one job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from flask import Flask

from tests.support.apps import api_app, app_config
from tests.support.gunicorn import gunicorn_api
from tests.support.live_server import serve
from tests.support.services import IDLE_REDIS_DB, flushed_redis_url

GRACE_S = 4.0  # above the SDK's retry backoff (0.5 s, then 1 s, with jitter)
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def waiting_app(
    test_dir: Path, profiles_file: Path, database_url: str, redis_base_url: str
) -> Iterator[Flask]:
    """No worker consumes its queue: a job stays queued until cancelled."""
    config = app_config(
        test_dir, profiles_file, database_url, flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    )
    with api_app(config | {"CLIENT_RETRY_GRACE_S": GRACE_S}) as app:
        yield app


def jobs_since(app: Flask, before: set[str]) -> list[dict]:
    data = app.test_client().get("/v1/jobs?limit=100").get_json()["data"]
    return [job for job in data if job["id"] not in before]


def wait_for_status(app: Flask, job_id: str, status: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := app.test_client().get(f"/v1/jobs/{job_id}").get_json())["status"] != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_sdks_retries_after_timeouts_make_one_job_cancelled_once_nobody_waits(
    waiting_app: Flask, api: str
) -> None:
    before = {job["id"] for job in jobs_since(waiting_app, set())}
    with serve(waiting_app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=1.0, max_retries=2)
        with pytest.raises(openai.APITimeoutError):
            if api == "chat":
                client.chat.completions.create(model="latency_first", messages=HI)  # type: ignore[arg-type]
            else:
                client.responses.create(model="latency_first", input="hi")
        [job] = jobs_since(waiting_app, before)  # three attempts, one job
        assert job["status"] == "queued"
        cancelled = wait_for_status(waiting_app, job["id"], "cancelled", GRACE_S + 5)
        assert cancelled["started_at"] is None


def test_a_client_that_drops_a_non_streamed_chat_gets_its_job_cancelled(waiting_app: Flask) -> None:
    before = {job["id"] for job in jobs_since(waiting_app, set())}
    with serve(waiting_app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=0.5, max_retries=0)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="latency_first", messages=HI)  # type: ignore[arg-type]
        [job] = jobs_since(waiting_app, before)
        wait_for_status(waiting_app, job["id"], "cancelled", GRACE_S + 5)
        jobs_api = waiting_app.test_client().post("/v1/jobs", json={"messages": HI}).get_json()
        time.sleep(1)  # fetched later: the jobs API's jobs wait for nobody
        assert waiting_app.test_client().get(f"/v1/jobs/{jobs_api['id']}").get_json()["status"] == "queued"


def test_refusals_that_retrying_cannot_fix_tell_the_sdk_not_to_retry(waiting_app: Flask) -> None:
    client = waiting_app.test_client()
    bad = client.post("/v1/chat/completions", json={"model": "latency_first", "messages": []})
    assert bad.status_code == 400 and bad.headers["x-should-retry"] == "false"
    missing = client.get("/v1/jobs/job_nope")
    assert missing.status_code == 404 and missing.headers["x-should-retry"] == "false"


def test_one_clients_many_waiting_readers_leave_room_for_anothers_submit(
    tmp_path: Path, profiles_file: Path, redis_base_url: str
) -> None:
    """150 waiting readers of one key (non-streamed chats and event streams) under gunicorn's 128
    threads: those past the key's cap get 429 at once, so another key's submit is still a 202."""
    redis_url = flushed_redis_url(redis_base_url, IDLE_REDIS_DB)
    keys = {"GPTOSS_API_KEYS": "sk-busy,sk-other", "GPTOSS_CLIENT_RETRY_GRACE_S": "1"}
    with gunicorn_api(tmp_path, profiles_file, redis_url, **keys) as url:
        busy = {"Authorization": "Bearer sk-busy"}
        job = httpx.post(f"{url}/v1/jobs", json={"messages": HI}, headers=busy).json()  # stays queued

        def wait_as_reader(index: int) -> int:
            try:
                if index % 2:
                    chat = {"model": "latency_first", "messages": HI}
                    return httpx.post(
                        f"{url}/v1/chat/completions", json=chat, headers=busy, timeout=8
                    ).status_code
                with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", headers=busy, timeout=8) as r:
                    for _ in r.iter_bytes():
                        pass
                    return r.status_code
            except httpx.ReadTimeout:
                return 0  # still waiting when the test ended: it held its thread the whole time

        with ThreadPoolExecutor(150) as pool:
            readers = [pool.submit(wait_as_reader, i) for i in range(150)]
            time.sleep(3)  # every reader is waiting or refused by now
            other = httpx.post(
                f"{url}/v1/jobs",
                json={"messages": HI},
                headers={"Authorization": "Bearer sk-other"},
                timeout=5,
            )
            assert other.status_code == 202, other.text
            statuses = [reader.result() for reader in readers]
        assert statuses.count(429) >= 150 - 64 and 0 in statuses  # the cap (64) held, the rest waited
