"""The HTTP API on SQLite and Postgres with real Redis, no worker: validation, errors, list, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.db import db_session
from app.jobs.cancel import cancel_key
from app.models import Job
from app.services import services
from tests.support.apps import TEST_MAX_TOKENS, app_config

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
CALL = {"id": "call_1", "name": "get_weather", "arguments": "{}"}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"type", "message", "param", "code"}
    return error


def test_submit_returns_202_with_a_queued_job(idle_client: FlaskClient) -> None:
    response = idle_client.post(
        "/v1/jobs", json={**HELLO, "profile": "quality_first", "metadata": {"a": "b"}}
    )
    assert response.status_code == 202
    job = response.get_json()
    assert job["id"].startswith("job_") and job["object"] == "job"
    assert (job["status"], job["profile"], job["metadata"]) == ("queued", "quality_first", {"a": "b"})
    assert isinstance(job["created_at"], int)
    assert job["request"]["max_tokens"] == TEST_MAX_TOKENS  # the profile's limit is the default
    assert idle_client.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "queued"


def test_submit_defaults_to_the_first_profile_and_accepts_a_prompt(idle_client: FlaskClient) -> None:
    job = idle_client.post("/v1/jobs", json={"prompt": "Hi", "stop": "\n", "max_tokens": 5}).get_json()
    assert job["profile"] == "latency_first"
    assert job["request"]["stop"] == ["\n"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"prompt": "x", **HELLO}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": "hello"}, "messages"),
        ({**HELLO, "profile": "fastest"}, "profile"),
        ({**HELLO, "max_tokens": TEST_MAX_TOKENS + 1}, "max_tokens"),
        ({**HELLO, "max_tokens": 0}, "max_tokens"),
        ({**HELLO, "max_tokens": "5"}, "max_tokens"),
        ({**HELLO, "max_tokens": 5.5}, "max_tokens"),
        ({**HELLO, "temperature": "hot"}, "temperature"),
        ({**HELLO, "temperature": 3}, "temperature"),
        ({**HELLO, "top_p": 0}, "top_p"),
        ({**HELLO, "seed": True}, "seed"),
        ({**HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**HELLO, "stop": 7}, "stop"),
        ({**HELLO, "reasoning_effort": "extreme"}, "reasoning_effort"),
        ({**HELLO, "metadata": {"k": 1}}, "metadata.k"),
        ({**HELLO, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**HELLO, "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({**HELLO, "model": "gpt-4"}, "model"),
        ({**HELLO, "tools": [{"type": "function", "name": "has space"}]}, "tools[0].name"),
        ({**HELLO, "tools": []}, "tools"),
        ({**HELLO, "tool_choice": "required"}, "tool_choice"),
        ({**HELLO, "tools": [TOOL], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"messages": [*HELLO["messages"], {"role": "tool", "content": "1"}]}, "messages[1].name"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]}, "messages[0].tool_calls"),
    ],
)
def test_bad_bodies_get_400_naming_the_field(idle_client: FlaskClient, body: dict, param: str) -> None:
    error = error_of(idle_client.post("/v1/jobs", json=body), 400)
    assert error["param"] == param
    assert param in error["message"]
    assert error["type"] == "invalid_request_error"


def test_max_tokens_above_the_profile_limit_names_the_limit(idle_client: FlaskClient) -> None:
    body = {**HELLO, "profile": "quality_first", "max_tokens": 10**6}
    error = error_of(idle_client.post("/v1/jobs", json=body), 400)
    assert (error["param"], error["code"]) == ("max_tokens", "max_tokens_above_limit")
    assert str(TEST_MAX_TOKENS) in error["message"] and "quality_first" in error["message"]


@pytest.mark.parametrize("data", ["not json", "{", b"\xff\xfe", ""])
def test_non_json_body_gets_400(idle_client: FlaskClient, data: str | bytes) -> None:
    response = idle_client.post("/v1/jobs", data=data, content_type="application/json")
    assert error_of(response, 400)["code"] == "invalid_json"


def test_a_json_body_that_is_not_an_object_gets_400(idle_client: FlaskClient) -> None:
    error_of(idle_client.post("/v1/jobs", json=["hello"]), 400)


def test_oversized_body_gets_413(idle_client: FlaskClient) -> None:
    body = {"prompt": "x" * (1024 * 1024 + 1)}
    error_of(idle_client.post("/v1/jobs", json=body), 413)


def test_unknown_job_404_and_wrong_method_405(idle_client: FlaskClient) -> None:
    assert error_of(idle_client.get("/v1/jobs/job_missing"), 404)["code"] == "job_not_found"
    assert error_of(idle_client.post("/v1/jobs/job_missing/cancel"), 404)["param"] == "id"
    error_of(idle_client.get("/v1/nothing-here"), 404)
    response = idle_client.delete("/v1/jobs")
    error_of(response, 405)
    assert "POST" in response.headers["Allow"]


def test_idempotency_key_returns_the_same_job(idle_client: FlaskClient) -> None:
    key = {"Idempotency-Key": f"key-{id(idle_client)}"}
    first = idle_client.post("/v1/jobs", json=HELLO, headers=key)
    again = idle_client.post("/v1/jobs", json=HELLO, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    explicit_default = idle_client.post("/v1/jobs", json={**HELLO, "profile": "latency_first"}, headers=key)
    assert explicit_default.get_json()["id"] == first.get_json()["id"]  # same request once validated
    other = idle_client.post("/v1/jobs", json={"prompt": "different"}, headers=key)
    error = error_of(other, 409)
    assert (error["param"], error["code"]) == ("Idempotency-Key", "idempotency_key_reused")


def test_list_pages_newest_first_with_filters(idle_app: Flask, idle_client: FlaskClient) -> None:
    with idle_app.app_context(), db_session() as session:
        session.execute(sa.delete(Job))
        session.commit()
    ids = [idle_client.post("/v1/jobs", json={"prompt": f"p{i}"}).get_json()["id"] for i in range(5)]
    quality = idle_client.post("/v1/jobs", json={"prompt": "q", "profile": "quality_first"}).get_json()["id"]
    idle_client.post(f"/v1/jobs/{ids[0]}/cancel")

    page = idle_client.get("/v1/jobs?limit=2&profile=latency_first").get_json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [job["id"] for job in page["data"]] == [ids[4], ids[3]]
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    rest = idle_client.get(f"/v1/jobs?limit=10&profile=latency_first&after={page['last_id']}").get_json()
    assert [job["id"] for job in rest["data"]] == [ids[2], ids[1], ids[0]] and rest["has_more"] is False

    assert [j["id"] for j in idle_client.get("/v1/jobs?status=cancelled").get_json()["data"]] == [ids[0]]
    assert [j["id"] for j in idle_client.get("/v1/jobs?profile=quality_first").get_json()["data"]] == [
        quality
    ]
    empty = idle_client.get(f"/v1/jobs?after={ids[0]}").get_json()
    assert (empty["data"], empty["first_id"], empty["has_more"]) == ([], None, False)


@pytest.mark.parametrize(
    ("query", "param"), [("limit=0", "limit"), ("limit=x", "limit"), ("status=done", "status")]
)
def test_bad_list_queries_get_400(idle_client: FlaskClient, query: str, param: str) -> None:
    assert error_of(idle_client.get(f"/v1/jobs?{query}"), 400)["param"] == param


def test_cancel_of_a_queued_job_is_immediate_and_final(idle_client: FlaskClient) -> None:
    job = idle_client.post("/v1/jobs", json=HELLO).get_json()
    cancelled = idle_client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.get_json()
    assert (body["status"], body["cancel_requested"]) == ("cancelled", True)
    assert body["finished_at"] is not None and body["result"]["finish_reason"] == "cancelled"
    error = error_of(idle_client.post(f"/v1/jobs/{job['id']}/cancel"), 409)
    assert error["code"] == "job_finished" and "cancelled" in error["message"]


def test_cancel_of_a_running_job_sets_the_flag_and_the_redis_signal(idle_app: Flask) -> None:
    from app.jobs import store as job_store

    client = idle_app.test_client()
    job_id = client.post("/v1/jobs", json=HELLO).get_json()["id"]
    with idle_app.app_context(), db_session() as session:
        assert job_store.claim_job(session, job_id, "test@host")
    body = client.post(f"/v1/jobs/{job_id}/cancel").get_json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)
    assert services(idle_app).redis.get(cancel_key(job_id)) == b"1"


def test_profiles_and_health(idle_client: FlaskClient) -> None:
    profiles = idle_client.get("/v1/profiles").get_json()
    assert [p["id"] for p in profiles["data"]] == ["latency_first", "quality_first"]
    assert profiles["data"][1]["max_batch"] == 1
    assert idle_client.get("/healthz").get_json() == {"status": "ok"}
    ready = idle_client.get("/readyz")
    assert ready.status_code == 200  # the API itself is ready, though nobody consumes its queues
    body = ready.get_json()
    assert body["checks"]["database"] == body["checks"]["redis"] == "ok"
    assert body["checks"]["workers"] == {"latency_first": [], "quality_first": []}
    assert body["profiles"] == {"latency_first": "not_ready", "quality_first": "not_ready"}
    profile = idle_client.get("/readyz?profile=quality_first")
    assert profile.status_code == 503 and profile.get_json()["status"] == "not_ready"
    unknown = error_of(idle_client.get("/readyz?profile=fastest"), 404)
    assert unknown["param"] == "profile" and "'fastest'" in unknown["message"]


def test_redis_down_at_submit_gives_503_and_leaves_no_row(
    test_dir: Path, profiles_file: Path, database_url: str
) -> None:
    app = create_app(app_config(test_dir, profiles_file, database_url, "redis://127.0.0.1:9/0"))
    with app.app_context(), db_session() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Job))
    error = error_of(app.test_client().post("/v1/jobs", json=HELLO, headers={"Idempotency-Key": "down"}), 503)
    assert error["code"] == "queue_unavailable"
    with app.app_context(), db_session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == before
    assert app.test_client().get("/readyz").status_code == 503
    services(app).db_engine.dispose()


def test_config_comes_from_env_at_start(
    monkeypatch: pytest.MonkeyPatch, test_dir: Path, profiles_file: Path, database_url: str
) -> None:
    monkeypatch.setenv("GPTOSS_PROFILES", str(profiles_file))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("GPTOSS_MAX_CONTENT_LENGTH", "100")
    app = create_app()
    assert app.config["MAX_CONTENT_LENGTH"] == 100
    error_of(app.test_client().post("/v1/jobs", json={"prompt": "x" * 200}), 413)
    services(app).db_engine.dispose()
