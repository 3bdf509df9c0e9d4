"""End to end with a worker on the harmony tiny gpt-oss: cache hits skip the engine, quality is scored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.cache.store import ResponseCache
from app.services import services
from app.settings import CacheSettings
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import FINISHED, live_workers
from tests.support.ports import fresh_port
from tests.support.prometheus_text import FIVE_TAGS, series, value
from tests.support.services import migrate

LIVE_REDIS_DB = 4
HARMONY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"  # always answers "Hello, friend!"
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Live:
    app: Flask
    client: FlaskClient
    metrics_port: int

    def submit(self, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json=body, headers=headers or {})
        assert response.status_code == 202, response.get_json()
        return response.get_json()

    def wait_finished(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.client.get(f"/v1/jobs/{job_id}").get_json())["status"] not in FINISHED:
            assert time.monotonic() < deadline, f"timed out; job is {job}"
            time.sleep(0.05)
        return job

    def worker_metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def cache_size(self) -> int:
        return ResponseCache(services(self.app).redis, CacheSettings(100, 600)).size()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_base_url: str) -> Iterator[Live]:
    """The API (cache on) and one latency_first worker serving the harmony tiny gpt-oss."""
    folder = tmp_path_factory.mktemp("cache-live")
    profiles = folder / "profiles.toml"
    profiles.write_text(
        f'[profiles.latency_first]\nmodel = "{HARMONY_MODEL}"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 2\nmax_tokens = 256\ntemperature = 0.0\n"
    )
    database_url = f"sqlite:///{folder / 'live.db'}"
    migrate(database_url)
    redis_url = f"{redis_base_url}/{LIVE_REDIS_DB}"
    port = fresh_port()
    with live_workers(
        folder, profiles, database_url, redis_url, folder, ("latency_first",),
        env={"GPTOSS_WORKER_METRICS_PORT": str(port), "GPTOSS_CACHE_MAX_ENTRIES": "100"},
        config={"CACHE_MAX_ENTRIES": 100},
    ) as (app, _):  # fmt: skip
        yield Live(app, app.test_client(), port)


def jobs_finished_by_worker(live: Live) -> float:
    return value(live.worker_metrics(), "gptoss_jobs_finished_total")


def test_a_repeated_deterministic_request_is_a_hit_the_worker_never_sees(live: Live) -> None:
    first = live.wait_finished(live.submit(messages=HI, max_tokens=64, temperature=0)["id"])
    assert first["status"] == "succeeded" and first["worker"].startswith("latency_first@")
    assert first["result"]["content"] == "Hello, friend!" and first["cached"] is False
    assert first["quality"] == {
        "harmony_ok": True,
        "empty_answer": False,
        "truncated": False,
        "reasoning_share": round(len("Greet back.") / len("Greet back.Hello, friend!"), 4),
        "repetition": 0.0,
    }
    deadline = time.monotonic() + 10
    while live.cache_size() < 1:  # the worker stores the answer just after saving the job
        assert time.monotonic() < deadline, "the worker never stored the answer"
        time.sleep(0.05)
    finished_before = jobs_finished_by_worker(live)

    second = live.submit(messages=HI, max_tokens=64, temperature=0)
    assert (second["status"], second["cached"], second["cached_from"]) == ("succeeded", True, first["id"])
    assert second["result"] == first["result"] and second["tags"] == first["tags"]
    assert second["worker"] is None and second["started_at"] is None
    time.sleep(0.5)  # a worker that (wrongly) got the job would have finished it by now
    assert live.wait_finished(second["id"])["worker"] is None
    assert jobs_finished_by_worker(live) == finished_before

    chat = live.client.post(
        "/v1/chat/completions",
        json={"model": "latency_first", "messages": HI, "max_tokens": 64, "temperature": 0},
    )
    assert chat.status_code == 200
    assert chat.get_json()["choices"][0]["message"]["content"] == "Hello, friend!"
    assert live.client.get(f"/v1/jobs/{chat.get_json()['job_id']}").get_json()["cached_from"] == first["id"]
    assert jobs_finished_by_worker(live) == finished_before

    no_cache = live.submit(headers={"Cache-Control": "no-cache"}, messages=HI, max_tokens=64, temperature=0)
    assert no_cache["status"] == "queued"
    assert live.wait_finished(no_cache["id"])["worker"].startswith("latency_first@")


def test_two_identical_requests_that_asked_for_no_determinism_are_both_generated(live: Live) -> None:
    """No seed, no temperature given: the profile's greedy default is no request for a repeated answer
    (the SDK, LangChain and litellm send neither), so each is generated; `cache: false` is taken in chat."""
    finished_before = jobs_finished_by_worker(live)
    chat = {"model": "latency_first", "messages": HI, "max_tokens": 64}
    answers = [live.client.post("/v1/chat/completions", json=chat).get_json() for _ in range(2)]
    jobs = [live.client.get(f"/v1/jobs/{answer['job_id']}").get_json() for answer in answers]
    assert [(job["cached"], job["worker"] is not None) for job in jobs] == [(False, True)] * 2
    opted_out = live.client.post("/v1/chat/completions", json={**chat, "temperature": 0, "cache": False})
    assert opted_out.status_code == 200
    assert live.client.get(f"/v1/jobs/{opted_out.get_json()['job_id']}").get_json()["worker"] is not None
    assert jobs_finished_by_worker(live) == finished_before + 3


def test_a_sampled_request_is_always_run_by_the_worker(live: Live) -> None:
    finished_before = jobs_finished_by_worker(live)
    for _ in range(2):
        job = live.submit(messages=HI, max_tokens=32, temperature=0.9)
        assert (job["status"], job["cached"]) == ("queued", False)
        done = live.wait_finished(job["id"])
        assert done["status"] == "succeeded" and done["worker"].startswith("latency_first@")
    assert jobs_finished_by_worker(live) == finished_before + 2


def test_quality_signals_are_exported_with_the_five_tags_and_summarised_in_stats(live: Live) -> None:
    live.wait_finished(live.submit(messages=HI, max_tokens=64, seed=5, temperature=0.0, cache=False)["id"])
    metrics = live.worker_metrics()
    scored = series(metrics, "gptoss_answers_scored_total")
    assert scored and all(FIVE_TAGS <= set(sample.labels) for sample in scored)
    assert scored[0].labels["model_id"] == "tiny-gptoss-harmony"
    jobs = live.client.get("/v1/jobs?limit=100").get_json()["data"]
    by_worker = [job["quality"] for job in jobs if job["worker"] is not None and job["quality"] is not None]
    assert value(metrics, "gptoss_answers_scored_total") == len(by_worker)
    empty = sum(quality["empty_answer"] for quality in by_worker)  # sampled output may be empty
    assert value(metrics, "gptoss_answers_empty_total") == empty
    assert series(metrics, "gptoss_answer_repetition_count")
    stats = live.client.get("/v1/stats").get_json()
    quality = stats["quality"]
    assert quality["samples"] >= 1 and quality["empty_answer_rate"] is not None
    assert stats["cache_hits"] >= 2
