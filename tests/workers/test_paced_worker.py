"""A worker whose profile says `model = "paced:N"` runs jobs through the real stack on the paced engine."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from app.batches.lifecycle import check_batch
from app.db import db_session
from app.models import Job
from app.services import services
from engine.preflight import PACED_CONTEXT
from engine.prompt import render_prompt
from engine.tiny import build_harmony_tokenizer
from engine.types import GenerationRequest
from tests.support.batches import batch_app, create_batch, ingest, jsonl, request_line
from tests.support.pipeline import FINISHED, live_workers, refused_worker, stack_env
from tests.support.services import flushed_redis_url, migrate
from workers.tasks import lifecycle_context

PACED_REDIS_DB = 2

PACED_PROFILE = """
[profiles.latency_first]
model = "{model}"
model_size = "none"
gpu_mode = "pipeline"
max_batch = 4
max_tokens = 64
"""


def test_a_job_runs_end_to_end_on_the_paced_engine_tagged_as_such(
    tmp_path: Path, redis_base_url: str
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(PACED_PROFILE.format(model="paced:200"))
    database_url = f"sqlite:///{tmp_path / 'gptoss.db'}"
    migrate(database_url)
    redis_url = flushed_redis_url(redis_base_url, PACED_REDIS_DB)
    with live_workers(tmp_path, profiles, database_url, redis_url, tmp_path / "data", ("latency_first",)) as (
        app,
        _,
    ):
        client = app.test_client()
        body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
        counted = client.post("/tokenize", json={"model": "latency_first", "messages": body["messages"]})
        submitted = client.post("/v1/jobs", json=body).get_json()
        deadline = time.monotonic() + 30
        while (job := client.get(f"/v1/jobs/{submitted['id']}").get_json())["status"] not in FINISHED:
            assert time.monotonic() < deadline, job
            time.sleep(0.02)
    assert job["status"] == "succeeded", job
    assert job["tags"] == {
        "engine": "paced",
        "model_id": "paced-200tps",
        "model_size": "none",
        "gpu_mode": "none",
        "profile": "latency_first",
    }
    assert job["result"]["finish_reason"] == "length"
    assert "The paced engine writes this sentence".startswith(job["result"]["content"])
    # the API counts a prompt as the paced engine reads it: gpt-oss's harmony, in the tiny tokenizer
    request = GenerationRequest(messages=tuple(body["messages"]), reasoning_effort="medium")
    prompt = render_prompt(build_harmony_tokenizer(), True, request)
    assert counted.get_json() == {"tokens": prompt, "count": len(prompt), "max_model_len": PACED_CONTEXT}
    assert (job["usage"]["prompt_tokens"], job["usage"]["completion_tokens"]) == (len(prompt), 20)
    assert job["timings"]["e2e_s"] >= 0.09  # 20 tokens at 200 per second


def test_a_worker_with_a_bad_paced_rate_refuses_to_start_naming_the_profile(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(PACED_PROFILE.format(model="paced:abc"))
    env = stack_env(
        profiles, f"sqlite:///{tmp_path / 'gptoss.db'}", "redis://127.0.0.1:1/0", tmp_path / "data"
    )
    worker = refused_worker("latency_first", env, tmp_path / "worker.log")
    log = (tmp_path / "worker.log").read_text()
    assert worker.returncode != 0, log
    assert "profile latency_first cannot start on this machine" in log
    assert f'{profiles} [profiles.latency_first] model = "paced:abc": the paced engine needs' in log


def test_a_batchs_lines_travel_several_to_a_message_and_each_runs_exactly_once(
    tmp_path: Path, redis_base_url: str
) -> None:
    """16 slots, 1 kept for interactive work: 15 for lines, a quarter of them (3) to a message. Every line
    runs once, on the real worker, and the batch ends with each answer in its line's place."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(PACED_PROFILE.format(model="paced:500").replace("max_batch = 4", "max_batch = 16"))
    database_url = f"sqlite:///{tmp_path / 'gptoss.db'}"
    migrate(database_url)
    redis_url = flushed_redis_url(redis_base_url, PACED_REDIS_DB)
    with live_workers(tmp_path, profiles, database_url, redis_url, tmp_path / "data", ("latency_first",)):
        app = batch_app(tmp_path / "api", profiles, database_url, redis_url)
        client = app.test_client()
        batch = create_batch(client, [request_line(f"r{i}", f"line {i}", max_tokens=3) for i in range(40)])
        ingest(app, batch["id"])
        with app.app_context(), db_session() as session:
            lines = sa.select(Job.task_id).where(Job.batch_id == batch["id"]).order_by(Job.batch_line)
            task_ids = list(session.scalars(lines))
        # the lines of one message share its task id, in file order: 13 messages of 3, then 1 of 1
        assert [len(list(run)) for _, run in itertools.groupby(task_ids)] == [3] * 13 + [1]
        assert len(set(task_ids)) == 14
        deadline = time.monotonic() + 60
        while True:
            with app.app_context(), db_session() as session:
                query = sa.select(Job.status, Job.attempts).where(Job.batch_id == batch["id"])
                states = session.execute(query).all()
            if all(status in FINISHED for status, _ in states):
                break
            assert time.monotonic() < deadline, Counter(status for status, _ in states)
            time.sleep(0.05)
        assert Counter(states) == {("succeeded", 1): 40}  # each line claimed and run once
        with app.app_context():
            check_batch(lifecycle_context(app), batch["id"])
        done = client.get(f"/v1/batches/{batch['id']}").get_json()
        assert done["status"] == "completed" and done["request_counts"]["completed"] == 40
        output = jsonl(client, done["output_file_id"])
        assert [line["custom_id"] for line in output] == [f"r{i}" for i in range(40)]
        services(app).db_engine.dispose()
