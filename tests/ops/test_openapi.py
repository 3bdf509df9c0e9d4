"""/openapi.json documents every route from the request models; schemathesis finds no 5xx against it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from app.openapi_operations import OPERATIONS, Operation
from app.ops.heartbeats import WorkerHeartbeat, write_heartbeat
from app.services import services


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every URL rule the app serves."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
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
    assert {"202", "401", "413", "422", "429", "503"} <= set(create_job["responses"])
    assert document["paths"]["/healthz"]["get"]["security"] == []


@pytest.fixture
def api_schema(idle_app: Flask, tiny_model_dir: Path) -> schemathesis.BaseSchema:
    """The API over real Redis with no worker consuming (jobs stay queued), workers announced as alive,
    the profiles' tokenizer on disk (/tokenize answers)."""
    client = services(idle_app).redis
    for profile in services(idle_app).profiles:  # /readyz answers 200, as in production
        beat = WorkerHeartbeat(
            f"{profile}@schemathesis", profile, (profile,), "", {}, os.getpid(), 0, time.time()
        )
        write_heartbeat(client, beat, ttl_s=600)
    return schemathesis.openapi.from_wsgi("/openapi.json", idle_app)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_no_operation_answers_a_server_error(
    api_schema: schemathesis.BaseSchema, operation: Operation
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
        case.call_and_validate(checks=[not_a_server_error])

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
    assert client.post("/v1/gate/runs", json=gate_run).status_code == 422
