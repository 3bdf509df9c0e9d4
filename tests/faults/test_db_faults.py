"""A database that is down: every route that needs it answers 503 (never 500), and no job is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from app import create_app
from app.services import services
from tests.support.apps import app_config
from tests.support.services import IDLE_REDIS_DB

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
CALLS = [
    ("post", "/v1/jobs", HELLO),
    ("get", "/v1/jobs", None),
    ("get", "/v1/jobs/job_x", None),
    ("post", "/v1/jobs/job_x/cancel", None),
    ("get", "/v1/jobs/job_x/events", None),
    ("post", "/v1/chat/completions", {"model": "latency_first", **HELLO}),
    ("get", "/v1/batches", None),
    ("get", "/v1/files", None),
    ("get", "/v1/stats", None),
]


@pytest.mark.parametrize(
    "down_url",
    ["postgresql+psycopg://postgres@127.0.0.1:9/gone", "sqlite:////nonexistent-folder/gptoss.db"],
    ids=["postgres", "sqlite"],
)
def test_a_database_that_is_down_gives_503_and_queues_nothing(
    test_dir: Path, profiles_file: Path, redis_base_url: str, down_url: str
) -> None:
    redis_url = f"{redis_base_url}/{IDLE_REDIS_DB}"
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    app = create_app(app_config(test_dir, profiles_file, down_url, redis_url))
    client = app.test_client()
    for method, path, body in CALLS:
        response = getattr(client, method)(path, json=body)
        assert response.status_code == 503, (path, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
    assert queue.llen("latency_first") == 0  # the insert failed first: no message without a row
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"].startswith("error")
    assert client.get("/healthz").status_code == 200
    services(app).db_engine.dispose()
