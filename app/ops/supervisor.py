"""Run the Procfile's processes as one stack (what `make run` runs): nothing outlives the stack, a crash
restarts one process, and a stop lets running jobs finish.

Usage: python -m app.ops.supervisor [Procfile]

- Each process runs `exec`ed by /bin/sh in a process group of its own, with a parent-death signal
  (SIGTERM, Linux's PR_SET_PDEATHSIG): however the supervisor dies, SIGKILL included, its processes
  are told to stop (workers then stop taking jobs and finish the ones they run).
- A process that exits while the stack runs is started again after a back-off (1 s, doubling to 60 s;
  back to 1 s once it has run a minute), and nothing else stops: one crash is not the whole stack's.
- SIGTERM or SIGINT (Ctrl-C) stops the stack: every process gets SIGTERM (workers finish their running
  jobs, gunicorn its requests), and whatever still runs GPTOSS_STOP_GRACE_S (default 60) later is killed.
Each line a process prints comes out prefixed with its name.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
FIRST_BACKOFF_S, MAX_BACKOFF_S, STEADY_AFTER_S = 1.0, 60.0, 60.0
DEFAULT_STOP_GRACE_S = 60.0
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def read_procfile(path: Path) -> dict[str, str]:
    """name -> command, in the file's order (comments and blank lines skipped)."""
    commands = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PROCFILE_LINE.match(line)
        if match is None:
            raise SystemExit(f"{path}:{number}: not a `name: command` line: {line!r}")
        commands[match.group(1)] = match.group(2)
    return commands


try:  # loaded here, not in a forked child: a child of a threaded process must not load libraries
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


def die_with_parent() -> None:
    """For a child, between fork and exec: SIGTERM it when the process that started it dies, however
    (Linux's parent-death signal; it survives the exec). Elsewhere a no-op."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _own_group_dying_with_parent() -> None:
    os.setpgid(0, 0)  # terminal signals reach the supervisor only, which stops the others in order
    die_with_parent()


@dataclass
class Process:
    name: str
    command: str
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


class Supervisor:
    def __init__(self, commands: dict[str, str], stop_grace_s: float, out: IO[str] = sys.stdout) -> None:
        self.processes = [Process(name, command) for name, command in commands.items()]
        self.stop_grace_s = stop_grace_s
        self.out = out
        self.width = max(len(name) for name in commands)
        self.stopping = threading.Event()
        self.print_lock = threading.Lock()

    def say(self, name: str, text: str) -> None:
        with self.print_lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            self.out.flush()

    def start(self, process: Process) -> None:
        process.popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {process.command}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_group_dying_with_parent,
        )
        process.started_at, process.restart_at = time.monotonic(), None
        self.say("system", f"{process.name} started (pid {process.popen.pid})")
        printer = threading.Thread(target=self._copy_output, args=(process, process.popen), daemon=True)
        printer.start()

    def _copy_output(self, process: Process, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in iter(popen.stdout.readline, b""):
            self.say(process.name, raw.decode(errors="replace").rstrip("\n"))

    def run(self) -> int:
        """Start everything, keep it running until told to stop, then stop it; the exit status."""
        for process in self.processes:
            self.start(process)
        while not self.stopping.wait(0.2):
            for process in self.processes:
                self._tend(process)
        return self.stop()

    def _tend(self, process: Process) -> None:
        """Restart a process that exited, after its back-off."""
        now = time.monotonic()
        if process.popen is not None and process.popen.poll() is not None:
            ran_s = now - process.started_at
            if ran_s >= STEADY_AFTER_S:
                process.backoff_s = FIRST_BACKOFF_S
            self.say("system", f"{process.name} exited with {process.popen.returncode} after {ran_s:.0f} s; "
                     f"starting it again in {process.backoff_s:.0f} s")  # fmt: skip
            process.popen, process.restart_at = None, now + process.backoff_s
            process.backoff_s = min(process.backoff_s * 2, MAX_BACKOFF_S)
        elif process.popen is None and process.restart_at is not None and now >= process.restart_at:
            self.start(process)

    def stop(self) -> int:
        """SIGTERM to every process group, SIGKILL to what remains after the grace period."""
        running = [p for p in self.processes if p.popen is not None and p.popen.poll() is None]
        self.say("system", f"stopping: SIGTERM to all, {self.stop_grace_s:.0f} s to finish running jobs")
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for process in running:
            assert process.popen is not None
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("system", f"{process.name} still runs after the grace period: killing it")
        for process in running:
            _signal_group(process, signal.SIGKILL)  # the group: what the process started goes too
            assert process.popen is not None
            process.popen.wait()
            self.say("system", f"{process.name} stopped ({process.popen.returncode})")
        return 0


def _signal_group(process: Process, signum: int) -> None:
    try:
        assert process.popen is not None
        os.killpg(process.popen.pid, signum)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    procfile = Path(args[0] if args else "Procfile")
    grace = os.environ.get("GPTOSS_STOP_GRACE_S") or DEFAULT_STOP_GRACE_S
    try:
        stop_grace_s = float(grace)
    except ValueError:
        raise SystemExit(f"GPTOSS_STOP_GRACE_S={grace!r}: expected a number of seconds") from None
    supervisor = Supervisor(read_procfile(procfile), stop_grace_s)

    def stop(signum: int, _frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
