"""A whole stack as `make run` starts one (the private-Redis wrapper, then the supervisor over the
unedited Procfile), set apart from any other by documented variables alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.leftovers import processes_with
from tests.support.paths import REPO_ROOT
from tests.support.pipeline import every_profile_ready
from tests.support.ports import fresh_port
from tests.support.services import migrate

STACK_VARIABLE = "GPTOSS_TEST_STACK"  # each stack's processes carry its token: what is left is findable


@dataclass(frozen=True)
class Stack:
    url: str
    metrics_base: int
    flower_port: int
    log: Path
    data_dir: Path
    process: subprocess.Popen[bytes]
    token: str

    def processes(self) -> list[tuple[int, str]]:
        """Every process of this stack still alive."""
        return processes_with(self.token, STACK_VARIABLE)

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if every_profile_ready(httpx.get(f"{self.url}/readyz", timeout=2).json()):
                    return  # the API and a worker with its model loaded for every profile
            except (httpx.HTTPError, ValueError):  # not listening yet, or not the API's JSON yet
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-4000:]
            time.sleep(0.5)


@contextmanager
def stack(folder: Path, profiles_file: Path, redis_url: str, **env: str) -> Iterator[Stack]:
    """One stack as `make run` runs it, until the block ends (then SIGTERM to it, as Ctrl-C would)."""
    data_dir = folder / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "models").symlink_to(REPO_ROOT / ".data" / "models", target_is_directory=True)  # the demo's
    (REPO_ROOT / ".data" / "models").mkdir(parents=True, exist_ok=True)
    migrate(f"sqlite:///{data_dir / 'gptoss.db'}")
    port, metrics_base, flower_port = fresh_port(), fresh_port(width=2), fresh_port()  # two profiles
    token = uuid.uuid4().hex
    environ = {
        **os.environ,
        "PORT": str(port),
        "GPTOSS_DATA_DIR": str(data_dir),
        "REDIS_URL": redis_url,
        "GPTOSS_WORKER_METRICS_PORT": str(metrics_base),
        "FLOWER_PORT": str(flower_port),
        "GPTOSS_PROFILES": str(profiles_file),
        "GPTOSS_GATE_SCHEDULE_S": "0",
        "GPTOSS_GATE_API_URL": f"http://127.0.0.1:{port}",
        STACK_VARIABLE: token,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # as the Makefile sets it
        **env,
    }
    environ.pop("DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "app.ops.private_redis",
        sys.executable,
        "-m",
        "app.ops.supervisor",
        "Procfile",
    ]
    log = folder / "stack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Stack(f"http://127.0.0.1:{port}", metrics_base, flower_port, log, data_dir, process, token)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid, _ in running.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
