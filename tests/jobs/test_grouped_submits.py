"""Submits arriving together share one insert and one Redis round trip (app/jobs/grouped.py), and each
keeps its own outcome: exactly one row and one message per accepted job, a taken Idempotency-Key
replayed, a failed enqueue leaving no row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import sqlalchemy as sa
from flask import Flask

from app.jobs import grouped
from app.models import Job
from app.queue import profile_queues
from app.services import services

PROFILE = "latency_first"


def ask(index: int) -> dict[str, Any]:
    return {"profile": PROFILE, "messages": [{"role": "user", "content": f"Question {index}?"}]}


def queued_messages(app: Flask) -> int:
    client: redis.Redis = services(app).redis
    return sum(int(client.llen(queue)) for queue in profile_queues(PROFILE))


def rows(app: Flask) -> set[str]:
    with services(app).sessions() as session:
        return set(session.scalars(sa.select(Job.id)))


def test_concurrent_submits_each_get_one_row_and_one_message_and_a_shared_key_one_job(
    idle_app: Flask, monkeypatch: Any
) -> None:
    sizes: list[int] = []
    insert = grouped.SubmitGroups._insert

    def counted(self: grouped.SubmitGroups, group: list[Any]) -> list[Any]:
        sizes.append(len(group))
        return insert(self, group)

    monkeypatch.setattr(grouped.SubmitGroups, "_insert", counted)
    before_rows, before_messages = rows(idle_app), queued_messages(idle_app)

    def submit(index: int) -> tuple[int, str]:
        headers = {"Idempotency-Key": "shared"} if index % 20 == 0 else {}
        body = ask(-1) if index % 20 == 0 else ask(index)
        response = idle_app.test_client().post("/v1/jobs", json=body, headers=headers)
        return response.status_code, response.get_json()["id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(submit, range(200)))
    shared = {job_id for status, job_id in answers[::20]}
    assert len(shared) == 1  # ten submits with one key: one job, the other nine replay it
    assert sorted(status for status, _ in answers[::20]) == [200] * 9 + [202]
    new_rows = rows(idle_app) - before_rows
    assert new_rows == {job_id for _, job_id in answers} and len(new_rows) == 191
    assert queued_messages(idle_app) - before_messages == 191
    assert max(sizes) > 1  # some submits did share a transaction


def test_a_failed_enqueue_removes_the_whole_groups_rows_and_answers_503_to_each(
    idle_app: Flask, monkeypatch: Any
) -> None:
    def down(*_: Any) -> None:
        raise redis.ConnectionError("broker gone")

    monkeypatch.setattr(services(idle_app).queue, "enqueue_many", down)
    before = rows(idle_app)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: idle_app.test_client().post("/v1/jobs", json=ask(i)), range(24)))
    assert {response.status_code for response in answers} == {503}
    assert {response.get_json()["error"]["code"] for response in answers} == {"queue_unavailable"}
    assert rows(idle_app) == before
