"""Benchmark: this server against `transformers serve --continuous-batching`, one after the other (issue 22).

The same workload goes to each server through the official `openai` SDK: --requests chat requests
(default 64) of --max-tokens new tokens (32) at temperature 0, --clients (16) at a time, first all
non-streaming (throughput = completion tokens / wall time, first send to last answer), then the same
prompts streaming (TTFT = first content chunk - send, per request). Each server gets a warm-up request of
each kind first, and is stopped before the next starts: the two never share the 2 cores.

  this server  gunicorn + one worker + a private Redis + SQLite, as bench/pipeline.py starts them; one
               profile on the demo model, greedy, the response cache off (the peer has none);
  the peer     `transformers serve --continuous-batching` from a throwaway venv (.data/peer-venv, torch
               and transformers[serving] at the versions this venv has, i.e. pyproject's pins; built once
               and reused), on the same converted demo model directory, float32 on the CPU, offline
               (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE). Its paged cache gets our engine's CPU sizing
               (engine/engine.py CacheSizing.for_cpu: 32-token pages, 512-token steps): left to
               transformers, the cache is sized by the machine's memory (14 GB resident on this 24 GB
               box, and a 51 s first request).
               Where the venv cannot be built (no registry, pip fails) the peer is skipped with the
               reason and this server is measured alone.

Prints each server's throughput and TTFT p50/p95 in both modes, the ratios this/peer against the targets
(throughput >= 1.1x the peer's, TTFT p50 <= the peer's) with PASS/MISS, and how many of the answers are
identical between the two servers at temperature 0 (the first differing pair, shortened). A benchmark,
not a test: it exits 0 whatever the result.

    python bench/peer.py [--requests 64] [--max-tokens 32] [--clients 16] [--skip-peer]
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/peer.py` puts bench/, not the repo root, on sys.path

from app.ops.private_redis import free_port, start_private_redis, stop_private_redis  # noqa: E402
from app.ops.supervisor import die_with_parent  # noqa: E402
from bench.pipeline import (  # noqa: E402
    PROFILE,
    chat,
    stack_env,
    start_stack,
    stop_processes,
    wait_ready,
    write_profiles,
)
from engine.engine import CacheSizing  # noqa: E402
from engine.loader import local_model_dir  # noqa: E402

PEER_VENV = ROOT / ".data" / "peer-venv"
MAX_BATCH = 32  # profiles.toml's latency_first
THROUGHPUT_TARGET = 1.1


class PeerUnavailable(Exception):
    """The peer's venv could not be built or its server did not start; the message says why."""


@dataclass
class Answer:
    text: str
    completion_tokens: int
    ttft_s: float | None  # streaming only: send -> first content chunk


@dataclass
class Phase:
    answers: list[Answer]
    wall_s: float

    @property
    def tok_per_s(self) -> float:
        return sum(answer.completion_tokens for answer in self.answers) / self.wall_s

    def ttft_ms(self, quantile: float) -> float:
        times = sorted(answer.ttft_s or 0.0 for answer in self.answers)
        return times[min(len(times) - 1, int(quantile * len(times)))] * 1000


@dataclass
class Measured:
    plain: Phase  # non-streaming
    streamed: Phase


# -- the peer's venv -----------------------------------------------------------------------------------


def peer_requirements() -> list[str]:
    """torch and transformers[serving] at the versions installed here (pyproject's pins)."""
    torch = importlib.metadata.version("torch").split("+")[0]  # 2.13.0+cpu -> 2.13.0
    return [f"torch=={torch}", f"transformers[serving]=={importlib.metadata.version('transformers')}"]


