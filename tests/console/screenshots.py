"""Screenshots of every console page for docs/console.md, taken by hand (not a test):

    .venv/bin/python -m tests.console.screenshots [--model demo|tiny] [--out docs/console]

It starts the stack of the browser tests (the API, a model worker per profile, the batch worker; the
demo model by default, so the answers are words; its first start converts it, ~25 s, cached under
.data/models), makes jobs for two keys, a batch and a stored gate run (made from synthetic samples, as
the gate tests make them: no gate was driven), and saves 1280x800 PNGs (the job page also at a
phone's 390x844).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from engine.tiny import save_tiny_gptoss
from tests.support.apps import write_tiny_profiles
from tests.support.batches import request_line
from tests.support.browser import launch
from tests.support.console import LiveConsole, live_console
from tests.support.gate import gate_run_of, sample
from tests.support.paths import REPO_ROOT

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about queues.",
    "What is 12 times 12?",
]
PHONE = {"width": 390, "height": 844}


def wait_finished(console: LiveConsole, who: str, job_id: str) -> None:
    with console.api(who) as api:
        for _ in range(600):
            if api.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed", "cancelled"):
                return
            time.sleep(0.2)
    raise RuntimeError(f"{job_id} did not finish")


def make_things(console: LiveConsole) -> dict[str, str]:
    """Jobs for alice and bob, one cancelled, a finished batch and a stored gate run; their ids."""
    jobs = [console.submit(who, q, max_tokens=64) for who in ("alice", "bob") for q in QUESTIONS]
    for index, job_id in enumerate(jobs):
        wait_finished(console, "alice" if index < len(QUESTIONS) else "bob", job_id)
    cancelled = console.submit("alice", "Tell me a long story about a lighthouse.", max_tokens=400)
    with console.api("alice") as api:
        api.post(f"/v1/jobs/{cancelled}/cancel")
    lines = [request_line(f"q{i}", QUESTIONS[i % len(QUESTIONS)], max_tokens=24) for i in range(8)]
    batch = console.start_batch("alice", lines)
    run = console.store_gate_run(
        gate_run_of([sample(i, 0.15 + i % 5 / 50, 1.2 + i % 7 / 5) for i in range(40)])
    )
    return {"job": jobs[0], "batch": batch, "run": run}


def shoot(console: LiveConsole, browser: Any, out: Path, ids: dict[str, str]) -> None:
    login = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 800}).new_page()
    login.goto("/console/")
    login.screenshot(path=out / "login.png")
    page = console.signed_in(browser, "admin")
    for name, path in [
        ("overview", "/console/"),
        ("jobs", "/console/jobs"),
        ("job", f"/console/jobs/{ids['job']}"),
        ("batches", "/console/batches"),
        ("batch", f"/console/batches/{ids['batch']}"),
        ("gate", "/console/gate"),
    ]:
        page.goto(path)
        if name == "batch":
            page.wait_for_selector("#output-file", timeout=120_000)
        if name == "gate":
            page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth)")
        page.screenshot(path=out / f"{name}.png")
    page.set_viewport_size(PHONE)
    page.goto(f"/console/jobs/{ids['job']}")
    page.screenshot(path=out / "job-phone.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["demo", "tiny"], default="demo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "console")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="console-shots-") as temp:
        folder = Path(temp)
        if args.model == "tiny":
            save_tiny_gptoss(folder / "tiny-gptoss")
            profiles = write_tiny_profiles(folder)
        else:  # the repository's profiles: the demo model where gpt-oss is absent, its cache shared
            (REPO_ROOT / ".data" / "models").mkdir(parents=True, exist_ok=True)
            (folder / "models").symlink_to(REPO_ROOT / ".data" / "models", target_is_directory=True)
            profiles = REPO_ROOT / "profiles.toml"
        with live_console(folder, profiles) as console, sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                shoot(console, browser, args.out, make_things(console))
            finally:
                browser.close()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
