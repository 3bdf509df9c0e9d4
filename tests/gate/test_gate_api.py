"""Gate runs over HTTP and gate traffic in the stats, without workers (SQLite and Postgres)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.db import db_session
from app.models import Job
from tests.support.apps import api_app, app_config
from tests.support.gate import assert_valid_png, gate_run_of, sample
from tests.support.services import empty_database

GATE_API_REDIS_DB = 5  # no worker consumes it: submitted jobs stay queued


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gate_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty migrated database for this module, so runs and job counts are exact."""
    with empty_database(request, tmp_path_factory.mktemp("gate-sqlite"), "gptoss_gate") as url:
        yield url


@pytest.fixture(scope="module")
def gate_app(
    test_dir: Path, profiles_file: Path, gate_database_url: str, redis_base_url: str
) -> Iterator[Flask]:
    redis_url = f"{redis_base_url}/{GATE_API_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    with api_app(app_config(test_dir, profiles_file, gate_database_url, redis_url)) as app:
        yield app


@pytest.fixture
def client(gate_app: Flask) -> FlaskClient:
    return gate_app.test_client()


def upload_body(samples: list) -> dict:
    run = gate_run_of(samples)
    return {
        "report": run.report,
        "markdown": run.markdown(),
        "plot_png_base64": base64.b64encode(run.plot_png).decode(),
    }


def test_stored_runs_are_listed_newest_first_with_report_markdown_and_plot(client: FlaskClient) -> None:
    empty = client.get("/console/gate")  # this module's database is its own: no run stored yet
    assert empty.status_code == 200 and "No stored runs yet" in empty.get_data(as_text=True)
    passing = upload_body([sample(i, 0.5, 2.0) for i in range(5)])
    failing = upload_body([sample(i, 15.0, 20.0) for i in range(5)])
    for body in (passing, failing):
        response = client.post("/v1/gate/runs", json=body)
        assert response.status_code == 201, response.get_json()
    listed = client.get("/v1/gate/runs").get_json()
    assert [run["id"] for run in listed["data"]] == [failing["report"]["id"], passing["report"]["id"]]
    newest = listed["data"][0]
    assert newest["passed"] is False and newest["failures"] == ["p95_ttft_s 15.0 > 10.0 (+50%)"]
    assert newest["figures"]["p95_ttft_s"] == 15.0 and newest["slo"] == "personal"
    assert newest["plot_url"] == f"/v1/gate/runs/{newest['id']}/plot.png" and "report" not in newest

    page = client.get("/v1/gate/runs?limit=1").get_json()
    assert page["has_more"] and len(page["data"]) == 1
    rest = client.get(f"/v1/gate/runs?limit=1&after={page['last_id']}").get_json()
    assert [run["id"] for run in rest["data"]] == [passing["report"]["id"]] and not rest["has_more"]

    detail = client.get(newest["url"]).get_json()
    assert detail["report"] == failing["report"] and detail["markdown"] == failing["markdown"]
    plot = client.get(detail["plot_url"])
    assert plot.status_code == 200 and plot.mimetype == "image/png"
    assert_valid_png(plot.get_data())


def test_bad_uploads_and_unknown_runs_get_json_errors(client: FlaskClient) -> None:
    body = upload_body([sample(0, 0.5, 2.0)])
    assert client.post("/v1/gate/runs", json=body).status_code == 201
    again = client.post("/v1/gate/runs", json=body)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "gate_run_exists"
    not_png = client.post(
        "/v1/gate/runs", json={**body, "plot_png_base64": base64.b64encode(b"GIF89a").decode()}
    )
    assert not_png.status_code == 400 and not_png.get_json()["error"]["param"] == "plot_png_base64"
    no_verdict = {**body, "report": {k: v for k, v in body["report"].items() if k != "passed"}}
    missing = client.post("/v1/gate/runs", json=no_verdict)
    assert missing.status_code == 400 and missing.get_json()["error"]["param"] == "report.passed"
    assert client.get("/v1/gate/runs/gate_000000000000").status_code == 404
    assert client.get("/v1/gate/runs/gate_000000000000/plot.png").status_code == 404
    assert client.get("/v1/gate/runs?limit=0").status_code == 400


def test_gate_jobs_are_tagged_and_left_out_of_stats_unless_asked_for(
    client: FlaskClient, gate_app: Flask
) -> None:
    user = client.post("/v1/jobs", json={"prompt": "Hi", "max_tokens": 8}).get_json()
    probes = [
        client.post("/v1/jobs", json={"prompt": "Hi", "max_tokens": 8, "metadata": {"gptoss_gate": "gate_1"}})
        for _ in range(2)
    ]
    assert all(probe.status_code == 202 for probe in probes)
    with gate_app.app_context(), db_session() as session:
        flags = dict(session.execute(sa.select(Job.id, Job.is_gate)).tuples().all())
    assert flags[user["id"]] is False and all(flags[p.get_json()["id"]] is True for p in probes)

    users_only = client.get("/v1/stats").get_json()
    everything = client.get("/v1/stats?include_gate=true").get_json()
    assert users_only["count"] == 1 and users_only["by_status"]["queued"] == 1
    assert users_only["include_gate"] is False
    assert everything["count"] == 3 and everything["include_gate"] is True
