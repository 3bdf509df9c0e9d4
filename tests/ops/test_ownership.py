"""Every job, file, batch and response belongs to the key that made it: another key gets the 404 of an id
that never existed, on every route; admin keys (stored with --admin, or GPTOSS_API_KEYS) see them all."""

from __future__ import annotations

import io
import json
from typing import Any

import sqlalchemy as sa
from flask import Flask

from app.batches.lifecycle import check_batch
from app.batches.models import Batch, StoredFile
from app.db import db_session
from app.models import Job, JobStatus
from app.queue import fair_bucket, lane_queue
from app.services import services
from tests.support.apps import insert_queued_job
from tests.support.batches import ingest, request_line, run
from tests.support.keys import KeyClient, Team
from workers.tasks import lifecycle_context

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


def not_found(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 404, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    return error


def same_as_missing(other: Any, missing: Any, real_id: str, missing_id: str) -> None:
    """Another key's thing is answered exactly as an id that never existed (its id in place)."""
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == json.loads(missing.get_data(as_text=True).replace(missing_id, real_id))


def owner_of(app: Flask, model: Any, row_id: str) -> str | None:
    with app.app_context(), db_session() as session:
        return session.scalar(sa.select(model.owner).where(model.id == row_id))


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {item["id"] for item in response.get_json()["data"]}


def test_a_job_is_seen_and_touched_only_by_its_key_and_admins(team: Team) -> None:
    job = team.alice.post("/v1/jobs", json=HELLO).get_json()
    assert owner_of(team.app, Job, job["id"]) == team.alice.key_id
    missing = "job_0000000000000000000000000000"
    same_as_missing(
        team.bob.get(f"/v1/jobs/{job['id']}"), team.bob.get(f"/v1/jobs/{missing}"), job["id"], missing
    )
    not_found(team.bob.get(f"/v1/jobs/{job['id']}/events"), "job_not_found")
    not_found(team.bob.post(f"/v1/jobs/{job['id']}/cancel"), "job_not_found")
    assert job["id"] not in ids(team.bob.get("/v1/jobs"))
    assert job["id"] in ids(team.alice.get("/v1/jobs"))
    for admin in (team.admin, team.env_admin):
        assert admin.get(f"/v1/jobs/{job['id']}").status_code == 200
        assert job["id"] in ids(admin.get("/v1/jobs?limit=100"))
    events = team.alice.get(f"/v1/jobs/{job['id']}/events")
    assert events.status_code == 200 and events.mimetype == "text/event-stream"
    events.close()
    assert team.bob.get(f"/v1/jobs/{job['id']}").status_code == 404  # still queued: bob cancelled nothing
    assert team.admin.post(f"/v1/jobs/{job['id']}/cancel").get_json()["status"] == "cancelled"


def test_an_idempotency_key_replays_only_the_same_keys_job(team: Team) -> None:
    headers = {"Idempotency-Key": "same-key"}
    first = team.alice.post("/v1/jobs", json=HELLO, headers=headers)
    again = team.alice.post("/v1/jobs", json=HELLO, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    bobs = team.bob.post("/v1/jobs", json=HELLO, headers=headers)
    assert bobs.status_code == 202 and bobs.get_json()["id"] != first.get_json()["id"]
    assert owner_of(team.app, Job, bobs.get_json()["id"]) == team.bob.key_id


def test_a_response_is_seen_cancelled_and_continued_only_by_its_key(team: Team) -> None:
    body = {"model": "latency_first", "input": "hi", "background": True}
    response = team.alice.post("/v1/responses", json=body).get_json()
    assert owner_of(team.app, Job, response["job_id"]) == team.alice.key_id
    missing = "resp_0000000000000000000000000000"
    for path in ("/v1/responses/{}", "/v1/responses/{}?stream=true"):
        other = team.bob.get(path.format(response["id"]))
        same_as_missing(other, team.bob.get(path.format(missing)), response["id"], missing)
    not_found(team.bob.post(f"/v1/responses/{response['id']}/cancel"), "response_not_found")
    with team.app.app_context(), db_session() as session:  # finished, so it could be continued
        session.execute(sa.update(Job).where(Job.id == response["job_id"]).values(status=JobStatus.SUCCEEDED))
        session.commit()
    continued = team.bob.post("/v1/responses", json={**body, "previous_response_id": response["id"]})
    never = team.bob.post("/v1/responses", json={**body, "previous_response_id": missing})
    assert continued.status_code == never.status_code == 400  # as OpenAI answers an unknown one
    assert continued.get_json() == json.loads(never.get_data(as_text=True).replace(missing, response["id"]))
    assert (
        team.alice.post("/v1/responses", json={**body, "previous_response_id": response["id"]}).status_code
        == 200
    )
    assert team.admin.get(f"/v1/responses/{response['id']}").get_json()["status"] == "completed"


def upload(client: KeyClient, lines: list[str]) -> dict[str, Any]:
    data = {"purpose": "batch", "file": (io.BytesIO(("\n".join(lines) + "\n").encode()), "in.jsonl")}
    response = client.post("/v1/files", data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_a_file_is_read_listed_and_deleted_only_by_its_key(team: Team) -> None:
    file = upload(team.alice, [request_line("a")])
    assert owner_of(team.app, StoredFile, file["id"]) == team.alice.key_id
    missing = "file-000000000000000000000000"
    for path in ("/v1/files/{}", "/v1/files/{}/content"):
        other = team.bob.get(path.format(file["id"]))
        same_as_missing(other, team.bob.get(path.format(missing)), file["id"], missing)
    same_as_missing(
        team.bob.delete(f"/v1/files/{file['id']}"),
        team.bob.delete(f"/v1/files/{missing}"),
        file["id"],
        missing,
    )
    assert file["id"] not in ids(team.bob.get("/v1/files"))
    assert file["id"] in ids(team.alice.get("/v1/files")) and file["id"] in ids(team.admin.get("/v1/files"))
    batch = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    refused = team.bob.post("/v1/batches", json=batch)  # another key's file: as if it did not exist
    assert refused.status_code == 400 and "does not exist" in refused.get_json()["error"]["message"]
    assert team.alice.get(f"/v1/files/{file['id']}/content").status_code == 200
    assert team.env_admin.delete(f"/v1/files/{file['id']}").get_json()["deleted"] is True


def test_a_batch_its_jobs_and_result_files_belong_to_the_key_that_made_it(team: Team) -> None:
    file = upload(team.alice, [request_line("a"), request_line("b")])
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = team.alice.post("/v1/batches", json=body).get_json()
    missing = "batch_00000000000000000000000000000000"
    same_as_missing(
        team.bob.get(f"/v1/batches/{batch['id']}"),
        team.bob.get(f"/v1/batches/{missing}"),
        batch["id"],
        missing,
    )
    not_found(team.bob.post(f"/v1/batches/{batch['id']}/cancel"), "batch_not_found")
    assert batch["id"] not in ids(team.bob.get("/v1/batches"))
    assert batch["id"] in ids(team.alice.get("/v1/batches")) and batch["id"] in ids(
        team.admin.get("/v1/batches")
    )

    assert ingest(team.app, batch["id"]) == "in_progress"
    with team.app.app_context(), db_session() as session:
        jobs = list(session.execute(sa.select(Job.id, Job.owner).where(Job.batch_id == batch["id"])))
    assert len(jobs) == 2 and {owner for _, owner in jobs} == {team.alice.key_id}
    not_found(team.bob.get(f"/v1/jobs/{jobs[0][0]}"), "job_not_found")
    run(team.app, jobs[0][0], JobStatus.SUCCEEDED, content="A")
    run(team.app, jobs[1][0], JobStatus.FAILED, error="boom")
    with team.app.app_context():
        check_batch(lifecycle_context(team.app), batch["id"])
    done = team.alice.get(f"/v1/batches/{batch['id']}").get_json()
    assert done["status"] == "completed"
    for file_id in (done["output_file_id"], done["error_file_id"]):
        assert owner_of(team.app, StoredFile, file_id) == team.alice.key_id
        assert team.alice.get(f"/v1/files/{file_id}/content").status_code == 200
        not_found(team.bob.get(f"/v1/files/{file_id}/content"), "file_not_found")
    assert owner_of(team.app, Batch, batch["id"]) == team.alice.key_id


def test_rows_owned_by_nobody_are_seen_by_admins_only(team: Team) -> None:
    with team.app.app_context(), db_session() as session:  # made before keys (migration 0007: owner NULL)
        job = insert_queued_job(session, "latency_first", {"prompt": "old"})
    not_found(team.alice.get(f"/v1/jobs/{job.id}"), "job_not_found")
    assert job.id not in ids(team.alice.get("/v1/jobs"))
    assert team.admin.get(f"/v1/jobs/{job.id}").status_code == 200


def test_a_keys_stats_count_its_own_jobs_and_an_admins_show_usage_per_key(team: Team) -> None:
    for _ in range(2):
        team.alice.post("/v1/jobs", json=HELLO)
    team.bob.post("/v1/jobs", json=HELLO)
    bobs = team.bob.get("/v1/stats").get_json()
    assert bobs["count"] == 1 and "usage_by_key" not in bobs
    admins = team.admin.get("/v1/stats").get_json()
    per_key = {usage["key_id"]: usage for usage in admins["usage_by_key"]}
    assert per_key[team.alice.key_id]["jobs"] == 2 and per_key[team.bob.key_id]["jobs"] == 1
    assert per_key[team.alice.key_id]["name"].startswith("alice-")
    assert admins["count"] >= 3


def test_a_chat_completions_job_belongs_to_its_key(team: Team) -> None:
    body = {"model": "latency_first", **HELLO, "stream": True}
    response = team.bob.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    [job] = team.bob.get("/v1/jobs?limit=1").get_json()["data"]
    response.close()  # the client left: its job is cancelled
    assert owner_of(team.app, Job, job["id"]) == team.bob.key_id
    not_found(team.alice.get(f"/v1/jobs/{job['id']}"), "job_not_found")
    assert team.env_admin.get(f"/v1/jobs/{job['id']}").get_json()["status"] == "cancelled"


def test_priority_high_is_for_admin_keys_and_each_job_waits_in_its_keys_bucket(team: Team) -> None:
    refused = team.alice.post("/v1/jobs", json={**HELLO, "priority": "high"})
    error = refused.get_json()["error"]
    assert refused.status_code == 403 and (error["param"], error["code"]) == (
        "priority",
        "priority_not_allowed",
    )
    chat = {**HELLO, "model": "latency_first", "service_tier": "priority"}
    assert team.alice.post("/v1/chat/completions", json=chat).status_code == 403
    client = services(team.app).redis
    for who, priority in ((team.alice, "low"), (team.bob, "normal"), (team.admin, "high")):
        job = who.post("/v1/jobs", json={**HELLO, "priority": priority})
        assert job.status_code == 202, job.get_json()
        queue = lane_queue("latency_first", priority, fair_bucket(who.key_id))
        raw: Any = client.lrange(queue, 0, -1)
        assert any(job.get_json()["id"] in message.decode() for message in raw), queue
        team.admin.post(f"/v1/jobs/{job.get_json()['id']}/cancel")
