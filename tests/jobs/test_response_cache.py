"""The response cache without workers: keys, what may be cached, bounds, and a hit served by the API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app.cache.store import (
    CachedAnswer,
    ModelIdentity,
    ResponseCache,
    announce_model_revision,
    cache_key,
    is_cacheable,
    no_cache_header,
)
from app.jobs.schemas import JobCreate
from app.ops.served_models import announce_served_model
from app.services import services
from app.settings import CacheSettings
from engine.prompt import today_utc
from tests.support.apps import api_app, app_config
from tests.support.prometheus_text import value
from tests.support.services import migrate

CACHE_REDIS_DB = 3
MODEL = ModelIdentity("transformers-cb", "tiny-gptoss-harmony", "rev1")
TAGS = {
    "engine": "transformers-cb",
    "model_id": "tiny-gptoss-harmony",
    "model_size": "0.2m",
    "gpu_mode": "cpu",
    "profile": "latency_first",
}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def redis_client(redis_base_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_base_url}/{CACHE_REDIS_DB}")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def app(
    tmp_path: Path, profiles_file: Path, redis_base_url: str, redis_client: redis.Redis
) -> Iterator[Flask]:
    """The API with the cache on, on a fresh SQLite and a Redis db no worker consumes."""
    database_url = f"sqlite:///{tmp_path / 'cache.db'}"
    migrate(database_url)
    config = app_config(tmp_path, profiles_file, database_url, f"{redis_base_url}/{CACHE_REDIS_DB}")
    with api_app(config | {"CACHE_MAX_ENTRIES": 100}) as app:
        yield app


def answer(job_id: str = "job_original") -> CachedAnswer:
    quality = {
        "quality_harmony_ok": True,
        "quality_empty_answer": False,
        "quality_truncated": False,
        "quality_reasoning_share": 0.44,
        "quality_repetition": 0.0,
    }
    return CachedAnswer(job_id, "Hello, friend!", "Greet back.", "stop", 12, 9, TAGS, quality)


def test_keys_cover_the_model_and_every_generation_input_but_nothing_else() -> None:
    request = {"messages": HI, "max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "profile": "latency_first"}
    key = cache_key(MODEL, request)
    assert key == cache_key(MODEL, {**request, "profile": "auto", "metadata": {"user": "x"}})
    assert key == cache_key(MODEL, {**request, "temperature": 0})  # 0 and 0.0 are one value
    changed = [
        {**request, "max_tokens": 65},
        {**request, "seed": 1},
        {**request, "reasoning_effort": "high"},
        {**request, "current_date": "2026-01-02"},  # harmony's "Current date:" line
        {**request, "stop": ["."]},
        {**request, "messages": [{"role": "user", "content": "hi!"}]},
    ]
    assert all(cache_key(MODEL, other) != key for other in changed)
    assert cache_key(ModelIdentity(MODEL.engine, MODEL.model_id, "rev2"), request) != key
    assert cache_key(ModelIdentity(MODEL.engine, "other-model", MODEL.revision), request) != key


def test_only_deterministic_requests_that_did_not_opt_out_are_cacheable() -> None:
    assert is_cacheable({"temperature": 0.0})
    assert is_cacheable({"temperature": 0.8, "seed": 7})
    assert not is_cacheable({"temperature": 0.8})
    assert not is_cacheable({"temperature": 0.0, "cache": False})
    assert not is_cacheable({"temperature": 0.0, "metadata": {"cache": "false"}})
    assert not is_cacheable({"temperature": 0.0, "metadata": {"gptoss_gate": "gate_1"}})  # the gate measures
    assert no_cache_header("no-cache") and no_cache_header("max-age=0, No-Store")
    assert not no_cache_header(None) and not no_cache_header("max-age=60")


def test_the_store_keeps_at_most_max_entries_and_expires_them(redis_client: redis.Redis) -> None:
    cache = ResponseCache(redis_client, CacheSettings(max_entries=3, ttl_s=100))
    for i in range(5):
        cache.put(f"k{i}", answer(f"job_{i}"))
        time.sleep(0.002)  # distinct store times: eviction order is by age
    assert cache.size() == 3
    assert cache.get("k0") is None and cache.get("k1") is None
    stored = cache.get("k4")
    assert stored is not None and stored.job_id == "job_4" and stored.tags == TAGS
    assert 0 < redis_client.ttl("gptoss:cache:entry:k4") <= 100  # type: ignore[operator]
    off = ResponseCache(redis_client, CacheSettings(max_entries=0, ttl_s=100))
    off.put("k9", answer())
    assert off.get("k4") is None and cache.get("k9") is None


def stored_answer_for(app: Flask, body: dict[str, Any]) -> CachedAnswer:
    """Announce the model as a worker would and store an answer for this exact request (as submitted
    today: the profile's defaults and the date filled in)."""
    client = services(app).redis
    announce_served_model(client, "latency_first", TAGS)
    announce_model_revision(client, "latency_first", MODEL.revision)
    job = JobCreate.model_validate(body, context={"profiles": services(app).profiles})
    job.fill_defaults(services(app).sampling_defaults(job.queue_profile), today_utc())
    cached = answer()
    ResponseCache(client, CacheSettings(10, 60)).put(
        cache_key(MODEL, job.model_dump(mode="json", exclude_none=True)), cached
    )
    return cached


def cache_lookups(client: FlaskClient, result: str) -> float:
    metrics = client.get("/metrics").get_data(as_text=True)
    return value(metrics, "gptoss_response_cache_lookups_total", result=result)


def test_a_hit_is_a_job_already_succeeded_by_no_worker(app: Flask) -> None:
    client = app.test_client()
    body = {"messages": HI, "profile": "latency_first", "max_tokens": 64, "temperature": 0}  # asked: greedy
    original = stored_answer_for(app, body)
    hits_before = cache_lookups(client, "hit")
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202
    job = response.get_json()
    assert (job["status"], job["cached"], job["cached_from"]) == ("succeeded", True, original.job_id)
    assert job["result"] == {
        "content": "Hello, friend!",
        "reasoning": "Greet back.",
        "finish_reason": "stop",
        "tool_calls": [],
    }
    assert job["tags"] == TAGS and job["usage"]["completion_tokens"] == 9
    assert job["worker"] is None and job["started_at"] is None and job["attempts"] == 0
    assert job["quality"]["reasoning_share"] == 0.44
    assert cache_lookups(client, "hit") == hits_before + 1
    events = client.get(f"/v1/jobs/{job['id']}/events").get_data(as_text=True)
    assert "event: delta" in events and "Hello, friend!" in events and "event: done" in events
    assert client.get("/v1/stats").get_json()["cache_hits"] == 1


@pytest.mark.parametrize(
    "extra, headers",
    [({"cache": False}, {}), ({"metadata": {"cache": "false"}}, {}), ({}, {"Cache-Control": "no-cache"})],
)
def test_a_request_that_opts_out_is_queued_for_a_worker(
    app: Flask, extra: dict[str, Any], headers: dict[str, str]
) -> None:
    body = {"messages": HI, "profile": "latency_first", "max_tokens": 64, "seed": 7}
    stored_answer_for(app, body | {k: v for k, v in extra.items() if k == "metadata"})
    job = app.test_client().post("/v1/jobs", json=body | extra, headers=headers).get_json()
    assert (job["status"], job["cached"]) == ("queued", False)
    assert job["request"].get("cache") is False or job["request"]["metadata"]["cache"] == "false"


def test_a_request_that_leaves_the_temperature_to_the_profile_is_generated_even_when_greedy(
    app: Flask,
) -> None:
    body = {"messages": HI, "profile": "latency_first", "max_tokens": 64}  # the profile's default: 0
    stored_answer_for(app, body | {"temperature": 0})  # the answer an explicit temperature 0 would get
    bypass_before = cache_lookups(app.test_client(), "bypass")
    jobs = [app.test_client().post("/v1/jobs", json=body).get_json() for _ in range(2)]
    assert [(job["status"], job["cached"]) for job in jobs] == [("queued", False)] * 2
    assert jobs[0]["request"]["temperature"] == 0.0 and jobs[0]["request"]["cache"] is False
    assert cache_lookups(app.test_client(), "bypass") == bypass_before + 2


def test_a_sampled_request_is_never_served_from_the_cache(app: Flask) -> None:
    body = {"messages": HI, "profile": "latency_first", "max_tokens": 64, "temperature": 0.7}
    stored_answer_for(app, body)  # even an entry stored under its exact key
    bypass_before = cache_lookups(app.test_client(), "bypass")
    job = app.test_client().post("/v1/jobs", json=body).get_json()
    assert (job["status"], job["cached"]) == ("queued", False)
    assert cache_lookups(app.test_client(), "bypass") == bypass_before + 1
    assert json.loads(json.dumps(job["request"]))["temperature"] == 0.7
