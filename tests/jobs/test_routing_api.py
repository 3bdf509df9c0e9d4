"""Profile `auto` through the API with no worker: routing by the request, by queue backlog, stored reasons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.batches.ingest import _job_row as job_row_of_line
from app.batches.lines import BatchRequest, LineContext, parse_request_line
from app.models import Job, JobStatus
from app.routing.auto import ProfileLoad
from app.services import services
from tests.support.apps import api_app, app_config
from tests.support.services import migrate

ROUTING_REDIS_DB = 3
HARD = "Write a Python function that parses ISO dates, then explain step by step how it handles time zones."
SIMPLE = "What is the capital of France?"


@pytest.fixture(scope="module")
def routing_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A profiles file with a [routing] table that rereads the load at every request, and a fresh DB."""
    folder = tmp_path_factory.mktemp("routing")
    profiles = folder / "profiles.toml"
    profiles.write_text(
        '[profiles.latency_first]\nmodel = "demo"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 4\nmax_tokens = 512\ntemperature = 0.0\n\n"
        '[profiles.quality_first]\nmodel = "demo"\nmodel_size = "120b"\ngpu_mode = "tensor"\n'
        "max_batch = 2\nmax_tokens = 1024\ntemperature = 0.0\n\n"
        "[routing]\nload_refresh_s = 0\nslo_s = 30\n"
        "default_latency_s = { latency_first = 2.0, quality_first = 6.0 }\n"
    )
    database_url = f"sqlite:///{folder / 'routing.db'}"
    migrate(database_url)
    return folder, profiles, database_url


@pytest.fixture
def app(routing_folder: tuple[Path, Path, str], redis_base_url: str) -> Iterator[Flask]:
    """The API on a Redis db no worker consumes: submitted jobs wait in their profile's queue."""
    folder, profiles, database_url = routing_folder
    redis_url = f"{redis_base_url}/{ROUTING_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    with api_app(app_config(folder, profiles, database_url, redis_url)) as app:
        yield app
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def submit(client: FlaskClient, content: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"messages": [{"role": "user", "content": content}], **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def flood(app: Flask, queue: str, jobs: int) -> None:
    """Fake a backlog: messages in the profile's Celery queue that no worker takes."""
    services(app).redis.rpush(queue, *[json.dumps({"fake": i}) for i in range(jobs)])


def test_auto_picks_the_profile_by_the_request_and_stores_why(client: FlaskClient) -> None:
    simple, hard = submit(client, SIMPLE, profile="auto"), submit(client, HARD, profile="auto")
    assert (simple["profile"], hard["profile"]) == ("latency_first", "quality_first")
    for job in (simple, hard):
        stored = client.get(f"/v1/jobs/{job['id']}").get_json()
        assert stored["routed_from"] == "auto" and stored["profile"] == job["profile"]
        assert stored["request"]["profile"] == "auto"  # the request as asked
        assert stored["route_reason"].startswith("difficulty")
    assert "code +2" in hard["route_reason"] and "multi-step +2" in hard["route_reason"]
    assert submit(client, SIMPLE, profile="latency_first")["routed_from"] is None


def test_a_backlog_on_quality_first_sends_hard_work_to_latency_first(app: Flask, client: FlaskClient) -> None:
    flood(app, "quality_first", 20)  # 6 s x (1 + 20 / 2) = 66 s expected > SLO 30 s
    job = submit(client, HARD, profile="auto")
    assert job["profile"] == "latency_first"
    assert "quality_first expects ~66 s (backlog 20) > SLO 30 s: shed to latency_first" in job["route_reason"]
    services(app).redis.delete("quality_first")
    assert submit(client, HARD, profile="auto")["profile"] == "quality_first"


def test_a_backlog_on_latency_first_sends_simple_work_to_quality_first(
    app: Flask, client: FlaskClient
) -> None:
    flood(app, "latency_first", 80)  # 2 s x (1 + 80 / 4) = 42 s > 30 s; quality_first 6 s
    job = submit(client, SIMPLE, profile="auto")
    assert job["profile"] == "quality_first" and "shed to quality_first" in job["route_reason"]


def test_auto_max_tokens_use_the_chosen_profiles_limit(client: FlaskClient) -> None:
    default = submit(client, SIMPLE, profile="auto")
    assert default["request"]["max_tokens"] == 512  # the smallest limit: the same budget whatever runs it
    long = submit(client, SIMPLE, profile="auto", max_tokens=900, metadata={"route": "latency"})
    assert long["profile"] == "quality_first" and "fits only quality_first" in long["route_reason"]
    too_long = client.post("/v1/jobs", json={"prompt": "hi", "profile": "auto", "max_tokens": 2000})
    assert too_long.status_code == 400
    error = too_long.get_json()["error"]
    assert error["param"] == "max_tokens" and "every profile auto may choose" in error["message"]


def test_an_explicit_hint_routes_the_job(client: FlaskClient) -> None:
    job = submit(client, SIMPLE, profile="auto", metadata={"route": "quality"})
    assert (job["profile"], job["route_reason"]) == ("quality_first", "hint route=quality")


def test_an_idempotent_replay_of_an_auto_job_returns_it_even_when_the_route_would_change(
    app: Flask, client: FlaskClient
) -> None:
    body = {"messages": [{"role": "user", "content": HARD}], "profile": "auto"}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "auto-1"})
    flood(app, "quality_first", 50)
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "auto-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["profile"] == "quality_first"


