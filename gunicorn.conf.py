"""gunicorn settings of the API; gunicorn reads ./gunicorn.conf.py by default (the Procfile's `web`).

Shape: one worker process per usable core, at most MAX_WORKERS (WEB_CONCURRENCY or --workers overrides),
each with THREADS threads (--threads overrides): a submit costs a process about 1.5 ms of CPU under the
GIL, so one process keeps one core busy at most (bench/load.py), and the threads are mostly SSE readers
waiting on Redis. With several workers and no PROMETHEUS_MULTIPROC_DIR, <GPTOSS_DATA_DIR>/api-metrics
is used (wiped at start, removed at exit), so /metrics counts every worker's requests.

Without API keys (GPTOSS_API_KEYS, or keys stored by `gptoss keys add`) the API must not be reachable
from other machines: every bind address that is not loopback is replaced by 127.0.0.1 on the same port,
with a warning. (Keys revoked later leave the app itself refusing other machines: app/auth.py.) Each worker
process also loads the profiles' tokenizers in the background, so the first submit does not wait.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from typing import Any

MAX_WORKERS = 4
THREADS = 128
METRICS_FOLDER = "api-metrics"  # under GPTOSS_DATA_DIR: the workers' shared metrics files

# Request lines of any length reach the app, which answers one over 8 KiB with a JSON 414
# (app/http.py), not gunicorn's HTML page.
limit_request_line = 0
workers = int(os.environ.get("WEB_CONCURRENCY") or min(len(os.sched_getaffinity(0)), MAX_WORKERS))
threads = THREADS


def loopback_only(bind: str) -> str:
    """A bind address reachable from this machine only: 0.0.0.0:8000 -> 127.0.0.1:8000."""
    if bind.startswith(("unix:", "fd://")):
        return bind
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        return bind
    try:
        if host and ipaddress.ip_address(host).is_loopback:
            return bind
    except ValueError:  # a host name: it may resolve to any interface
        pass
    return f"127.0.0.1:{port or 8000}"


def on_starting(server: Any) -> None:
    """Before the sockets exist: refuse settings that cannot work (gunicorn prints the error and exits);
    without API keys, bind to 127.0.0.1 only, or with GPTOSS_MULTI_HOST=1 refuse to start."""
    share_metrics_between_workers(server)
    from app.keys.store import stored_keys_exist
    from app.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise RuntimeError(str(exc)) from None
    if settings.reliability.api_keys or stored_keys_exist(settings.database_url):
        return
    binds = server.cfg.bind
    safe = [loopback_only(bind) for bind in binds]
    if safe != binds and settings.multi_host:
        raise RuntimeError(
            f"GPTOSS_MULTI_HOST=1 but the API would bind {', '.join(binds)} without API keys: set "
            "GPTOSS_API_KEYS (or add keys with `gptoss keys add`) to serve other hosts"
        )
    if safe != binds:
        server.log.warning(
            "no API keys configured (GPTOSS_API_KEYS, `gptoss keys add`): binding %s instead of %s; "
            "add keys to serve other machines",
            ", ".join(safe),
            ", ".join(binds),
        )
        server.cfg.set("bind", safe)


def share_metrics_between_workers(server: Any) -> None:
    """Several workers, no PROMETHEUS_MULTIPROC_DIR: METRICS_FOLDER under the data dir, wiped now (a
    killed run's files must not count) and removed at exit, set before anything imports
    prometheus_client (the workers inherit it). GPTOSS_DATA_DIR is read here, not through Settings:
    loading them imports the app, and with it prometheus_client."""
    if server.cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = Path(os.environ.get("GPTOSS_DATA_DIR") or ".data").resolve() / METRICS_FOLDER
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        server.gptoss_metrics_dir = folder


def on_exit(server: Any) -> None:
    made = getattr(server, "gptoss_metrics_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """Load the tokenizers the prompt-length check needs while the worker already serves."""
    from app.jobs.budget import warm_up_in_background

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        warm_up_in_background(app)
