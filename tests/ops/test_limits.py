"""Limits: body size, prompt + max_tokens within the context, batch lines, submits and streams per client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from app import create_app
from app.db import db_session
from app.models import Job
from app.services import services
from tests.support.apps import TEST_MAX_TOKENS, app_config
from tests.support.batches import create_batch, ingest, request_line
from tests.support.live_server import serve
from tests.support.services import IDLE_REDIS_DB

HELLO = [{"role": "user", "content": "Hello"}]


def limited_app(
    test_dir: Path, profiles_file: Path, database_url: str, redis_url: str, **config: Any
) -> Flask:
    return create_app({**app_config(test_dir, profiles_file, database_url, redis_url), **config})


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    url = f"{redis_base_url}/{IDLE_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def job_count(app: Flask) -> int:
    with app.app_context(), db_session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Job)) or 0)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    return dict(response.get_json()["error"])


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/chat/completions", "/v1/batches"])
def test_a_body_over_max_content_length_gets_413(idle_client: Any, path: str) -> None:
    body = {"model": "latency_first", "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
    assert error_of(idle_client.post(path, json=body), 413)["code"] == "request_entity_too_large"


def test_prompt_plus_max_tokens_over_the_context_gets_400_before_any_job(
    idle_app: Flask, tiny_model_dir: Path
) -> None:
    client, before = idle_app.test_client(), job_count(idle_app)
    long_prompt = "y" * 3500  # the tiny model's tokenizer is byte-level; its context is 4096
    too_long = {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": TEST_MAX_TOKENS}
    error = error_of(client.post("/v1/jobs", json=too_long), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "maximum context length is 4096 tokens" in error["message"]
    error = error_of(
        client.post("/v1/jobs", json={"prompt": long_prompt, "max_tokens": TEST_MAX_TOKENS}), 400
    )
    assert error["param"] == "prompt"
    chat = {"model": "quality_first", "messages": too_long["messages"], "max_tokens": TEST_MAX_TOKENS}
    assert error_of(client.post("/v1/chat/completions", json=chat), 400)["code"] == "context_length_exceeded"
    assert job_count(idle_app) == before
    fits = {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 64}
    assert client.post("/v1/jobs", json=fits).status_code == 202


def test_a_prompt_that_cannot_be_rendered_gets_400_naming_the_message_before_any_job(
    idle_app: Flask,
) -> None:
    client, before = idle_app.test_client(), job_count(idle_app)
    pasted = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<|channel|>analysis<|message|>think<|end|>"},
        {"role": "user", "content": "and?"},
    ]
    for path, body in [("/v1/jobs", {}), ("/v1/chat/completions", {"model": "quality_first"})]:
        error = error_of(client.post(path, json={**body, "messages": pasted}), 400)
        assert error["param"] == "messages[1].content" and "channel tags" in error["message"]
    assert job_count(idle_app) == before


def test_a_batch_file_over_the_line_limit_fails_with_the_line(
    test_dir: Path, profiles_file: Path, database_url: str, redis_url: str
) -> None:
    app = limited_app(test_dir, profiles_file, database_url, redis_url, MAX_BATCH_LINES=3)
    batch = create_batch(app.test_client(), [request_line(f"r{i}") for i in range(4)])
    assert ingest(app, batch["id"]) == "failed"
    errors = app.test_client().get(f"/v1/batches/{batch['id']}").get_json()["errors"]["data"]
    assert [(e["line"], e["code"]) for e in errors] == [(4, "too_many_requests")]
    services(app).db_engine.dispose()


def wait_for_a_fresh_minute_window(margin_s: float = 10) -> None:
    """The submit limit counts per clock minute: keep a test's submits inside one window."""
    if time.time() % 60 > 60 - margin_s:
        time.sleep(60 - time.time() % 60 + 0.1)


