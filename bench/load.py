"""Load: 10,000 jobs submitted at full speed: nothing lost (rows = accepted), no 5xx, and the submit rate.

    python bench/load.py [--jobs 10000] [--clients 32] [--workers N --threads N] [--database-url URL]
    python bench/load.py --url http://127.0.0.1:8000 --database-url URL   # against a running server

Without --url it starts gunicorn itself (gunicorn.conf.py, the Procfile's web command, with the submit
rate limit off) on a fresh SQLite file (or --database-url, migrated first) and a private Redis, with no
model worker: every job stays queued, so the Redis queue must hold exactly one message per accepted job.
A 429 or 503 is retried after its Retry-After, as a well-behaved client would; every other non-2xx counts
as an error. The database is counted directly (pass --database-url with --url).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/load.py` puts bench/, not the repo root, on sys.path

from app.db import make_engine  # noqa: E402
from app.ops.private_redis import free_port, start_private_redis, stop_private_redis  # noqa: E402

PROFILE = "latency_first"


class Results:
    """What the clients saw, shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.job_ids: list[str] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.next_index = 0

    def take(self, total: int) -> int | None:
        with self.lock:
            if self.next_index >= total:
                return None
            self.next_index += 1
            return self.next_index - 1


def client_loop(base_url: str, total: int, results: Results, headers: dict[str, str]) -> None:
    """Submit jobs one after another on one kept-alive connection until `total` were taken by all
    clients. The standard library's HTTP client costs about a third of httpx's CPU per request: the
    clients share the machine with the server they measure."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=60)
    headers = {"Content-Type": "application/json", **headers}
    while (index := results.take(total)) is not None:
        question = f"Load test question {index}: what is {index} + 1?"
        body = {"profile": PROFILE, "max_tokens": 16, "messages": [{"role": "user", "content": question}]}
        payload = json.dumps(body)
        while True:
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/jobs", body=payload, headers=headers)
                response = connection.getresponse()
                status, text = response.status, response.read().decode()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # the next request opens a new connection
                with results.lock:
                    results.errors.append(f"{type(exc).__name__}: {exc}")
                break
            with results.lock:
                results.statuses[status] += 1
                results.latencies.append(time.perf_counter() - started)
            if status in (429, 503):  # told to come back later: do so
                time.sleep(float(response.getheader("Retry-After") or "1"))
                continue
            with results.lock:
                if status == 202:
                    results.job_ids.append(json.loads(text)["id"])
                else:
                    results.errors.append(f"{status}: {text[:200]}")
            break
    connection.close()


def rows_stored(database_url: str, job_ids: list[str]) -> int:
    engine = make_engine(database_url)
    found = 0
    with engine.connect() as connection:
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            query = sa.text("SELECT count(*) FROM jobs WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            )
            found += int(connection.execute(query, {"ids": chunk}).scalar_one())
    engine.dispose()
    return found


def start_server(
    args: argparse.Namespace, folder: Path, redis_url: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    """gunicorn on a migrated database; returns (process, base URL, database URL)."""
    database_url = args.database_url or f"sqlite:///{folder / 'load.db'}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_RATE_LIMIT_PER_MIN": "0",
        "GPTOSS_DATA_DIR": str(Path(args.data_dir).resolve()),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "prom"),
    }
    (folder / "prom").mkdir()
    migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    sizes = [*(["--workers", str(args.workers)] if args.workers else []),
             *(["--threads", str(args.threads)] if args.threads else [])]  # fmt: skip
    command = [sys.executable, "-m", "gunicorn", *sizes, "--bind", f"127.0.0.1:{port}", "app:create_app()"]
    log = open(folder / "gunicorn.log", "wb")  # noqa: SIM115 -- the server writes it until stopped
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return server, base_url, database_url
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not start:\n{(folder / 'gunicorn.log').read_text()[-3000:]}")
        time.sleep(0.2)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes and their children (gunicorn's workers)."""
    total = 0.0
    for process in processes:
        for each in [process, *process.children(recursive=True)]:
            try:
                times = each.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def submit_all(base_url: str, total: int, clients: int, results: Results, headers: dict[str, str]) -> None:
    """`total` submits from `clients` concurrent client threads; returns when all are answered."""
    threads = [threading.Thread(target=client_loop, args=(base_url, total, results, headers))
               for _ in range(clients)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def warm_up(base_url: str, clients: int, headers: dict[str, str]) -> None:
    """Rounds of `clients` concurrent submits, not counted, until one round is answered within a second:
    every gunicorn worker has then served submits and loaded its tokenizers (each loads them in the
    background after it starts, and its first submits wait for them)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started, results = time.perf_counter(), Results()
        submit_all(base_url, clients, clients, results, headers)
        if time.perf_counter() - started < 1.0 and len(results.job_ids) == clients:
            return
    print("load: no round of warm-up submits was answered within a second in 60 s; measuring anyway")


def run(
    args: argparse.Namespace,
    base_url: str,
    database_url: str | None,
    queue: redis.Redis | None,
    server: psutil.Process | None = None,
) -> bool:
    """Submit, then check; prints the figures and returns whether nothing was lost and nothing failed."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    warm_up(base_url, args.clients, headers)
    before = queue.llen(PROFILE) if queue is not None else 0
    results = Results()
    servers = [server] if server is not None else []
    server_cpu, client_cpu = cpu_seconds(servers), time.process_time()
    started = time.perf_counter()
    submit_all(base_url, args.jobs, args.clients, results, headers)
    wall = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(servers) - server_cpu, time.process_time() - client_cpu
    accepted = len(results.job_ids)
    server_errors = sum(
        count for status, count in results.statuses.items() if status >= 500 and status != 503
    )
    latencies = sorted(results.latencies)
    print(
        f"load: {args.jobs} jobs, {args.clients} clients, {wall:.1f} s: {accepted / wall:.0f} jobs/s accepted"
    )
    print(f"load: responses {dict(sorted(results.statuses.items()))}; transport errors {len(results.errors)}")
    print(f"load: submit latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")  # fmt: skip
    cpu = f"load: CPU per submit: clients {client_cpu / max(len(latencies), 1) * 1000:.2f} ms"
    if servers:
        cpu += f", server (gunicorn, all its workers) {server_cpu / max(len(latencies), 1) * 1000:.2f} ms"
    print(cpu)
    ok = accepted == args.jobs and server_errors == 0 and not results.errors
    if database_url is not None:
        stored = rows_stored(database_url, results.job_ids)
        print(f"load: accepted {accepted}, rows in the database {stored}")
        ok = ok and stored == accepted
    if queue is not None:
        queued = queue.llen(PROFILE) - before
        print(f"load: messages in the {PROFILE} queue {queued} (no worker consumes it)")
        ok = ok and queued == accepted
    for error in results.errors[:5]:
        print(f"load: error {error}")
    print("load: OK - nothing lost, no 5xx" if ok else "load: FAILED")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running API (default: start gunicorn here)")
    parser.add_argument("--database-url", help="the API's database, to count the stored rows")
    parser.add_argument("--api-key", default=os.environ.get("GPTOSS_API_KEY"), help="sent as a bearer token")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32, help="concurrent client threads")
    parser.add_argument(
        "--workers", type=int, help="gunicorn worker processes (own server; default gunicorn.conf.py's)"
    )
    parser.add_argument("--threads", type=int, help="threads per gunicorn worker (own server; default 128)")
    parser.add_argument("--data-dir", default=".data", help="GPTOSS_DATA_DIR of the own server (tokenizers)")
    args = parser.parse_args()
    if args.url:
        return 0 if run(args, args.url.rstrip("/"), args.database_url, None) else 1
    with tempfile.TemporaryDirectory(prefix="gptoss-load-") as tmp:
        folder = Path(tmp)
        redis_server, redis_url = start_private_redis(folder / "redis")
        server = None
        try:
            server, base_url, database_url = start_server(args, folder, redis_url)
            backend = database_url.split(":")[0]
            workers = args.workers or f"{len(psutil.Process(server.pid).children())} (gunicorn.conf.py's)"
            print(f"load: gunicorn {workers} worker(s) x {args.threads or 128} threads, {backend}")
            queue = redis.Redis.from_url(redis_url)
            return 0 if run(args, base_url, database_url, queue, psutil.Process(server.pid)) else 1
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            stop_private_redis(redis_server)


if __name__ == "__main__":
    sys.exit(main())
