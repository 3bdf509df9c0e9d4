"""Benchmark: ingest of a 50,000-line batch file, and a 200-line batch against 200 single jobs.

In one run, on one machine, with a private Redis and a fresh SQLite file (or --database-url):
  ingest  in a child process (the process doing the work, as the batch worker would): upload the file
          through the API (streamed from disk), POST /v1/batches, then the ingest task's work (validate,
          insert 1,000 rows per transaction, enqueue through Redis pipelines). Prints the phase times and
          the child's peak RSS above its RSS once started, for a tenth of the lines and for all of them:
          the same peak for both means the file is streamed, never held whole.
  e2e     one model worker on the tiny gpt-oss (or `--model paced:RATE`, engine/paced.py: the queue side
          apart from any model) + the batch worker + the API on a real port: the same prompts as single
          POST /v1/jobs (polled to the end) and as one batch (polled to `completed`); `--batch-only`
          leaves out the singles.

    python bench/batches.py [--lines 50000] [--requests 200] [--max-tokens 16] [--database-url URL]
                            [--model tiny|paced:RATE] [--batch-only]

Issue 22's batch target, a 50,000-line batch of 1-token lines end to end at >= 1,000 lines/s:
    python bench/batches.py --skip-ingest --batch-only --model paced:1000 --requests 50000 --max-tokens 1
                            --max-batch 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/batches.py` puts bench/, not the repo root, on sys.path

from app.ops.private_redis import start_private_redis, stop_private_redis  # noqa: E402
from app.queue import lane_queue  # noqa: E402
from app.services import services  # noqa: E402

PROFILE = "latency_first"
FINISHED = {"succeeded", "failed", "cancelled"}
BATCH_WORKER = [
    "-m", "celery", "-A", "make_batch_celery", "worker", "-Q", "batches", "-P", "threads", "-c", "4",
    "-n", "batches@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
]  # fmt: skip


def request_line(i: int, max_tokens: int) -> str:
    body = {"model": PROFILE, "messages": chat(i), "max_tokens": max_tokens}
    return json.dumps(
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def chat(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: name one fact about the number {i}."}]


def migrate(database_url: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "alembic", "upgrade", "head"]
    subprocess.run(
        command, cwd=ROOT, env={**env, "DATABASE_URL": database_url}, check=True, capture_output=True
    )


def make_app(config: dict[str, Any]) -> Any:
    """The API with the files and batches blueprints (registered here until create_app registers them)."""
    from app import create_app
    from app.batches import files_views as files_api
    from app.batches import views as batches_api

    app = create_app(config)
    for blueprint in (files_api.bp, batches_api.bp):
        if blueprint.name not in app.blueprints:
            app.register_blueprint(blueprint)
    return app


class RssSampler:
    """This process's peak RSS from now on, sampled every few ms (ru_maxrss would include what the
    parent held before the exec, which Linux carries over)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        import psutil  # comes with accelerate

        self.process = psutil.Process()
        self.start_mb = self.peak_mb = self.process.memory_info().rss / 2**20
        self.interval_s, self.done = interval_s, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def ingest_child(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Upload, create and ingest one batch file in this process; returns times, counts and peak RSS."""
    from app.batches.ingest import ingest_batch
    from workers.tasks import ingest_context

    app = make_app(config)
    client = app.test_client()
    client.get("/v1/batches")  # first request: lazy imports and the DB connection, before the baseline
    rss = RssSampler()
    times: dict[str, float] = {}
    start = time.perf_counter()
    with path.open("rb") as file:
        upload = client.post("/v1/files", data={"purpose": "batch", "file": (file, path.name)})
    file_id = upload.get_json()["id"]
    times["upload_s"] = time.perf_counter() - start
    start = time.perf_counter()
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = client.post("/v1/batches", json=body).get_json()
    times["create_ms"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    with app.app_context():
        status = ingest_batch(ingest_context(app), batch["id"])
    times["ingest_s"] = time.perf_counter() - start
    shown = client.get(f"/v1/batches/{batch['id']}").get_json()
    queued = services(app).redis.llen(lane_queue(PROFILE, "batch"))  # a batch's lines wait in its lane
    rss.stop()
    return {
        **times,
        "status": status,
        "total": shown["request_counts"]["total"],
        "queued_messages": queued,
        "started_rss_mb": rss.start_mb,
        "peak_rss_mb": rss.peak_mb,
    }


def run_ingest(
    lines: int, work: Path, env: dict[str, str], database_url: str, redis_url: str
) -> dict[str, Any]:
    """Write a file of `lines` requests and ingest it in a fresh child process."""
    path = work / f"batch-{lines}.jsonl"
    with path.open("w") as file:
        for i in range(lines):
            file.write(request_line(i, 16) + "\n")
    config = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DATA_DIR": str(work / "data"),
              "PROFILES": env["GPTOSS_PROFILES"], "MAX_BATCH_LINES": 50_000}  # fmt: skip
    command = [sys.executable, __file__, "--ingest-child", str(path), "--child-config", json.dumps(config)]
    done = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["file_mb"] = path.stat().st_size / 1e6
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # nobody consumes these messages
    return result


def start_workers(env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    """One model worker (as the Procfile starts it) and the batch worker."""
    model = [sys.executable, "-m", "workers.start", PROFILE, "--loglevel", "WARNING"]
    commands = {"worker": model, "batches": [sys.executable, *BATCH_WORKER]}
    return [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=open(logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT
        )
        for name, command in commands.items()
    ]


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").json()["status"] not in FINISHED:
        assert time.monotonic() < deadline, "a job did not finish"
        time.sleep(0.1)


def run_singles(client: httpx.Client, requests: int, max_tokens: int) -> tuple[float, float]:
    """POST every prompt as a job (16 at a time), then wait for the last one; returns (wall, submit) times."""

    def submit(i: int) -> str:
        body = {"messages": chat(i), "max_tokens": max_tokens, "profile": PROFILE}
        return str(client.post("/v1/jobs", json=body).json()["id"])

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(submit, range(requests)))
    submitted = time.perf_counter() - start
    for job_id in ids:
        wait_job(client, job_id)
    return time.perf_counter() - start, submitted


def run_batch(client: httpx.Client, requests: int, max_tokens: int) -> tuple[float, dict[str, Any], dict]:
    """Upload the prompts as one batch and poll it until it ends; returns (wall time, batch, when seen)."""
    start = time.perf_counter()
    data = "".join(request_line(i, max_tokens) + "\n" for i in range(requests))
    file = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("e2e.jsonl", data)}).json()
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = client.post("/v1/batches", json=body).json()
    seen: dict[str, float] = {}  # first poll showing each status, and all requests ended
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.05)
        batch = client.get(f"/v1/batches/{batch['id']}").json()
        counts, now = batch["request_counts"], time.perf_counter() - start
        seen.setdefault(batch["status"], now)
        if counts["total"] and counts["completed"] + counts["failed"] == counts["total"]:
            seen.setdefault("all ended", now)
    return time.perf_counter() - start, batch, seen


def run_e2e(args: argparse.Namespace, work: Path, env: dict[str, str], config: dict[str, Any]) -> None:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per poll

    processes = start_workers(env, work)
    app = make_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=60) as client:
            print("e2e: starting the model worker and the batch worker ...", flush=True)
            warm_up = client.post(
                "/v1/jobs", json={"messages": chat(-1), "max_tokens": 4, "profile": PROFILE}
            )
            wait_job(client, warm_up.json()["id"])
            for number in range(1, args.rounds + 1):  # alternating, so load from elsewhere hits both
                singles = None if args.batch_only else run_singles(client, args.requests, args.max_tokens)
                batch_s, batch, seen = run_batch(client, args.requests, args.max_tokens)
                print_e2e(number, args.requests, singles, batch_s, batch, seen)
    finally:
        server.shutdown()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def print_e2e(
    number: int, requests: int, singles: tuple[float, float] | None, batch_s: float, batch: dict, seen: dict
) -> None:
    counts = batch["request_counts"]
    assert batch["status"] == "completed" and counts["completed"] == requests, batch
    rate_batch = requests / batch_s
    if singles is not None:
        singles_s, submit_s = singles
        print(
            f"e2e round {number}: {requests} single jobs : {singles_s:6.2f} s  {requests / singles_s:6.1f} "
            f"req/s (all POSTed, 16 at a time, in {submit_s:.2f} s)"
        )
    timeline = (
        f"seen in_progress at {seen.get('in_progress', 0):.2f} s, all requests ended at "
        f"{seen.get('all ended', 0):.2f} s, completed at {batch_s:.2f} s"
    )
    print(
        f"e2e round {number}: {requests}-line batch  : {batch_s:6.2f} s  {rate_batch:6.1f} req/s ({timeline})"
    )
    if singles is not None:
        print(f"e2e round {number}: throughput ratio batch/singles: {rate_batch * singles[0] / requests:.2f}")
    print(f"e2e round {number}: lines/s from upload to completed: {rate_batch:.0f} (issue 22's target for a "
          "50,000-line batch of 1-token lines on the paced engine: >= 1,000)", flush=True)  # fmt: skip


def print_ingest(lines: int, result: dict[str, Any]) -> None:
    rss = result["peak_rss_mb"] - result["started_rss_mb"]
    print(
        f"ingest {lines:6d} lines ({result['file_mb']:5.1f} MB): upload {result['upload_s']:5.2f} s, "
        f"POST /v1/batches {result['create_ms']:5.1f} ms, ingest {result['ingest_s']:6.2f} s "
        f"({lines / result['ingest_s']:6.0f} lines/s) -> {result['status']}; "
        f"peak RSS {result['peak_rss_mb']:6.1f} MB (+{rss:5.1f} MB above start)",
        flush=True,
    )


def model_profiles(prefix: str, max_batch: int, model: str) -> tuple[Path, Path]:
    """A fresh work folder and a profiles file serving `model` on both profiles: the tiny gpt-oss (saved
    there) or the paced engine (`paced:RATE`)."""
    from engine.tiny import save_tiny_gptoss

    work = Path(tempfile.mkdtemp(prefix=prefix))
    model = model if model.startswith("paced:") else str(save_tiny_gptoss(work / "tiny-gptoss"))
    profiles = work / "profiles.toml"
    profiles.write_text(
        "".join(f'[profiles.{name}]\nmodel = "{model}"\nmodel_size = "tiny"\ngpu_mode = "pipeline"\n'
                f"max_batch = {max_batch}\nmax_tokens = 64\ntemperature = 0.0\n\n"
                for name in (PROFILE, "quality_first"))
    )  # fmt: skip
    return work, profiles


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16, help="the model worker's batch width")
    parser.add_argument("--database-url", help="default: a fresh SQLite file per phase")
    parser.add_argument("--rounds", type=int, default=1, help="e2e rounds of singles then batch")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--model", default="tiny", help="tiny, or paced:RATE (tokens/s per sequence)")
    parser.add_argument("--batch-only", action="store_true", help="e2e: the batch alone, no single jobs")
    parser.add_argument("--ingest-child", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_child:
        print(json.dumps(ingest_child(Path(args.ingest_child), json.loads(args.child_config))))
        return

    work, profiles = model_profiles("bench-batches-", args.max_batch, args.model)
    redis_server, redis_url = start_private_redis(work / "redis")
    # the timed batch check keeps its default (30 s): a batch ends on the check its last line asks for
    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles), "REDIS_URL": redis_url, "GPTOSS_DATA_DIR": str(work),
        "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    try:
        for lines in () if args.skip_ingest else (args.lines // 10, args.lines):
            database_url = args.database_url or f"sqlite:///{work / f'ingest-{lines}.db'}"
            migrate(database_url, env)
            result = run_ingest(lines, work, env, database_url, redis_url)
            assert result["total"] == result["queued_messages"] == lines, result
            print_ingest(lines, result)
        if not args.skip_e2e:
            database_url = args.database_url or f"sqlite:///{work / 'e2e.db'}"
            migrate(database_url, env)
            e2e_env = {**env, "DATABASE_URL": database_url}
            config = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DATA_DIR": str(work),
                      "PROFILES": str(profiles)}  # fmt: skip
            run_e2e(args, work, e2e_env, config)
    finally:
        stop_private_redis(redis_server)
    print(f"logs and databases: {work}")


if __name__ == "__main__":
    main()