def peer_venv(folder: Path) -> Path:
    """The peer venv's `transformers` command: reused where a previous build completed with the same
    requirements, else built anew (a few minutes). Raises PeerUnavailable with pip's last words."""
    requirements = peer_requirements()
    stamp = folder / ".bench-complete"
    command = folder / "bin" / "transformers"
    if stamp.is_file() and stamp.read_text() == " ".join(requirements) and command.is_file():
        return command
    shutil.rmtree(folder, ignore_errors=True)
    python = folder / "bin" / "python"
    torch_index = os.environ.get("TORCH_INDEX_URL")  # as `make install`: which torch build
    steps = [
        [sys.executable, "-m", "venv", str(folder)],
        [str(python), "-m", "pip", "install", "-q", requirements[0],
         *(["--index-url", torch_index] if torch_index else [])],
        [str(python), "-m", "pip", "install", "-q", *requirements],
    ]  # fmt: skip
    print(f"peer: building {folder} ({', '.join(requirements)}) ...", flush=True)
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PeerUnavailable(f"its venv {folder} could not be built: {error}") from error
        if done.returncode != 0:
            said = [
                line for line in (done.stderr or done.stdout).splitlines() if not line.startswith("WARNING")
            ]
            last = "\n    ".join(said[-4:])
            what = f"`python {' '.join(step[1:])}` exited {done.returncode}"
            raise PeerUnavailable(f"its venv {folder} could not be built: {what}:\n    {last}")
    stamp.write_text(" ".join(requirements))
    return command


# -- the servers ---------------------------------------------------------------------------------------


@contextmanager
def this_server(work: Path, max_tokens: int) -> Iterator[str]:
    """Our stack on the demo model; yields its /v1 URL once a warm-up job has run. Stops it on leaving."""
    redis_server, redis_url = start_private_redis(work / "redis")
    processes = []
    try:
        env = stack_env(write_profiles(work, "demo", MAX_BATCH, max_tokens), f"sqlite:///{work / 'bench.db'}",
                        redis_url)  # fmt: skip
        env["GPTOSS_CACHE_MAX_ENTRIES"] = "0"  # answers, not the response cache
        port = free_port()
        processes = start_stack(env, port, work)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, processes)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_processes(processes)
        stop_private_redis(redis_server)


