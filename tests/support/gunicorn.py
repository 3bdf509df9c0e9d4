"""The API under real gunicorn, as the Procfile serves it (./gunicorn.conf.py read), for tests about the
server itself: request lines, chunked bodies, its threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.paths import REPO_ROOT
from tests.support.ports import fresh_port
from tests.support.services import migrate


@contextmanager
def gunicorn_api(
    folder: Path, profiles_file: Path, redis_url: str, workers: int | None = 1, threads: int = 128, **env: str
) -> Iterator[str]:
    """gunicorn serving create_app() on a free port (`threads` 1: sync workers; `workers` None: as
    gunicorn.conf.py chooses), with `env` added; yields its URL."""
    database_url = f"sqlite:///{folder / 'gptoss.db'}"
    migrate(database_url)
    environ = os.environ | {
        "GPTOSS_PROFILES": str(profiles_file), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(folder), "PYTHONPATH": str(REPO_ROOT), **env,
    }  # fmt: skip
    port = fresh_port()
    command = [
        sys.executable, "-m", "gunicorn", *(["--workers", str(workers)] if workers else []),
        "--threads", str(threads),
        "--bind", f"127.0.0.1:{port}", "app:create_app()",
    ]  # fmt: skip
    with open(folder / "gunicorn.log", "wb") as log:
        server = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (folder / "gunicorn.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer"
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
