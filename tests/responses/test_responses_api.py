"""POST /v1/responses and friends with no worker (jobs stay queued): background responses, reads,
cancel, continuation checks, refusals; and the response object and its stream built from job events."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.db import db_session
from app.jobs.events import JobEvent
from app.jobs.render import job_json
from app.jobs.store import JobOutcome, claim_job, finish_job
from app.models import JobStatus
from app.responses.events import response_events
from app.responses.render import response_json
from tests.support.tiny_tools import WEATHER_TOOL

WEATHER = {"type": "function", **WEATHER_TOOL}


def post(client: FlaskClient, **body: Any) -> Any:
    return client.post("/v1/responses", json={"model": "quality_first", **body})


def test_a_background_response_is_a_queued_job_read_back_and_cancelled(idle_client: FlaskClient) -> None:
    created = post(idle_client, input="hi", instructions="Be brief.", background=True, metadata={"k": "v"})
    assert created.status_code == 200, created.get_json()
    response = created.get_json()
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert (response["status"], response["background"], response["output"]) == ("queued", True, [])
    assert (response["instructions"], response["metadata"], response["usage"]) == (
        "Be brief.",
        {"k": "v"},
        None,
    )
    job = idle_client.get(f"/v1/jobs/{response['job_id']}").get_json()
    assert job["request"]["messages"] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert idle_client.get(f"/v1/responses/{response['id']}").get_json()["status"] == "queued"
    cancelled = idle_client.post(f"/v1/responses/{response['id']}/cancel")
    assert cancelled.get_json()["status"] == "cancelled"
    assert idle_client.post(f"/v1/responses/{response['id']}/cancel").status_code == 409


def test_only_stored_responses_are_found(idle_client: FlaskClient) -> None:
    job = idle_client.post("/v1/jobs", json={"prompt": "hi"}).get_json()
    for response_id in ("resp_nope", "job_x", "resp_" + job["id"].removeprefix("job_")):
        answer = idle_client.get(f"/v1/responses/{response_id}")
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "response_not_found"


def test_a_response_still_running_cannot_be_continued(idle_client: FlaskClient) -> None:
    first = post(idle_client, input="hi", background=True).get_json()
    answer = post(idle_client, input="more", previous_response_id=first["id"])
    assert answer.status_code == 400
    assert answer.get_json()["error"]["param"] == "previous_response_id"


CALL = {"id": "call_7", "name": "get_weather", "arguments": '{"city": "Paris"}'}


def finished(app: Flask, job_id: str, **outcome: Any) -> dict[str, Any]:
    """Run the job as a worker would (claim, then finish with `outcome`); its JSON."""
    with app.app_context(), db_session() as session:
        claim_job(session, job_id, "test-worker")
        job = finish_job(
            session, job_id, JobOutcome(JobStatus.SUCCEEDED, prompt_tokens=10, completion_tokens=5, **outcome)
        )
        assert job is not None
        return job_json(job)


def test_a_continuation_holds_the_previous_turns_without_their_instructions(
    idle_app: Flask, idle_client: FlaskClient
) -> None:
    first = post(idle_client, input="Weather?", instructions="Old rules.", tools=[WEATHER], background=True)
    first_job = first.get_json()["job_id"]
    finished(
        app=idle_app, job_id=first_job, reasoning="Need it.", finish_reason="tool_calls", tool_calls=(CALL,)
    )
    stored = idle_client.get(f"/v1/responses/{first.get_json()['id']}").get_json()
    assert stored["status"] == "completed"
    assert [item["type"] for item in stored["output"]] == ["reasoning", "function_call"]
    assert stored["output"][1]["call_id"] == "call_7" and stored["usage"]["output_tokens"] == 5

    output = {"type": "function_call_output", "call_id": "call_7", "output": "sunny"}
    second = post(
        idle_client, input=[output], instructions="New rules.", tools=[WEATHER], background=True,
        previous_response_id=stored["id"],
    )  # fmt: skip
    assert second.status_code == 200, second.get_json()
    job = idle_client.get(f"/v1/jobs/{second.get_json()['job_id']}").get_json()
    assert job["request"]["messages"] == [
        {"role": "developer", "content": "New rules."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "call_7"},
    ]
    unknown = post(idle_client, input=[{**output, "call_id": "call_8"}], previous_response_id=stored["id"])
    assert (unknown.status_code, unknown.get_json()["error"]["param"]) == (400, "input[0].call_id")


def test_unsupported_parameters_are_400s_naming_them_and_nothing_is_queued(idle_client: FlaskClient) -> None:
    before = idle_client.get("/v1/jobs").get_json()["data"]
    for body, param in [
        ({"input": "hi", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": [{"type": "computer_call", "id": "x"}]}, "input[0].type"),
        ({"input": "hi", "truncation": "auto"}, "truncation"),
        ({"input": "hi", "top_logprobs": 2}, "top_logprobs"),
    ]:
        answer = post(idle_client, **body)
        assert answer.status_code == 400 and answer.get_json()["error"]["param"] == param, answer.get_json()
    no_store = post(idle_client, input="hi", background=True, store=False)
    assert no_store.get_json()["error"]["param"] == "background"
    assert idle_client.get("/v1/jobs").get_json()["data"] == before


def event(kind: str, **data: Any) -> JobEvent:
    return JobEvent("1-0", kind, data)


def test_the_stream_opens_fills_and_closes_items_then_ends_with_the_stored_response() -> None:
    job = {"id": "job_abc", "status": "queued", "created_at": 1, "finished_at": None, "profile": "p",
           "request": {"messages": [], "max_tokens": 9, "response": {"model": "m"}}}  # fmt: skip
    done = {
        **job, "status": "succeeded", "finished_at": 2, "usage": {"prompt_tokens": 3, "completion_tokens": 4,
        "total_tokens": 7}, "result": {"reasoning": "Think.", "content": "", "finish_reason": "tool_calls",
        "tool_calls": [{**CALL, "id": "call_1"}]},
    }  # fmt: skip
    log = [
        event("queued"), event("started"), event("delta", reasoning="Thi"), event("delta", reasoning="nk."),
        event("delta", tool_calls=[{"index": 0, "id": "call_1", "name": "get_weather"}]),
        event("delta", tool_calls=[{"index": 0, "arguments": '{"city": '}]),
        event("delta", tool_calls=[{"index": 0, "arguments": '"Paris"}'}]), None, event("done", **done),
    ]  # fmt: skip
    events = [e for e in response_events(job, iter(log), lambda _: done) if e is not None]
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final == response_json(done) and final["status"] == "completed"
    items_done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert items_done == final["output"]
    assert json.loads(final["output"][1]["arguments"]) == {"city": "Paris"}


def test_a_length_cut_is_incomplete_and_a_failure_failed() -> None:
    base = {"id": "job_x", "created_at": 1, "finished_at": 2, "profile": "p", "request": {"response": {}}}
    cut = {**base, "status": "succeeded", "result": {"content": "Hel", "finish_reason": "length"}}
    assert (response_json(cut)["status"], response_json(cut)["incomplete_details"]) == (
        "incomplete", {"reason": "max_output_tokens"}
    )  # fmt: skip
    failed = {**base, "status": "failed", "error": {"message": "boom"}}
    assert (response_json(failed)["status"], response_json(failed)["error"]["message"]) == ("failed", "boom")
