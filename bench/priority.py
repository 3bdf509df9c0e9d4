"""Benchmark: how long interactive jobs wait in the queue, idle and while a big batch runs.

In one run, on one machine, with a private Redis and a fresh SQLite file: one model worker on the tiny
gpt-oss (as the Procfile starts it), the batch worker and the API on a real port. Interactive jobs
(POST /v1/jobs, one every --gap seconds) are timed from submit to their worker's start (the job's
`timings.queue_s`), first on the idle worker, then while a --lines batch keeps the same worker busy.
Target: the busy p50 within 2x of the idle p50.

    python bench/priority.py [--jobs 30] [--lines 2000] [--max-tokens 16] [--max-batch 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/priority.py` puts bench/, not the repo root, on sys.path

from app.ops.private_redis import start_private_redis, stop_private_redis  # noqa: E402
from bench.batches import (  # noqa: E402
    PROFILE,
    chat,
    make_app,
    migrate,
    model_profiles,
    request_line,
    start_workers,
    wait_job,
)


def queue_waits(client: httpx.Client, jobs: int, gap_s: float, max_tokens: int) -> list[float]:
    """Submit `jobs` interactive jobs, one every `gap_s`; each one's seconds from submit to start."""
    ids = []
    for i in range(jobs):
        body = {"messages": chat(i), "max_tokens": max_tokens, "profile": PROFILE}
        ids.append(client.post("/v1/jobs", json=body).json()["id"])
        time.sleep(gap_s)
    for job_id in ids:
        wait_job(client, job_id)
    shown = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
    return [job["timings"]["queue_s"] for job in shown]


def start_batch(client: httpx.Client, lines: int, max_tokens: int) -> str:
    data = "".join(request_line(i, max_tokens) + "\n" for i in range(lines))
    file = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("big.jsonl", data)}).json()
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return str(client.post("/v1/batches", json=body).json()["id"])


def describe(name: str, waits: list[float]) -> float:
    p50 = statistics.median(waits)
    p95 = sorted(waits)[max(0, round(0.95 * len(waits)) - 1)]
    print(f"{name:>28}: queue wait p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  ({len(waits)} jobs)")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30, help="interactive jobs per phase")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between interactive submits")
    parser.add_argument("--lines", type=int, default=2000, help="the batch's lines")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=4, help="the model worker's batch width")
    args = parser.parse_args()

    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    work, profiles = model_profiles("bench-priority-", args.max_batch, "tiny")
    redis_server, redis_url = start_private_redis(work / "redis")
    database_url = f"sqlite:///{work / 'priority.db'}"
    env = os.environ | {
        "GPTOSS_PROFILES": str(profiles), "REDIS_URL": redis_url, "GPTOSS_DATA_DIR": str(work),
        "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url,
    }  # fmt: skip
    migrate(database_url, env)
    processes = start_workers(env, work)
    app = make_app({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DATA_DIR": str(work),
                    "PROFILES": str(profiles)})  # fmt: skip
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=60) as client:
            print("starting the model worker and the batch worker ...", flush=True)
            queue_waits(client, 4, 0.0, args.max_tokens)  # warm up: the model loaded, first steps done
            idle = describe("idle worker", queue_waits(client, args.jobs, args.gap, args.max_tokens))
            batch_id = start_batch(client, args.lines, args.max_tokens)
            while client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 20:
                time.sleep(0.1)  # the batch's lines fill the worker now
            busy = describe(
                f"{args.lines}-line batch running", queue_waits(client, args.jobs, args.gap, args.max_tokens)
            )
            counts = client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
            print(f"the batch meanwhile: {counts['completed']} of {counts['total']} lines done")
            print(f"ratio busy/idle p50: {busy / idle:.2f} (target: <= 2)", flush=True)
            client.post(f"/v1/batches/{batch_id}/cancel")
    finally:
        server.shutdown()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        stop_private_redis(redis_server)
    print(f"logs and database: {work}")


if __name__ == "__main__":
    main()
