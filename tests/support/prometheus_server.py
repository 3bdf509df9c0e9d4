"""A real Prometheus for tests: Debian's `prometheus` package, unpacked once into .cache/ (no install),
run on loopback with a config of our own, and queried over its HTTP API."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import REPO_ROOT
from tests.support.ports import fresh_port

UNPACKED = REPO_ROOT / ".cache" / "prometheus"


def prometheus_binary() -> Path:
    """`prometheus` on PATH, else the one of Debian's package (apt-get download, dpkg -x); skipped with
    the reason where neither can be had, except under CI=true, where that fails."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    binary = UNPACKED / "usr" / "bin" / "prometheus"
    UNPACKED.mkdir(parents=True, exist_ok=True)
    with open(UNPACKED / ".lock", "w") as lock:  # the run's other workers wait for one unpacking
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = None if binary.exists() else _unpack_debian_package()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Debian's prometheus package is needed under CI: {problem}")
        pytest.skip(f"no prometheus binary: {problem}")
    return binary


def _unpack_debian_package() -> str | None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "apt-get and dpkg are not on this machine"
    download = ["apt-get", "download", "prometheus"]
    done = subprocess.run(download, cwd=UNPACKED, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        done = subprocess.run(download, cwd=UNPACKED, capture_output=True, text=True, timeout=300)
    packages = sorted(UNPACKED.glob("prometheus_*.deb"))
    if done.returncode != 0 or not packages:
        return f"apt-get download prometheus failed: {done.stderr.strip()[-300:]}"
    subprocess.run(["dpkg", "-x", str(packages[-1]), str(UNPACKED)], check=True, timeout=120)
    return None


@contextmanager
def prometheus(folder: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[str]:
    """Run Prometheus (1 s scrapes of `scrape_configs`) until the block ends; yield its URL."""
    binary = prometheus_binary()
    config = folder / "prometheus.yml"
    # JSON is YAML: Prometheus reads it as its config file
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs}))
    port = fresh_port()
    command = [
        str(binary), f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not get ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector of a PromQL query, now."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", (promql, answer)
    return answer["data"]["result"]


def label_values(url: str, label: str, match: str) -> list[str]:
    """Grafana's label_values(match, label)."""
    answer = httpx.get(f"{url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10).json()
    return answer["data"]
