"""The suite's last check: no process it started is still running when it ends.

Every process a test starts inherits this session's GPTOSS_TEST_SESSION token through its environment
(workers, engine children, gunicorn, the supervisor, Prometheus, private Redis servers), however it
was started (a new session, a double fork). At the end, a process whose environment still holds the token is a
leftover: it is listed, killed, and the run fails.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

VARIABLE = "GPTOSS_TEST_SESSION"
# An engine child notices its worker's death within a second (engine/process.py polls its parent):
# one still alive after this long would have stayed for ever.
EXIT_GRACE_S = 10.0


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(VARIABLE, uuid.uuid4().hex)


def processes_with(token: str, variable: str = VARIABLE) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes, other than this one, whose environment has
    variable=token."""
    marker = f"{variable}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z":  # a zombie has ended; its parent only has not reaped it yet
            found.append((int(entry.name), command.strip()))
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not Path("/proc").is_dir() or getattr(session.config, "workerinput", None) is not None:
        return
    left = processes_with(os.environ[VARIABLE])
    deadline = time.monotonic() + EXIT_GRACE_S
    while left and time.monotonic() < deadline:  # one following its parent out (as designed) is not left
        time.sleep(0.2)
        left = processes_with(os.environ[VARIABLE])
    if not left:
        return
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = "\n".join(f"  {pid}: {command[:200]}" for pid, command in left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"processes the tests started are still running (now killed):\n{lines}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