def test_chat_completions_accept_model_auto(client: FlaskClient) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": HARD}], "stream": True}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    newest = client.get("/v1/jobs?limit=1").get_json()["data"][0]
    assert (newest["profile"], newest["routed_from"]) == ("quality_first", "auto")
    response.close()
    assert "auto" in {model["id"] for model in client.get("/v1/models").get_json()["data"]}


def test_batch_lines_route_model_auto(app: Flask) -> None:
    profiles = services(app).profiles
    context = LineContext(profiles, {}, 10, 10_000, services(app).router)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": "auto", "messages": [{"role": "user", "content": HARD}]}
    with app.app_context():
        parsed = parse_request_line(json.dumps(line), 1, context)
        assert isinstance(parsed, BatchRequest) and parsed.job.profile == "auto"
        # ingest routes when it makes the row, then fills in the chosen profile's defaults
        row = job_row_of_line(
            "batch_1", parsed, False, context.router, services(app).sampling_defaults, owner=None
        )
    assert (row["profile"], row["routed_from"], row["request"]["profile"]) == (
        "quality_first",
        "auto",
        "auto",
    )
    assert (row["request"]["temperature"], row["request"]["reasoning_effort"]) == (0.0, "medium")
    without_router = LineContext(profiles, {}, 10, 10_000)
    rejected = parse_request_line(json.dumps(line), 1, without_router)
    assert not isinstance(rejected, BatchRequest) and "unknown profile 'auto'" in rejected.message


def test_the_load_snapshot_reads_queue_depths_and_recent_latency(app: Flask) -> None:
    sessions = services(app).sessions
    with sessions() as session:
        for e2e_s in (3.0, 9.0, 40.0):
            status = JobStatus.SUCCEEDED
            session.add(
                Job(
                    profile="quality_first",
                    status=status,
                    e2e_s=e2e_s,
                    request={},
                    request_hash="",
                    task_id="",
                )
            )
        session.commit()
    flood(app, "latency_first", 5)
    load = services(app).router.load_snapshot()
    assert load["quality_first"] == ProfileLoad(backlog=0, latency_s=9.0, measured=True)  # the median
    assert load["latency_first"] == ProfileLoad(backlog=5, latency_s=2.0, measured=False)  # the default
    with sessions() as session:  # the other tests expect the default latencies
        session.execute(sa.delete(Job).where(Job.e2e_s.is_not(None)))
        session.commit()
