"""A worker whose profile says `model = "paced:N"` runs jobs through the real stack on the paced engine."""

from __future__ import annotations

import time
from pathlib import Path

from engine.preflight import PACED_CONTEXT
from engine.prompt import render_prompt
from engine.tiny import build_harmony_tokenizer
from engine.types import GenerationRequest
from tests.support.pipeline import FINISHED, live_workers, refused_worker, stack_env
from tests.support.services import flushed_redis_url, migrate

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
