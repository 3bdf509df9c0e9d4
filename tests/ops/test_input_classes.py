"""Input that once answered 500 (or the server's HTML, or a dropped stream) now answers a 4xx JSON error
naming the problem: one test per class. The chunked body and the long URL go through real gunicorn."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from tests.support.gunicorn import gunicorn_api
from tests.support.services import IDLE_REDIS_DB

HELLO = [{"role": "user", "content": "Hello"}]


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    error = response.get_json()["error"]
    assert set(error) == {"type", "message", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("depth", [100, 200_000])
def test_a_body_nested_past_any_request_is_a_400(idle_client: FlaskClient, depth: int) -> None:
    body = "[" * depth + "]" * depth
    for path in ("/v1/jobs", "/v1/chat/completions", "/v1/responses"):
        response = idle_client.post(path, data=body, content_type="application/json")
        assert error_of(response, 400)["code"] == "json_too_deep"


def test_a_lone_surrogate_in_text_is_a_400_naming_the_field(idle_client: FlaskClient) -> None:
    raw = '{"model": "latency_first", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    error = error_of(idle_client.post("/v1/chat/completions", data=raw, content_type="application/json"), 400)
    assert (error["code"], error["param"]) == ("invalid_unicode", "messages[0].content")
    paired = '{"prompt": "an emoji \\ud83d\\ude00 is fine"}'  # a surrogate pair is one character
    assert idle_client.post("/v1/jobs", data=paired, content_type="application/json").status_code == 202


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_since_out_of_the_range_of_dates_is_a_400(idle_client: FlaskClient, since: str) -> None:
    assert error_of(idle_client.get("/v1/stats", query_string={"since": since}), 400)["param"] == "since"


def test_a_file_name_with_control_characters_is_refused_and_nothing_is_stored(
    idle_client: FlaskClient,
) -> None:
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}})
    before = idle_client.get("/v1/files").get_json()["data"]
    upload = {"purpose": "batch", "file": (io.BytesIO(line.encode()), "bad\x07name\x1b[31m.jsonl")}
    error = error_of(idle_client.post("/v1/files", data=upload, content_type="multipart/form-data"), 400)
    assert (error["code"], error["param"]) == ("invalid_file_name", "file")
    assert idle_client.get("/v1/files").get_json()["data"] == before


@pytest.mark.parametrize(
    "event_id", ["18446744073709551616-0", "1-18446744073709551616", "99999999999999999999999"]
)
def test_a_resume_id_out_of_a_stream_ids_range_is_a_400(idle_client: FlaskClient, event_id: str) -> None:
    job = idle_client.post("/v1/jobs", json={"messages": HELLO}).get_json()
    response = idle_client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": event_id})
    assert error_of(response, 400)["param"] == "Last-Event-ID"


@pytest.fixture(scope="module")
def gunicorn_url(
    tmp_path_factory: pytest.TempPathFactory, profiles_file: Path, redis_base_url: str
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("gunicorn-input")
    redis_url = f"{redis_base_url}/{IDLE_REDIS_DB}"
    with gunicorn_api(folder, profiles_file, redis_url, GPTOSS_MAX_CONTENT_LENGTH="4096") as url:
        yield url


def test_a_chunked_body_over_the_limit_is_a_413_not_cut_into_invalid_json(gunicorn_url: str) -> None:
    big = json.dumps({"prompt": "x" * 10_000}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends Transfer-Encoding: chunked
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = httpx.post(
        f"{gunicorn_url}/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_entity_too_large"
    small = json.dumps({"prompt": "hi"}).encode()
    accepted = httpx.post(
        f"{gunicorn_url}/v1/jobs", content=iter([small]), headers={"Content-Type": "application/json"}
    )
    assert accepted.status_code == 202, accepted.text


def test_a_very_long_url_is_a_json_414_not_the_servers_html(gunicorn_url: str) -> None:
    response = httpx.get(f"{gunicorn_url}/v1/jobs/job_{'x' * 20_000}")
    assert response.status_code == 414 and response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "uri_too_long"
    assert httpx.get(f"{gunicorn_url}/v1/jobs/job_{'x' * 5_000}").status_code == 404  # long, but a URL
