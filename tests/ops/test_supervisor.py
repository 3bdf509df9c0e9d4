"""The supervisor `make run` runs the Procfile with: a crash restarts one process, a stop gives running
work its grace period, and nothing outlives the supervisor, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.support.leftovers import processes_with
from tests.support.paths import REPO_ROOT

SLEEPER = "import time; time.sleep(600)"
GRACEFUL = """
import signal, sys, time
def finish(*_):
    time.sleep(1.5)
    print("finished", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, finish)
time.sleep(600)
"""
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def program(tmp_path: Path, name: str, source: str) -> str:
    """A Procfile command running `source` as a Python file."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return f"{sys.executable} {path}"


def start(tmp_path: Path, procfile: str, **env: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The supervisor over `procfile`; its processes carry a token of their own in their environment."""
    (tmp_path / "Procfile").write_text(procfile)
    token = uuid.uuid4().hex
    log = tmp_path / "supervisor.log"
    environ = os.environ | {"GPTOSS_SUPERVISED": token, "PYTHONPATH": str(REPO_ROOT), **env}
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "app.ops.supervisor", str(tmp_path / "Procfile")],
            cwd=REPO_ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return supervisor, token, log


def supervised(token: str, supervisor: subprocess.Popen[bytes]) -> list[tuple[int, str]]:
    """The live processes the supervisor started (itself left out)."""
    return [
        (pid, command) for pid, command in processes_with(token, "GPTOSS_SUPERVISED") if pid != supervisor.pid
    ]


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_crashed_process_is_started_again_with_backoff_and_the_others_keep_running(tmp_path: Path) -> None:
    crash, steady = program(tmp_path, "crash", "raise SystemExit(3)"), program(tmp_path, "steady", SLEEPER)
    supervisor, token, log = start(tmp_path, f"crash: {crash}\nsteady: {steady}\n")
    try:
        wait_until(lambda: log.read_text().count("crash started") >= 3, 20, log.read_text())
        text = log.read_text()
        assert "crash exited with 3" in text and "starting it again in 1 s" in text and "again in 2 s" in text
        assert text.count("steady started") == 1  # one crash is not the whole stack's
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
    assert supervised(token, supervisor) == []


def test_a_stop_gives_running_work_its_grace_and_then_kills_what_ignores_it(tmp_path: Path) -> None:
    graceful, stubborn = program(tmp_path, "graceful", GRACEFUL), program(tmp_path, "stubborn", STUBBORN)
    supervisor, token, log = start(
        tmp_path, f"graceful: {graceful}\nstubborn: {stubborn}\n", GPTOSS_STOP_GRACE_S="4"
    )
    wait_until(lambda: len(supervised(token, supervisor)) == 2, 20, log.read_text())
    time.sleep(0.5)  # both have set their SIGTERM handlers
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    took = time.monotonic() - started
    text = log.read_text()
    assert "graceful | finished" in text  # it had its 1.5 s
    assert "stubborn still runs after the grace period: killing it" in text and 3.5 < took < 15
    assert supervised(token, supervisor) == []


def test_a_supervisor_killed_hard_leaves_no_process(tmp_path: Path) -> None:
    one, two = program(tmp_path, "one", SLEEPER), program(tmp_path, "two", GRACEFUL)
    supervisor, token, log = start(tmp_path, f"one: {one}\ntwo: {two}\n")
    wait_until(lambda: len(supervised(token, supervisor)) == 2, 20, log.read_text())
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait()
    wait_until(
        lambda: supervised(token, supervisor) == [], 15, f"left running: {supervised(token, supervisor)}"
    )
