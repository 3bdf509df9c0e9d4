"""Sampling defaults per profile: profiles.toml, else the model's generation_config.json, else OpenAI's;
filled in at submit after routing and stored with the job, with the submit's date."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app.cache.store import is_cacheable
from app.jobs import submit
from app.jobs.defaults import model_sampling
from app.jobs.schemas import generation_request
from engine.prompt import today_utc
from tests.support.apps import api_app, app_config
from tests.support.paths import REPO_ROOT
from tests.support.services import IDLE_REDIS_DB, flushed_redis_url, migrate

HARMONY_MODEL = REPO_ROOT / "tests" / "fixtures" / "tiny-gptoss-harmony"
HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
PROFILE_KEYS = ('model_size = "20b"', 'gpu_mode = "pipeline"', "max_batch = 1", "max_tokens = 64")


def sampling_model(folder: Path, **generation: object) -> Path:
    """The harmony tiny model's config and tokenizer (what the API reads) with this generation_config."""
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(HARMONY_MODEL / name, folder / name)
    shipped = json.loads((HARMONY_MODEL / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(shipped | generation))
    return folder


def profile(name: str, model: Path | str, *extra: str) -> str:
    return "\n".join((f"[profiles.{name}]", f'model = "{model}"', *PROFILE_KEYS, *extra, ""))


@pytest.fixture
def app(tmp_path: Path, redis_base_url: str) -> Iterator[Flask]:
    """Profiles: gptoss on a model like gpt-oss (generation_config temperature 1.0, top_p 1.0) with no
    keys; tuned with all three keys; absent on a model that is not on this machine."""
    gptoss = sampling_model(tmp_path / "gptoss", temperature=1.0, top_p=1.0, do_sample=True)
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        profile("gptoss", gptoss)
        + profile("tuned", gptoss, "temperature = 0.3", "top_p = 0.9", 'reasoning_effort = "high"')
        + profile("absent", "openai/gpt-oss-nowhere")
        + '[routing]\nfast_profile = "gptoss"\nstrong_profile = "tuned"\n'
    )
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(database_url)
    config = app_config(tmp_path, profiles, database_url, flushed_redis_url(redis_base_url, IDLE_REDIS_DB))
    with api_app(config) as app:
        yield app


def submitted_request(app: Flask, body: dict, headers: dict | None = None) -> dict:
    response = app.test_client().post("/v1/jobs", json=body, headers=headers or {})
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()["request"]


def test_a_profile_without_keys_samples_as_its_model_says_and_the_job_stores_it(app: Flask) -> None:
    request = submitted_request(app, HELLO | {"profile": "gptoss"})
    assert (request["temperature"], request["top_p"], request["reasoning_effort"]) == (1.0, 1.0, "medium")
    assert request["current_date"] == today_utc()
    assert not is_cacheable(request)  # sampled: never served from the response cache
    engine_request = generation_request(request)  # what the worker runs: no profile lookup
    assert (engine_request.temperature, engine_request.current_date) == (1.0, today_utc())


def test_profile_keys_come_first_and_the_request_before_them(app: Flask) -> None:
    request = submitted_request(app, HELLO | {"profile": "tuned"})
    assert (request["temperature"], request["top_p"], request["reasoning_effort"]) == (0.3, 0.9, "high")
    given = {"temperature": 0.0, "top_p": 0.5, "reasoning_effort": "low", "current_date": "2025-08-05"}
    request = submitted_request(app, HELLO | {"profile": "tuned"} | given)
    assert {key: request[key] for key in given} == given


@pytest.mark.parametrize(("route", "temperature"), [("latency", 1.0), ("quality", 0.3)])
def test_auto_gets_the_defaults_of_the_profile_it_chose(app: Flask, route: str, temperature: float) -> None:
    request = submitted_request(app, HELLO | {"profile": "auto", "metadata": {"route": route}})
    assert (request["profile"], request["temperature"]) == ("auto", temperature)


def test_a_model_not_on_this_machine_samples_with_openais_defaults(app: Flask) -> None:
    request = submitted_request(app, HELLO | {"profile": "absent"})
    assert (request["temperature"], request["top_p"], request["reasoning_effort"]) == (1.0, 1.0, "medium")


def test_a_replay_on_another_day_is_the_same_request(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    key = {"Idempotency-Key": "across-midnight"}
    first = app.test_client().post("/v1/jobs", json=HELLO | {"profile": "gptoss"}, headers=key)
    monkeypatch.setattr(submit, "today_utc", lambda: "2099-01-01")
    again = app.test_client().post("/v1/jobs", json=HELLO | {"profile": "gptoss"}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]


@pytest.mark.parametrize("date", ["2025-13-01", "yesterday", "2025-1-1"])
def test_a_bad_current_date_names_the_field(app: Flask, date: str) -> None:
    response = app.test_client().post("/v1/jobs", json=HELLO | {"current_date": date})
    assert (response.status_code, response.get_json()["error"]["param"]) == (400, "current_date")


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ({"temperature": 0.6, "top_p": 0.95}, {"temperature": 0.6, "top_p": 0.95}),
        ({"do_sample": False, "temperature": 0.6}, {"temperature": 0.0}),  # greedy, whatever it says
        ({"temperature": 5, "top_p": 0}, {}),  # values the API would refuse are ignored
        ({"temperature": True, "top_p": "high"}, {}),
        ({}, {}),
    ],
)
def test_the_model_generation_config_is_read_where_it_is_valid(
    tmp_path: Path, generation: dict, expected: dict
) -> None:
    assert model_sampling(sampling_model(tmp_path / "m", **generation)) == expected


def test_no_generation_config_says_nothing(tmp_path: Path) -> None:
    assert model_sampling(tmp_path) == {}
