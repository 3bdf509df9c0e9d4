"""The processes of one deployment on several hosts (GPTOSS_MULTI_HOST=1): what a single-host default
would break, and the one sentence that says so.

On one host (`make run`) every process shares SQLite under GPTOSS_DATA_DIR and the private Redis on
127.0.0.1. On several, each process must name addresses the others reach: a Postgres DATABASE_URL, a
REDIS_URL that is not loopback, and for a model worker the address its /metrics listens on. With
GPTOSS_MULTI_HOST=1 a process refuses to start on a default that would only work on one host.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

VARIABLE = "GPTOSS_MULTI_HOST"


def is_loopback_host(host: str | None) -> bool:
    """Whether a URL's host is this machine only (none: a unix socket; localhost; 127/8; ::1)."""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: another host may reach it
        return False


def database_problem(database_url: str) -> str | None:
    if database_url.startswith("sqlite"):
        return (
            f"{VARIABLE}=1 but DATABASE_URL is SQLite ({database_url}), a file on this host only: "
            "set DATABASE_URL to the Postgres every host reaches"
        )
    return None


def redis_problem(redis_url: str) -> str | None:
    parts = urlsplit(redis_url)
    if parts.scheme == "unix" or is_loopback_host(parts.hostname):
        return (
            f"{VARIABLE}=1 but REDIS_URL={redis_url} is this host's own (the default is the private Redis "
            "of `make run`): set REDIS_URL to the Redis address every host reaches"
        )
    return None


def worker_metrics_problem(metrics_host: str | None, metrics_port: int) -> str | None:
    if metrics_port and not metrics_host:
        return (
            f"{VARIABLE}=1 but GPTOSS_WORKER_METRICS_HOST is unset: set the address this worker's /metrics "
            "listens on (this host's address for a scraper elsewhere, 127.0.0.1 to keep it local), or "
            "GPTOSS_WORKER_METRICS_PORT=0"
        )
    return None


def multi_host_problem(
    database_url: str, redis_url: str, profile: str | None, metrics_host: str | None, metrics_port: int
) -> str | None:
    """Why this process cannot run as one host of several, or None; a model worker (`profile` set) also
    needs an explicit metrics host."""
    worker = worker_metrics_problem(metrics_host, metrics_port) if profile else None
    return database_problem(database_url) or redis_problem(redis_url) or worker
