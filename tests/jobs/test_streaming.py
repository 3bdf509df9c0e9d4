"""Token streaming over SSE against a live server, real workers and the tiny gpt-oss model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from app.services import services
from tests.support.apps import TEST_MAX_TOKENS
from tests.support.live_server import job_events, parse_sse, serve, streamed_text
from tests.support.pipeline import Pipeline

LONG = TEST_MAX_TOKENS  # a few seconds on the tiny model: long enough to join and leave mid-stream


@pytest.fixture(scope="module")
def live(pipeline: Pipeline) -> Iterator[tuple[Pipeline, str]]:
    with serve(pipeline.app) as url:
        yield pipeline, url


def test_late_subscriber_receives_every_event_from_the_first(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    job = pipeline.submit(messages=[{"role": "user", "content": "hello"}], max_tokens=200)
    stored = pipeline.wait_finished(job["id"])
    events = job_events(url, job["id"])
    assert [e.event for e in events[:2]] == ["queued", "started"]
    assert events[-1].event == "done" and events[-1].json()["id"] == job["id"]
    content, reasoning = streamed_text(events)
    assert (content, reasoning) == (stored["result"]["content"], stored["result"]["reasoning"])
    assert sum(e.event == "delta" for e in events) >= 1


def test_last_event_id_resumes_with_the_exact_remainder(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    job = pipeline.submit(messages=[{"role": "user", "content": "resume me"}], max_tokens=300)
    first_part = job_events(url, job["id"], limit=6)
    rest = job_events(url, job["id"], last_event_id=first_part[-1].id)
    everything = job_events(url, job["id"])
    assert [e.id for e in first_part + rest] == [e.id for e in everything]
    assert [e.data for e in first_part + rest] == [e.data for e in everything]


def test_fifty_concurrent_clients_on_one_job_receive_identical_text(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    job = pipeline.submit(messages=[{"role": "user", "content": "for everyone"}], max_tokens=LONG)
    texts: list[tuple[str, str] | None] = [None] * 50

    def listen(index: int) -> None:
        texts[index] = streamed_text(job_events(url, job["id"]))

    threads = [threading.Thread(target=listen, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stored = pipeline.wait_finished(job["id"])
    expected = (stored["result"]["content"], stored["result"]["reasoning"])
    assert all(text == expected for text in texts)


def test_expired_stream_replays_the_stored_result_as_one_done_event(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    job = pipeline.submit(messages=[{"role": "user", "content": "old news"}], max_tokens=20)
    stored = pipeline.wait_finished(job["id"])
    services(pipeline.app).redis.delete(f"gptoss:events:{job['id']}")
    events = job_events(url, job["id"])
    assert [e.event for e in events] == ["done"]
    assert events[0].json()["result"] == stored["result"]


def test_bad_last_event_id_is_a_400_naming_the_header(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    job = pipeline.submit(messages=[{"role": "user", "content": "x"}], max_tokens=5)
    response = httpx.get(f"{url}/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "nope"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "Last-Event-ID"
    assert httpx.get(f"{url}/v1/jobs/job_missing/events").status_code == 404


def test_client_leaving_a_streaming_chat_cancels_its_job(live: tuple[Pipeline, str]) -> None:
    pipeline, url = live
    body = {
        "model": "latency_first",
        "messages": [{"role": "user", "content": "talk for a long time"}],
        "max_tokens": LONG,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        chunks = 0
        for event in parse_sse(response.iter_lines()):
            chunk = event.json()
            job_id = "job_" + chunk["id"].removeprefix("chatcmpl-")
            if chunk["choices"] and chunk["choices"][0]["delta"].get("reasoning_content"):
                chunks += 1
            if chunks >= 3:
                break
    left_at = time.monotonic()
    job = pipeline.wait_finished(job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert time.monotonic() - left_at < 2.5
    assert 0 < job["usage"]["completion_tokens"] < LONG


def test_cli_submit_stream_prints_the_tokens_as_they_arrive(
    live: tuple[Pipeline, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main as gptoss

    pipeline, url = live
    assert (
        gptoss(["--url", url, "submit", "stream to me", "--max-tokens", "40", "--stream", "--show-reasoning"])
        == 0
    )
    captured = capsys.readouterr()
    job = pipeline.client.get("/v1/jobs?limit=1").get_json()["data"][0]
    assert captured.out == job["result"]["content"] + "\n"
    assert captured.err == job["result"]["reasoning"]
