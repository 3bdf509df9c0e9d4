"""The console in a real browser (Playwright, Debian's chromium) against a live API, model workers on
the tiny gpt-oss and the batch worker: a job's text streams onto its page, a running job is cancelled
from its page, a batch's bar reaches 100 %, a key sees only its own jobs, the gate page shows a plot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.apps import TEST_MAX_TOKENS
from tests.support.batches import request_line
from tests.support.browser import unavailable
from tests.support.console import LiveConsole, live_console
from tests.support.gate import gate_run_of, sample

LIVE_MS = 90_000  # generous: this 2-core box may be busy with other work
STREAMING = """() => document.querySelector('#job-status').textContent.startsWith('running')
  && (document.querySelector('#job-content').textContent
      + document.querySelector('#job-reasoning').textContent).length > 0"""


@pytest.fixture(scope="module")
def console(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, profiles_file: Path, tiny_model_dir: Path
) -> Iterator[LiveConsole]:
    # one model worker: every job and batch line here runs on latency_first (the default profile)
    with live_console(tmp_path_factory.mktemp("console"), profiles_file, ("latency_first",)) as running:
        yield running


def job_of(console: LiveConsole, who: str, job_id: str) -> dict[str, Any]:
    with console.api(who) as api:
        return api.get(f"/v1/jobs/{job_id}").json()


def test_a_submitted_jobs_text_appears_on_its_page_as_it_streams(console: LiveConsole, browser: Any) -> None:
    page = console.signed_in(browser, "alice")
    job_id = console.submit("alice", max_tokens=200)
    page.goto(f"/console/jobs/{job_id}")
    page.wait_for_function(STREAMING, timeout=LIVE_MS)  # text on the page while the job still runs
    page.wait_for_function(
        "() => document.querySelector('#job-status').textContent === 'succeeded'", timeout=LIVE_MS
    )
    job = job_of(console, "alice", job_id)
    assert job["status"] == "succeeded"
    assert page.text_content("#job-content").strip() == job["result"]["content"].strip()
    assert page.text_content("#job-reasoning").strip() == job["result"]["reasoning"].strip()
    assert job["tags"]["model_id"] in page.inner_text("main")  # the finished page: tags, timings
    page.context.close()


def test_a_running_job_is_cancelled_from_its_page_and_keeps_its_text(
    console: LiveConsole, browser: Any
) -> None:
    page = console.signed_in(browser, "alice")
    job_id = console.submit("alice", max_tokens=TEST_MAX_TOKENS)
    page.goto(f"/console/jobs/{job_id}")
    page.wait_for_function(STREAMING, timeout=LIVE_MS)
    for _ in range(20):  # reached from the keyboard alone: Tab until the Cancel button has the focus
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "cancel":
            break
    else:
        pytest.fail("Tab never reached the Cancel button")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#job-status').textContent === 'cancelled'", timeout=LIVE_MS
    )
    job = job_of(console, "alice", job_id)
    assert (job["status"], job["result"]["finish_reason"]) == ("cancelled", "cancelled")
    assert 0 < job["usage"]["completion_tokens"] < TEST_MAX_TOKENS
    assert page.get_by_role("button", name="Cancel this job").count() == 0
    page.context.close()


def test_a_batchs_progress_bar_reaches_100_percent(console: LiveConsole, browser: Any) -> None:
    batch_id = console.start_batch(
        "alice", [request_line(f"q{i}", f"Question {i}?", max_tokens=4) for i in range(6)]
    )
    page = console.signed_in(browser, "alice")
    page.goto(f"/console/batches/{batch_id}")
    page.wait_for_selector("#output-file", timeout=LIVE_MS)  # live counts, then the page with its files
    assert page.text_content("[data-field=counts]").startswith("100 % · 6 done, 0 failed, of 6")
    assert page.eval_on_selector("[data-field=progress]", "bar => [bar.value, bar.max]") == [6, 6]
    with console.api("alice") as api:
        output = api.get(page.get_attribute("#output-file", "href")).text.splitlines()
    assert len(output) == 6
    page.context.close()


def test_a_key_sees_only_its_own_jobs(console: LiveConsole, browser: Any) -> None:
    alices, bobs = console.submit("alice", max_tokens=4), console.submit("bob", max_tokens=4)
    page = console.signed_in(browser, "bob")
    page.goto("/console/jobs")
    listed = page.inner_text("#jobs")
    assert bobs in listed and alices not in listed
    page.goto(f"/console/jobs/{alices}")
    assert "No job with id" in page.inner_text("main")
    admin = console.signed_in(browser, "admin")
    admin.goto("/console/jobs")
    assert {alices, bobs} <= set(admin.inner_text("#jobs").split())
    page.context.close(), admin.context.close()


def test_the_gate_page_shows_a_stored_runs_plot(console: LiveConsole, browser: Any) -> None:
    run_id = console.store_gate_run(gate_run_of([sample(i, 0.2, 1.0 + i / 10) for i in range(20)]))
    page = console.signed_in(browser, "bob")
    page.goto("/console/gate")
    plot = page.locator(f"img[alt='latency over time of run {run_id}']")
    plot.scroll_into_view_if_needed()
    page.wait_for_function(
        f"() => {{ const img = document.querySelector(\"img[alt='latency over time of run {run_id}']\");"
        " return img.complete && img.naturalWidth > 0; }"
    )
    assert (
        httpx.get(f"{console.url}{plot.get_attribute('src')}").status_code == 401
    )  # the cookie's key did it
    page.context.close()


def test_without_a_browser_the_tests_skip_saying_why_but_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        unavailable("/usr/bin/chromium is missing")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the console's browser tests"):
        unavailable("/usr/bin/chromium is missing")