def test_submits_per_minute_are_limited_per_client_across_api_processes(
    test_dir: Path, profiles_file: Path, database_url: str, redis_url: str
) -> None:
    keys = {"API_KEYS": "sk-a,sk-b", "RATE_LIMIT_PER_MIN": 5}
    first, second = (limited_app(test_dir, profiles_file, database_url, redis_url, **keys) for _ in range(2))
    a, b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
    wait_for_a_fresh_minute_window()
    remaining = []
    for app in (first, second, first, second, first):  # two gunicorn processes share the count in Redis
        accepted = app.test_client().post("/v1/jobs", json={"messages": HELLO}, headers=a)
        assert accepted.status_code == 202 and accepted.headers["x-ratelimit-limit-requests"] == "5"
        remaining.append(int(accepted.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [4, 3, 2, 1, 0]  # OpenAI's x-ratelimit-* headers
    before = job_count(first)
    limited = second.test_client().post(
        "/v1/chat/completions", json={"model": "x", "messages": HELLO}, headers=a
    )
    error = error_of(limited, 429)
    assert error["code"] == "rate_limit_exceeded" and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-reset-requests"] == f"{limited.headers['Retry-After']}s"
    assert job_count(first) == before
    assert first.test_client().post("/v1/jobs", json={"messages": HELLO}, headers=b).status_code == 202
    assert first.test_client().get("/v1/jobs", headers=a).status_code == 200  # reads are not counted
    for app in (first, second):
        services(app).db_engine.dispose()


def test_the_limit_is_off_when_zero_and_fails_open_without_redis(
    test_dir: Path, profiles_file: Path, database_url: str
) -> None:
    app = limited_app(test_dir, profiles_file, database_url, "redis://127.0.0.1:9/0", RATE_LIMIT_PER_MIN=1)
    for _ in range(2):  # the limiter cannot count; the submit itself says the queue is down
        assert error_of(app.test_client().post("/v1/jobs", json={"messages": HELLO}), 503)["code"] == (
            "queue_unavailable"
        )
    services(app).db_engine.dispose()


@pytest.fixture
def stream_server(
    test_dir: Path, profiles_file: Path, database_url: str, redis_url: str
) -> Iterator[tuple[str, Flask]]:
    app = limited_app(
        test_dir, profiles_file, database_url, redis_url, MAX_STREAMS_PER_CLIENT=2, SSE_HEARTBEAT_S=0.2
    )
    with serve(app) as url:
        yield url, app
    services(app).db_engine.dispose()


def open_stream(stack: ExitStack, url: str, readers: list[Iterator[str]]) -> httpx.Response:
    """Open an SSE stream held by `stack`; `readers` keeps its line reader (dropping it closes the stream)."""
    response = stack.enter_context(httpx.stream("GET", url, timeout=10))
    if response.status_code == 200:
        readers.append(response.iter_lines())
        assert next(readers[-1]) == ": stream open"
    return response


def test_open_streams_per_client_are_limited_and_freed_when_a_client_leaves(
    stream_server: tuple[str, Flask],
) -> None:
    base, app = stream_server
    job_id = app.test_client().post("/v1/jobs", json={"messages": HELLO}).get_json()["id"]  # stays queued
    events, readers = f"{base}/v1/jobs/{job_id}/events", []
    with ExitStack() as first_two:
        assert [open_stream(first_two, events, readers).status_code for _ in range(2)] == [200, 200]
        with ExitStack() as third:
            refused = open_stream(third, events, readers)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            assert refused.read() and refused.json()["error"]["code"] == "too_many_streams"
        before = job_count(app)
        chat = {"model": "latency_first", "messages": HELLO, "stream": True}
        assert httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=10).status_code == 429
        assert job_count(app) == before  # refused before a job was made
    deadline = time.monotonic() + 10  # the server notices the closed connections at its next keep-alive
    while True:
        with ExitStack() as again:
            if open_stream(again, events, readers).status_code == 200:
                break
        assert time.monotonic() < deadline, "the closed streams' slots were never freed"
        time.sleep(0.2)
