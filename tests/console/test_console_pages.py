"""The console's pages through Flask's test client (no browser): each renders whole without JavaScript,
filters and pages, shows a key only its own things, signs in with a cookie and refuses forged forms."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.auth import CONSOLE_COOKIE, KEYS_RECHECK_S
from app.console import views as console_views
from app.console.csrf import CSRF_COOKIE
from app.db import db_session
from app.gate_runs import store as gate_store
from app.keys import store as key_store
from app.models import JobStatus
from tests.support.batches import create_batch, ingest, request_line, run
from tests.support.gate import gate_run_of, sample
from tests.support.keys import KeyClient, Team

HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def token_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: FlaskClient, key: str) -> Any:
    """What a person does: open the sign-in page, paste the key, submit."""
    token = token_of(page(client, "/console/login"))
    return client.post("/console/login", data={"key": key, "csrf_token": token, "next": "/console/jobs"})


def signed_in(keyed: KeyClient) -> FlaskClient:
    client = keyed.client.application.test_client()
    assert sign_in(client, keyed.key).status_code == 302
    return client


def submit(keyed: KeyClient, **body: Any) -> str:
    response = keyed.post("/v1/jobs", json={**HELLO, **body})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_every_page_renders_without_javascript_in_single_user_mode(
    idle_app: Flask, idle_client: FlaskClient
) -> None:
    job_id = idle_client.post("/v1/jobs", json=HELLO).get_json()["id"]
    overview = page(idle_client, "/console/")
    assert "latency_first" in overview and "quality_first" in overview and "Usage" in overview
    assert job_id in page(idle_client, "/console/jobs")
    job = page(idle_client, f"/console/jobs/{job_id}")
    assert "queued" in job and "Cancel this job" in job and "Hello" in job  # the request
    assert "<h1>Batches</h1>" in page(idle_client, "/console/batches")
    # the session's database may hold other tests' runs: the empty page is tested on an empty one
    assert "<h1>Release gate</h1>" in page(idle_client, "/console/gate")  # (tests/gate/test_gate_api.py)
    assert idle_client.get("/console/login").headers["Location"].endswith("/console/")
    for path in ("/console/", "/console/jobs"):
        headers = idle_client.get(path).headers
        assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
        assert headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"
        assert '<meta name="viewport"' in page(idle_client, path)


def test_an_unknown_job_or_batch_is_a_404_page_not_json(idle_client: FlaskClient) -> None:
    assert "No job with id" in page(idle_client, "/console/jobs/job_nope", 404)
    assert "batch_nope" in page(idle_client, "/console/batches/batch_nope", 404)
    assert "status" in page(idle_client, "/console/jobs?status=bogus", 400)


def test_jobs_filter_by_status_profile_and_age_and_page(
    idle_app: Flask, idle_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [idle_client.post("/v1/jobs", json={**HELLO, "profile": p}).get_json()["id"]
           for p in ("latency_first", "quality_first", "latency_first")]  # fmt: skip
    run(idle_app, ids[0], JobStatus.SUCCEEDED, content="Paris.")
    succeeded = page(idle_client, "/console/jobs?status=succeeded&since=1h")
    assert ids[0] in succeeded and ids[1] not in succeeded and ids[2] not in succeeded
    quality = page(idle_client, "/console/jobs?profile=quality_first&status=")
    assert ids[1] in quality and ids[0] not in quality
    monkeypatch.setattr(console_views, "PAGE_SIZE", 1)  # the session's database holds other tests' jobs
    first = page(idle_client, "/console/jobs?profile=latency_first")
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older and ids[2] in first and ids[0] not in first
    second = page(idle_client, older.group(1).replace("&amp;", "&"))
    assert ids[0] in second and ids[2] not in second and ids[1] not in second and "Newest" in second


def test_the_finished_job_page_shows_answer_tags_timings_and_quality(
    idle_app: Flask, idle_client: FlaskClient
) -> None:
    job_id = idle_client.post("/v1/jobs", json=HELLO).get_json()["id"]
    run(idle_app, job_id, JobStatus.SUCCEEDED, content="The capital is Paris.")
    html = page(idle_client, f"/console/jobs/{job_id}")
    assert "The capital is Paris." in html and "succeeded" in html and "Cancel this job" not in html
    assert "model_id" in html and "tiny" in html and "TTFT" in html and "Quality signals" in html


def test_signing_in_keeps_the_key_in_a_strict_httponly_cookie(team: Team) -> None:
    client = team.alice.client.application.test_client()
    first = client.get("/console/jobs?status=queued")
    assert first.status_code == 302
    assert "/console/login?next=/console/jobs?status%3Dqueued" in first.headers["Location"]
    assert "Sign in with an API key" in page(client, first.headers["Location"], 401)
    refused = sign_in(client, "sk-wrong")
    assert refused.status_code == 401 and "not accepted" in refused.get_data(as_text=True)
    response = sign_in(client, team.alice.key)
    assert response.status_code == 302 and response.headers["Location"] == "/console/jobs"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(CONSOLE_COOKIE))
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie
    assert "Jobs" in page(client, "/console/jobs")
    secure = team.alice.client.application.test_client()
    token = token_of(page(secure, "https://localhost/console/login"))
    over_https = secure.post(
        "https://localhost/console/login", data={"key": team.alice.key, "csrf_token": token}
    )
    assert "Secure" in next(
        c for c in over_https.headers.getlist("Set-Cookie") if c.startswith(CONSOLE_COOKIE)
    )


def test_the_cookie_reads_the_api_but_never_writes_to_it(team: Team) -> None:
    client = signed_in(team.alice)
    job_id = submit(team.alice)
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200  # what the page's script reads
    assert client.post("/v1/jobs", json=HELLO).status_code == 401
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 401


def test_a_cancel_without_the_forms_token_or_from_another_origin_is_refused(team: Team) -> None:
    client = signed_in(team.alice)
    job_id = submit(team.alice)
    token = token_of(page(client, f"/console/jobs/{job_id}"))
    cancel = f"/console/jobs/{job_id}/cancel"
    assert client.post(cancel).status_code == 403
    assert client.post(cancel, data={"csrf_token": "forged"}).status_code == 403
    forged = client.post(cancel, data={"csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and "evil.example" in forged.get_data(as_text=True)
    assert team.alice.get(f"/v1/jobs/{job_id}").get_json()["status"] == "queued"
    done = client.post(cancel, data={"csrf_token": token}, headers={"Origin": "http://localhost"})
    assert done.status_code == 302 and done.headers["Location"] == f"/console/jobs/{job_id}"
    assert team.alice.get(f"/v1/jobs/{job_id}").get_json()["status"] == "cancelled"
    again = client.post(cancel, data={"csrf_token": token})  # already ended: the page says so
    assert again.status_code == 302 and "cancelled" in page(client, again.headers["Location"])
    client.delete_cookie(CSRF_COOKIE)
    assert client.post(cancel, data={"csrf_token": token}).status_code == 403


def test_signing_out_forgets_the_key_even_a_revoked_one(team: Team) -> None:
    client = signed_in(team.alice)
    token = token_of(page(client, "/console/"))
    assert client.post("/console/logout").status_code == 403
    response = client.post("/console/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/console/login"
    assert client.get("/console/").status_code == 302
    bob = signed_in(team.bob)
    token = token_of(page(bob, "/console/"))
    with team.app.app_context(), db_session() as session:
        name = key_store.key_directory(session, ())[team.bob.key_id]
        key_store.revoke_key(session, name)
    time.sleep(KEYS_RECHECK_S)  # how long the API may trust what it read of the keys table
    assert "invalid_api_key" in bob.get("/console/").headers["Location"]
    assert bob.post("/console/logout", data={"csrf_token": token}).status_code == 302
    assert bob.get_cookie(CONSOLE_COOKIE) is None


def test_a_key_sees_only_its_own_jobs_and_an_admin_filters_by_key(team: Team) -> None:
    alice_job, bob_job = submit(team.alice), submit(team.bob)
    alice = signed_in(team.alice)
    listed = page(alice, "/console/jobs")
    assert alice_job in listed and bob_job not in listed and 'name="key"' not in listed
    assert "No job with id" in page(alice, f"/console/jobs/{bob_job}", 404)
    token = token_of(listed)
    assert alice.post(f"/console/jobs/{bob_job}/cancel", data={"csrf_token": token}).status_code == 404
    admin = signed_in(team.admin)
    everyone = page(admin, "/console/jobs")
    assert alice_job in everyone and bob_job in everyone and 'name="key"' in everyone
    only_bob = page(admin, f"/console/jobs?key={team.bob.key_id}")  # or its name, as the form sends
    assert bob_job in only_bob and alice_job not in only_bob
    not_bobs = page(alice, f"/console/jobs?key={team.bob.key_id}")  # not an admin: the filter is not hers
    assert alice_job in not_bobs and bob_job not in not_bobs


def test_the_overview_counts_tokens_per_key_per_day(team: Team) -> None:
    job_id = submit(team.alice)
    run(team.app, job_id, JobStatus.SUCCEEDED, content="Hi")
    alice = page(signed_in(team.alice), "/console/")
    assert re.search(r"<td>\d{4}-\d\d-\d\d</td><td>alice-\w+</td><td>1</td><td>3</td>\s*<td>2</td>", alice)
    assert page(signed_in(team.bob), "/console/").count("alice-") == 0


def test_a_batch_page_shows_progress_files_and_cancels_with_the_token(team: Team) -> None:
    batch = create_batch(team.alice, [request_line("a"), request_line("b")])
    ingest(team.app, batch["id"])
    client = signed_in(team.alice)
    html = page(client, f"/console/batches/{batch['id']}")
    assert 'max="2" value="0"' in html and "0 % · 0 done, 0 failed, of 2" in html
    assert f"/v1/files/{batch['input_file_id']}/content" in html
    assert batch["id"] in page(client, "/console/batches")
    assert batch["id"] not in page(signed_in(team.bob), "/console/batches")
    response = client.post(f"/console/batches/{batch['id']}/cancel", data={"csrf_token": token_of(html)})
    assert response.status_code == 302
    assert team.alice.get(f"/v1/batches/{batch['id']}").get_json()["status"] in ("cancelling", "cancelled")


def test_the_gate_page_shows_each_runs_verdict_and_plot(team: Team) -> None:
    stored = gate_run_of([sample(i, 0.2, 1.0 + i) for i in range(10)])
    with team.app.app_context(), db_session() as session:
        gate_store.save_gate_run(session, stored.report, "# run", stored.plot_png)
    client = signed_in(team.bob)
    html = page(client, "/console/gate")
    run_id = stored.report["id"]
    assert run_id in html and ("PASS" in html or "FAIL" in html)
    assert f'src="/v1/gate/runs/{run_id}/plot.png"' in html
    plot = client.get(f"/v1/gate/runs/{run_id}/plot.png")  # the <img> loads with the cookie's key
    assert plot.status_code == 200 and plot.data.startswith(b"\x89PNG")