@contextmanager
def peer_server(command: Path, model_dir: Path, work: Path) -> Iterator[str]:
    """`transformers serve --continuous-batching` on `model_dir`; yields its /v1 URL once /health
    answers. Stops it (its process group) on leaving."""
    sizing = CacheSizing.for_cpu(MAX_BATCH)
    port = free_port()
    argv = [
        str(command), "serve", str(model_dir), "--continuous-batching", "--device", "cpu",
        "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
        "--cb-block-size", str(sizing.page_size), "--cb-num-blocks", str(sizing.num_blocks),
        "--cb-max-batch-tokens", str(sizing.max_batch_tokens),
    ]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    print("peer: " + " ".join(argv[1:]), flush=True)
    log = work / "peer.log"
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.monotonic() + 300
        while not is_up(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "\n    ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
                raise PeerUnavailable(f"`transformers serve` did not start (see {log}):\n    {tail}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_processes([process])


def is_up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# -- the workload --------------------------------------------------------------------------------------


def ask(client: OpenAI, model: str, index: int, max_tokens: int, stream: bool) -> Answer:
    """One chat request at temperature 0; streamed, the time to its first content chunk."""
    create = functools.partial(
        client.chat.completions.create,
        model=model,
        messages=chat(index),
        max_tokens=max_tokens,
        temperature=0.0,
    )
    sent = time.perf_counter()
    if not stream:
        response = create()
        tokens = response.usage.completion_tokens if response.usage else 0
        return Answer(response.choices[0].message.content or "", tokens, None)
    first, parts, tokens = None, [], 0
    for chunk in create(stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                first = first if first is not None else time.perf_counter() - sent
                parts.append(choice.delta.content)
    return Answer("".join(parts), tokens, first)


def run_phase(requests: int, clients: int, one: Callable[[int], Answer]) -> Phase:
    """All requests, `clients` at a time; on an error or Ctrl-C the requests not yet sent are dropped."""
    pool = ThreadPoolExecutor(clients)
    try:
        start = time.perf_counter()
        answers = list(pool.map(one, range(requests)))
        return Phase(answers, time.perf_counter() - start)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def measure(name: str, base_url: str, model: str, args: argparse.Namespace) -> Measured:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    for stream in (False, True):  # warm-up; the peer's batching takes its sampling from its first request
        ask(client, model, -1, args.max_tokens, stream)
    plain = run_phase(args.requests, args.clients, lambda i: ask(client, model, i, args.max_tokens, False))
    streamed = run_phase(args.requests, args.clients, lambda i: ask(client, model, i, args.max_tokens, True))
    measured = Measured(plain, streamed)
    client.close()
    load = os.getloadavg()[0]  # other work on the machine skews the comparison: shown with each server
    walls = f"{measured.plain.wall_s:.1f} s + {measured.streamed.wall_s:.1f} s"
    print(f"{name}: done ({walls}; load average {load:.1f} at the end)", flush=True)
    return measured


# -- the report ----------------------------------------------------------------------------------------


def describe(name: str, measured: Measured) -> str:
    plain, streamed = measured.plain, measured.streamed
    return (
        f"{name:<12} non-streaming {plain.tok_per_s:6.1f} tok/s | streaming {streamed.tok_per_s:6.1f} tok/s, "
        f"TTFT p50 {streamed.ttft_ms(0.5):6.0f} ms, p95 {streamed.ttft_ms(0.95):6.0f} ms"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


MODES = {"plain": "non-streaming", "streamed": "streaming"}


def compare(ours: Measured, peer: Measured) -> None:
    for mode, label in MODES.items():
        mine, theirs = getattr(ours, mode).tok_per_s, getattr(peer, mode).tok_per_s
        ok = mine >= THROUGHPUT_TARGET * theirs
        target = f"target >= {THROUGHPUT_TARGET}x: {verdict(ok)}"
        print(f"throughput this/peer, {label}: {mine / theirs:.2f}x ({target})")
    p50s = ours.streamed.ttft_ms(0.5), peer.streamed.ttft_ms(0.5)
    p95_ratio = ours.streamed.ttft_ms(0.95) / peer.streamed.ttft_ms(0.95)
    print(f"TTFT p50 this/peer: {p50s[0] / p50s[1]:.2f}x ({p50s[0]:.0f} vs {p50s[1]:.0f} ms; "
          f"target <= 1.00x: {verdict(p50s[0] <= p50s[1])}); p95 {p95_ratio:.2f}x")  # fmt: skip
    for mode, label in MODES.items():
        texts = zip(getattr(ours, mode).answers, getattr(peer, mode).answers, strict=True)
        pairs = [(mine.text, theirs.text) for mine, theirs in texts]
        same = sum(mine == theirs for mine, theirs in pairs)
        ok = verdict(same == len(pairs))
        print(f"identical answers at temperature 0, {label}: {same} of {len(pairs)} ({ok})")
        differing = [(index, pair) for index, pair in enumerate(pairs) if pair[0] != pair[1]]
        if differing:
            index, (mine, theirs) = differing[0]
            print(
                f"  first difference, request {index}:\n    this: {mine[:160]!r}\n    peer: {theirs[:160]!r}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--skip-peer", action="store_true", help="measure this server alone")
    args = parser.parse_args()
    # Ctrl-C (even where the shell started this ignoring it) and SIGTERM stop the servers on the way out
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    print(f"{args.requests} chat requests x {args.max_tokens} tokens, {args.clients} clients, temperature 0, "
          f"demo model, each server alone on this machine (logs: {work})", flush=True)  # fmt: skip
    peer_command, skipped = None, "--skip-peer"
    if not args.skip_peer:
        try:
            peer_command = peer_venv(PEER_VENV)
        except PeerUnavailable as error:
            skipped = str(error)
            print(f"peer: SKIPPED, {skipped}", flush=True)
    with this_server(work, args.max_tokens) as url:
        ours = measure("this server", url, PROFILE, args)
    peer = None
    model_dir = local_model_dir("demo", ROOT / ".data" / "models")  # converted by our worker by now
    if peer_command is not None and model_dir is None:
        skipped = "the demo model's converted directory is missing under .data/models"
    elif peer_command is not None and model_dir is not None:
        try:
            with peer_server(peer_command, model_dir, work) as url:
                peer = measure("peer", url, str(model_dir), args)
        except PeerUnavailable as error:
            skipped = str(error)
    print()
    print(describe("this server", ours))
    if peer is None:
        print(f"peer: SKIPPED, {skipped}")
        return
    print(describe("peer", peer))
    compare(ours, peer)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; the servers are stopped")
