"""GET /v1/usage: each key's prompt, completion and reasoning tokens and jobs by status, per profile and
per UTC day, summed from the stored jobs; a key sees only its own, an admin every key's or one."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask

from app.db import db_session
from app.jobs.store import request_hash
from app.models import Job, JobStatus
from tests.support.keys import Team

DAY1, DAY2, DAY3 = "2026-11-01", "2026-11-02", "2026-11-03"


def store_job(
    app: Flask,
    owner: str | None,
    profile: str,
    status: JobStatus,
    day: str,
    hour: int,
    tokens: tuple[int, ...],
) -> None:
    """A job as a worker leaves it: its status, its token counts (None where not counted), its day."""
    prompt, completion, reasoning = (list(tokens) + [None, None, None])[:3]
    created = datetime.fromisoformat(f"{day}T{hour:02d}:30:00").replace(tzinfo=UTC)
    request = {"prompt": f"{owner} {day} {hour}"}
    job = Job(
        profile=profile, status=status, request=request, request_hash=request_hash(request), task_id="t",
        owner=owner, created_at=created, prompt_tokens=prompt, completion_tokens=completion,
        reasoning_tokens=reasoning,
    )  # fmt: skip
    with app.app_context(), db_session() as session:
        session.add(job)
        session.commit()


@pytest.fixture
def usage_team(team: Team) -> Team:
    """Jobs of alice and bob over three UTC days (23:30 and 00:30 sit on either side of midnight)."""
    alice, bob = team.alice.key_id, team.bob.key_id
    for owner, profile, status, day, hour, tokens in [
        (alice, "latency_first", JobStatus.SUCCEEDED, DAY1, 23, (10, 5, 2)),
        (alice, "latency_first", JobStatus.FAILED, DAY2, 0, (7,)),
        (alice, "quality_first", JobStatus.SUCCEEDED, DAY2, 12, (20, 30, 25)),
        (alice, "quality_first", JobStatus.QUEUED, DAY3, 1, ()),
        (bob, "latency_first", JobStatus.CANCELLED, DAY1, 9, (4, 1, 0)),
        (bob, "latency_first", JobStatus.SUCCEEDED, DAY3, 23, (8, 8, 3)),
    ]:
        store_job(team.app, owner, profile, status, day, hour, tokens)
    return team


def tally(body: dict[str, Any]) -> tuple[int, int, int, int, dict[str, int]]:
    statuses = {status: count for status, count in body["by_status"].items() if count}
    return body["jobs"], body["prompt_tokens"], body["completion_tokens"], body["reasoning_tokens"], statuses


def entries(response: Any) -> dict[str | None, dict[str, Any]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["object"] == "usage"
    return {entry["key_id"]: entry for entry in body["data"]}


def test_a_key_sees_its_own_usage_per_profile_and_per_day(usage_team: Team) -> None:
    data = entries(usage_team.alice.get("/v1/usage"))
    assert list(data) == [usage_team.alice.key_id]  # bob's jobs are not hers to see
    alice = data[usage_team.alice.key_id]
    assert alice["name"].startswith("alice-")
    assert tally(alice) == (4, 37, 35, 27, {"succeeded": 2, "failed": 1, "queued": 1})
    assert alice["total_tokens"] == 72
    assert tally(alice["by_profile"]["latency_first"]) == (2, 17, 5, 2, {"succeeded": 1, "failed": 1})
    assert tally(alice["by_profile"]["quality_first"]) == (2, 20, 30, 25, {"succeeded": 1, "queued": 1})
    assert {day: tally(body) for day, body in alice["by_day"].items()} == {
        DAY1: (1, 10, 5, 2, {"succeeded": 1}),
        DAY2: (2, 27, 30, 25, {"succeeded": 1, "failed": 1}),
        DAY3: (1, 0, 0, 0, {"queued": 1}),
    }


def test_since_and_until_count_whole_utc_days(usage_team: Team) -> None:
    data = entries(usage_team.alice.get(f"/v1/usage?since={DAY2}&until={DAY2}"))
    alice = data[usage_team.alice.key_id]
    assert tally(alice) == (2, 27, 30, 25, {"succeeded": 1, "failed": 1}) and list(alice["by_day"]) == [DAY2]
    later = entries(usage_team.alice.get(f"/v1/usage?since={DAY3}"))[usage_team.alice.key_id]
    assert later["jobs"] == 1
    nothing = entries(usage_team.alice.get("/v1/usage?until=2026-10-31"))[usage_team.alice.key_id]
    assert tally(nothing) == (0, 0, 0, 0, {}) and nothing["by_day"] == {}  # her entry, with zeros


def test_an_admin_sees_every_keys_usage_or_one_named_key(usage_team: Team) -> None:
    everyone = entries(usage_team.admin.get("/v1/usage"))
    assert tally(everyone[usage_team.bob.key_id]) == (2, 12, 9, 3, {"succeeded": 1, "cancelled": 1})
    assert everyone[usage_team.alice.key_id]["jobs"] == 4
    bob_name = everyone[usage_team.bob.key_id]["name"]
    for key in (bob_name, usage_team.bob.key_id):
        assert list(entries(usage_team.env_admin.get(f"/v1/usage?key={key}"))) == [usage_team.bob.key_id]
    assert set(entries(usage_team.admin.get("/v1/usage?key=all"))) == set(everyone)


def test_usage_sums_match_the_stored_jobs(usage_team: Team) -> None:
    with usage_team.app.app_context(), db_session() as session:
        jobs = list(
            session.query(Job).filter(Job.owner.in_([usage_team.alice.key_id, usage_team.bob.key_id]))
        )
    data = entries(usage_team.admin.get("/v1/usage"))
    for key_id in (usage_team.alice.key_id, usage_team.bob.key_id):
        own = [job for job in jobs if job.owner == key_id]
        expected = (
            len(own),
            sum(job.prompt_tokens or 0 for job in own),
            sum(job.completion_tokens or 0 for job in own),
            sum(job.reasoning_tokens or 0 for job in own),
            dict(Counter(job.status for job in own)),
        )
        assert tally(data[key_id]) == expected


def test_a_key_cannot_ask_for_another_keys_usage(usage_team: Team) -> None:
    bob_name = entries(usage_team.admin.get("/v1/usage"))[usage_team.bob.key_id]["name"]
    for key in (bob_name, usage_team.bob.key_id, "all", "nobody-at-all"):
        refused = usage_team.alice.get(f"/v1/usage?key={key}")
        assert refused.status_code == 400, key
        assert refused.get_json()["error"]["param"] == "key"
        assert refused.get_json()["error"]["message"] == f"No API key named {key!r}."
    own = usage_team.alice.get(f"/v1/usage?key={usage_team.alice.key_id}")
    assert list(entries(own)) == [usage_team.alice.key_id]


@pytest.mark.parametrize(
    ("query", "param"),
    [("since=2026-13-01", "since"), ("until=yesterday", "until"), (f"since={DAY2}&until={DAY1}", "until"),
     ("days=3", "days")],
)  # fmt: skip
def test_a_bad_query_is_a_400_naming_the_field(team: Team, query: str, param: str) -> None:
    response = team.alice.get(f"/v1/usage?{query}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["param"] == param
