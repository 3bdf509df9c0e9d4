"""/openapi.json documents every route from the request and answer models; schemathesis finds no 5xx
against it, and every answer (theirs, and real objects made here) conforms to its documented schema."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from app import create_app
from app.auth import CONSOLE
from app.chat.render import chat_completion
from app.db import db_session
from app.gate_runs.views import PNG_SIGNATURE
from app.jobs.render import job_json
from app.jobs.store import JobOutcome, claim_job, finish_job
from app.models import JobStatus, utcnow
from app.openapi_operations import JSON, OPERATIONS, Operation
from app.ops.heartbeats import WorkerHeartbeat, write_heartbeat
from app.quality import QualitySignals
from app.services import services
from app.webhooks.models import WebhookAttempt
from tests.support.apps import FAKE_TAGS
from tests.support.tiny_tools import WEATHER_TOOL


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every URL rule the app serves, but the console's HTML pages."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(f"{CONSOLE}."):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # /v1/jobs/<job_id> -> /v1/jobs/{job_id}
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), path))
    return routes


def test_the_document_covers_every_route_and_names_the_profiles(idle_app: Flask) -> None:
    document = idle_app.test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == flask_routes(idle_app)
    schemas = document["components"]["schemas"]
    assert {"JobCreate", "ChatCompletionCreate", "BatchCreate", "Error"} <= set(schemas)
    assert schemas["JobCreate"]["properties"]["profile"]["enum"][:2] == ["latency_first", "quality_first"]
    create_job = document["paths"]["/v1/jobs"]["post"]
    assert create_job["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobCreate"
    }
    assert {"200", "202", "400", "401", "413", "429", "503"} <= set(create_job["responses"])
    assert document["paths"]["/healthz"]["get"]["security"] == []

    answers = {  # (method, path, status): the schema of its JSON success body
        (method, path, status): answer["content"][JSON]["schema"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        if status.startswith("2") and JSON in answer["content"]
    }
    assert answers and {"type": "object"} not in answers.values()  # no bare object any more
    assert all(set(schema) == {"$ref"} for schema in answers.values()), answers
    assert all(schema["$ref"].removeprefix("#/components/schemas/") in schemas for schema in answers.values())
    job, response = {"$ref": "#/components/schemas/Job"}, {"$ref": "#/components/schemas/ResponseObject"}
    assert answers["post", "/v1/jobs", "202"] == answers["post", "/v1/jobs", "200"] == job  # 200: a replay
    assert (
        answers["get", "/v1/jobs/{job_id}", "200"]
        == answers["post", "/v1/jobs/{job_id}/cancel", "200"]
        == job
    )
    assert answers["post", "/v1/responses", "200"] == answers["get", "/v1/responses/{response_id}", "200"]
    assert answers["post", "/v1/responses", "200"] == response
    assert answers["post", "/v1/chat/completions", "200"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert document["paths"]["/v1/responses"]["post"]["responses"]["200"]["content"]["text/event-stream"] == {
        "schema": {}
    }
    # always present means required; a job's times are null until they happen
    assert {"id", "status", "created_at", "finished_at", "result", "usage"} <= set(schemas["Job"]["required"])
    assert {"type": "null"} in schemas["Job"]["properties"]["finished_at"]["anyOf"]
    assert schemas["Job"]["additionalProperties"] is True  # a field added later keeps the document right
    not_ready = document["paths"]["/readyz"]["get"]["responses"]["503"]["content"][JSON]["schema"]
    assert not_ready == {
        "anyOf": [{"$ref": "#/components/schemas/Readiness"}, {"$ref": "#/components/schemas/Error"}]
    }


@pytest.fixture
def api_schema(idle_app: Flask, tiny_model_dir: Path) -> Iterator[schemathesis.BaseSchema]:
    """The API over real Redis with no worker consuming (jobs stay queued), workers announced as alive,
    the profiles' tokenizer on disk (/tokenize answers). A call that waits for its job (a valid chat
    completion or response) sees its client gone (GONE_CLIENT) and cancels the job at once, since no
    worker would ever end it."""
    app = create_app({**idle_app.config, "CLIENT_RETRY_GRACE_S": 0})
    announce_workers(app)  # /readyz answers 200, as in production
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    services(app).db_engine.dispose()


@pytest.fixture
def gone_client() -> Iterator[dict[str, Any]]:
    """WSGI environ of a client that has closed its connection (app/jobs/waiting.py client_gone)."""
    ours, theirs = socket.socketpair()
    theirs.close()
    yield {"werkzeug.socket": ours}
    ours.close()


def announce_workers(app: Flask, model_id: str = "tiny-gptoss") -> None:
    """A live heartbeat of a worker for every profile, as workers write them ("" model: still loading)."""
    for profile in services(app).profiles:
        beat = WorkerHeartbeat(
            f"{profile}@schemathesis", profile, (profile,), model_id, {}, os.getpid(), 0, time.time()
        )
        write_heartbeat(services(app).redis, beat, ttl_s=600)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_no_operation_answers_a_server_error(
    api_schema: schemathesis.BaseSchema, gone_client: dict[str, Any], operation: Operation
) -> None:
    documented = api_schema[operation.path][operation.method]
    valid_or_not = documented.as_strategy(GenerationMode.POSITIVE) | documented.as_strategy(
        GenerationMode.NEGATIVE
    )

    @given(case=valid_or_not)
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        checks = [not_a_server_error, response_schema_conformance]
        case.call_and_validate(checks=checks, environ_overrides=gone_client)

    call()


def test_inputs_schemathesis_found_are_refused_with_4xx(idle_app: Flask) -> None:
    """Each once answered 500: an explicit `stop: null`, a NUL in an id (PostgreSQL text cannot hold
    it), non-ASCII text where base64 was expected."""
    client = idle_app.test_client()
    assert client.post("/v1/jobs", json={"prompt": "hi", "stop": None}).status_code == 202
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}], "stop": None}
    assert client.post("/v1/chat/completions", json=chat).status_code == 404  # the model, not the stop
    batch = {"input_file_id": "file-\u0000", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    assert client.post("/v1/batches", json=batch).status_code == 400
    assert client.get("/v1/jobs/job_%00").status_code in (400, 404)
    figures = {"achieved_qps": 1, "error_rate": 0, "ttft_s": {"p95": 1}, "e2e_s": {"p95": 1}}
    report = {
        **{"id": "gate_0123456789ab", "trigger": "cli", "profile": "p", "slo": {"name": "s"}, "passed": True},
        **{"failures": [], "started_at": 0, "finished_at": 1, "figures": figures},
    }
    gate_run = {"report": report, "markdown": "", "plot_png_base64": "\u00e9\u00e9"}
    assert client.post("/v1/gate/runs", json=gate_run).status_code == 400


class DocumentedApi:
    """Calls the API and checks each JSON answer against the schema the document gives its status."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.document = client.get("/openapi.json").get_json()

    def __call__(self, method: str, path: str, status: int, url: str | None = None, **kwargs: Any) -> Any:
        """The JSON answer to `method url` (`path`, its documented template, when no url is given)."""
        answer = self.client.open(url or path, method=method.upper(), **kwargs)
        assert answer.status_code == status, answer.get_data(as_text=True)
        responses = self.document["paths"][path][method]["responses"]
        body = answer.get_json()
        assert self.errors(responses[str(status)]["content"][JSON]["schema"], body) == [], body
        return body

    def errors(self, schema: dict[str, Any], body: Any) -> list[str]:
        """Where `body` breaks `schema` (a $ref into the document's components); [] where it conforms."""
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": self.document["components"]})
        return [f"/{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(body)]


CALL = {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Paris"}'}
BROKEN_CALL = {"id": "call_8", "name": "get_time", "arguments": "{", "error": "get_time was not offered"}


def finished(app: Flask, job_id: str, **outcome: Any) -> dict[str, Any]:
    """Run the job as a worker would (claim it, then finish it with an answer and all it may carry)."""
    signals = QualitySignals(True, False, False, 0.5, 0.0)
    answer = {"content": "Sunny.", "reasoning": "Look it up.", "tool_calls": (CALL, BROKEN_CALL), **outcome}
    with app.app_context(), db_session() as session:
        claim_job(session, job_id, "test-worker")
        job = finish_job(
            session,
            job_id,
            JobOutcome(
                JobStatus.SUCCEEDED, finish_reason="tool_calls", prompt_tokens=10, completion_tokens=5,
                reasoning_tokens=2, ttft_s=0.1, e2e_s=0.5, tags=FAKE_TAGS, quality=signals.as_columns(),
                **answer,
            ),
        )  # fmt: skip
        assert job is not None
        return job_json(job)


def test_real_jobs_responses_and_chat_completions_match_their_schemas(idle_app: Flask) -> None:
    """Queued, replayed, finished and cancelled jobs and responses, as the API shows them."""
    api = DocumentedApi(idle_app.test_client())
    body, key = {"prompt": "hi", "metadata": {"k": "v"}}, {"Idempotency-Key": secrets.token_hex(8)}
    queued = api("post", "/v1/jobs", 202, json=body, headers=key)
    assert api("post", "/v1/jobs", 200, json=body, headers=key)["id"] == queued["id"]  # a replay
    done = api("post", "/v1/jobs", 202, json={"prompt": "weather?", "tools": [WEATHER_TOOL]})
    finished(idle_app, done["id"])
    done = api("get", "/v1/jobs/{job_id}", 200, url=f"/v1/jobs/{done['id']}")
    assert done["result"]["tool_calls"][1]["error"] and done["quality"] and done["tags"] == FAKE_TAGS
    cancelled = api("post", "/v1/jobs/{job_id}/cancel", 200, url=f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert len(api("get", "/v1/jobs", 200, query_string={"limit": 100})["data"]) >= 2

    # a chat completion needs a worker to answer; its render function makes it from the finished job
    completion = chat_completion(done, "tiny")
    assert api.errors({"$ref": "#/components/schemas/ChatCompletion"}, completion) == []
    assert {"tool_calls", "invalid_tool_calls", "reasoning"} <= set(completion["choices"][0]["message"])
    assert api.errors({"$ref": "#/components/schemas/ChatCompletion"}, {**completion, "usage": None}) != []

    weather = {"model": "quality_first", "input": "Weather in Paris?", "background": True}
    weather |= {
        "tools": [{"type": "function", **WEATHER_TOOL}],
        "tool_choice": {"type": "function", "name": "get_weather"},
    }
    response = api("post", "/v1/responses", 200, json=weather)
    assert (response["status"], response["output"]) == ("queued", [])
    finished(idle_app, response["job_id"])
    response = api("get", "/v1/responses/{response_id}", 200, url=f"/v1/responses/{response['id']}")
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    assert (
        response["usage"]
        and response["invalid_tool_calls"]
        and response["tool_choice"]["name"] == "get_weather"
    )
    other = api(
        "post", "/v1/responses", 200, json={"model": "latency_first", "input": "hi", "background": True}
    )
    url = f"/v1/responses/{other['id']}/cancel"
    assert api("post", "/v1/responses/{response_id}/cancel", 200, url=url)["status"] == "cancelled"


def test_real_files_batches_gate_runs_and_ops_answers_match_their_schemas(
    idle_app: Flask, tiny_model_dir: Path
) -> None:
    api = DocumentedApi(idle_app.test_client())
    chat = {"model": "latency_first", "messages": [{"role": "user", "content": "Hi"}]}
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": chat}

    def upload(**fields: str) -> Any:
        content = io.BytesIO(json.dumps(line).encode() + b"\n")
        data = {"purpose": "batch", "file": (content, "in.jsonl"), **fields}
        return api("post", "/v1/files", 200, data=data, content_type="multipart/form-data")

    file = upload()
    expiring = upload(**{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    assert expiring["expires_at"] == expiring["created_at"] + 3600
    assert api("get", "/v1/files/{file_id}", 200, url=f"/v1/files/{file['id']}") == file
    api("get", "/v1/files", 200)
    batch_body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = api("post", "/v1/batches", 200, json={**batch_body, "metadata": {"k": "v"}})
    api("get", "/v1/batches/{batch_id}", 200, url=f"/v1/batches/{batch['id']}")
    api("get", "/v1/batches", 200)
    api("post", "/v1/batches/{batch_id}/cancel", 200, url=f"/v1/batches/{batch['id']}/cancel")
    unread = upload()
    assert api("delete", "/v1/files/{file_id}", 200, url=f"/v1/files/{unread['id']}")["deleted"] is True

    figures = {"achieved_qps": 1, "error_rate": 0, "ttft_s": {"p95": 1}, "e2e_s": {"p95": None}}
    report = {
        **{
            "id": f"gate_{secrets.token_hex(8)}",
            "trigger": "cli",
            "profile": "latency_first",
            "slo": {"name": "s"},
        },
        **{"passed": False, "failures": ["p95_ttft_s 1 > 0.5"], "started_at": 0, "finished_at": 1.5},
        "figures": figures,
    }
    png = base64.b64encode(PNG_SIGNATURE + b"plot").decode()
    run = api(
        "post", "/v1/gate/runs", 201, json={"report": report, "markdown": "# run", "plot_png_base64": png}
    )
    api("get", "/v1/gate/runs", 200)
    assert api("get", "/v1/gate/runs/{run_id}", 200, url=run["url"])["report"]["id"] == run["id"]

    tokens = api("post", "/tokenize", 200, json={"model": "latency_first", "prompt": "Hello"})["tokens"]
    api("post", "/tokenize", 200, json={"model": "latency_first", "messages": chat["messages"]})
    api("post", "/detokenize", 200, json={"model": "latency_first", "tokens": tokens})

    for path in ("/v1/models", "/v1/profiles", "/v1/stats", "/v1/usage", "/healthz", "/openapi.json"):
        api("get", path, 200)
    api(
        "get",
        "/v1/stats",
        200,
        query_string={"profile": "latency_first", "since": "0", "include_gate": "true"},
    )
    ready = {"query_string": {"profile": "latency_first"}}
    assert api("get", "/readyz", 200)["profiles"]["latency_first"] == "not_ready"  # the API itself is ready
    assert api("get", "/readyz", 503, **ready)["status"] == "not_ready"  # no worker: the same body
    announce_workers(idle_app, model_id="")  # workers up, their models still loading: not ready yet
    beats = api("get", "/readyz", 503, **ready)["checks"]["worker_heartbeats"]
    assert beats["latency_first"][0]["state"] == "loading"
    announce_workers(idle_app)
    beats = api("get", "/readyz", 200, **ready)["checks"]["worker_heartbeats"]
    assert beats["latency_first"][0]["state"] == "serving"
    api("get", "/readyz", 404, query_string={"profile": "nope"})


def test_real_webhooks_and_their_delivery_attempts_match_their_schemas(idle_app: Flask) -> None:
    allowing = create_app({**idle_app.config, "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"})
    api = DocumentedApi(allowing.test_client())
    webhook = api(
        "post", "/v1/webhooks", 201, json={"url": "http://127.0.0.1:9/hooks", "events": ["job.failed"]}
    )
    assert webhook["secret"].startswith("whsec_")
    url = f"/v1/webhooks/{webhook['id']}"
    assert "secret" not in api("get", "/v1/webhooks/{webhook_id}", 200, url=url)
    api("get", "/v1/webhooks", 200)
    with allowing.app_context(), db_session() as session:
        session.add(
            WebhookAttempt(
                webhook_id=webhook["id"], delivery_id="whdel_1", event_id="evt_1", event_type="job.failed",
                attempt=1, status_code=None, error="ConnectError: refused", delivery_status="pending",
                started_at=utcnow(), duration_s=0.01,
            )
        )  # fmt: skip
        session.commit()
    attempts = api("get", "/v1/webhooks/{webhook_id}/deliveries", 200, url=f"{url}/deliveries")
    assert attempts["data"][0]["error"] == "ConnectError: refused"
    assert api("delete", "/v1/webhooks/{webhook_id}", 200, url=url)["deleted"] is True
    services(allowing).db_engine.dispose()
