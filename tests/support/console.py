"""A live stack for the console's browser tests and screenshots: the API served on a real port with
alice, bob (ordinary keys) and an admin key, model workers for both profiles on the tiny gpt-oss, the
batch worker; and a browser page signed in with a key, as a person signs in."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from flask import Flask

from app.auth import KEYS_RECHECK_S
from gate.runner import GateRun
from tests.support.batches import (
    private_redis,
    start_batch_over_http,
    start_batch_worker,
    wait_for_batch_worker,
)
from tests.support.keys import add_key
from tests.support.live_server import serve
from tests.support.pipeline import TEST_DATE, live_workers, stop_worker
from tests.support.services import migrate

VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class LiveConsole:
    app: Flask
    url: str
    keys: dict[str, str]  # "alice", "bob", "admin" -> the key

    def api(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def submit(self, who: str, content: str = "Hello", **body: Any) -> str:
        with self.api(who) as api:
            message = {"role": "user", "content": content}
            response = api.post("/v1/jobs", json={"messages": [message], "current_date": TEST_DATE, **body})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def start_batch(self, who: str, lines: list[str]) -> str:
        with self.api(who) as api:
            return start_batch_over_http(api, lines)

    def store_gate_run(self, run: GateRun) -> str:
        """What `gptoss gate` does at the end of a run: POST the report, Markdown and plot."""
        body = {
            "report": run.report,
            "markdown": "# gate run",
            "plot_png_base64": base64.b64encode(run.plot_png).decode(),
        }
        with self.api("admin") as api:
            response = api.post("/v1/gate/runs", json=body)
        assert response.status_code == 201, response.text
        return run.id

    def signed_in(self, browser: Any, who: str) -> Any:
        """A page of a fresh browser context (its own cookies) after signing in with `who`'s key."""
        page = browser.new_context(base_url=self.url, viewport=VIEWPORT).new_page()
        page.goto("/console/")
        page.fill("#key", self.keys[who])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/")
        return page


@contextmanager
def live_console(
    folder: Path, profiles_file: Path, profiles: tuple[str, ...] = ("latency_first", "quality_first")
) -> Iterator[LiveConsole]:
    """The stack, with a model worker for each of `profiles`, until the block ends; keys are added once the
    workers are ready (a key in the database turns keys on, and /readyz, which the wait reads, would then
    need one)."""
    database_url = f"sqlite:///{folder / 'gptoss.db'}"
    migrate(database_url)
    worker_env = {"GPTOSS_BATCH_CHECK_INTERVAL_S": "60"}  # batches end on their last job's end or a cancel
    with (
        private_redis(folder / "redis") as redis_url,
        live_workers(folder, profiles_file, database_url, redis_url, folder, profiles, env=worker_env) as (
            app,
            env,
        ),
    ):
        batch_worker = start_batch_worker(env, folder / "batches.log")
        try:
            wait_for_batch_worker(app, batch_worker, folder / "batches.log")
            keys = {name: add_key(app, name, admin=name == "admin").key for name in ("alice", "bob", "admin")}
            time.sleep(KEYS_RECHECK_S)  # until the API, which read "no keys" while waiting, reads them
            with serve(app) as url:
                yield LiveConsole(app, url, keys)
        finally:
            stop_worker(batch_worker)
