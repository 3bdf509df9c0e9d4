"""Configuration: documented defaults, overridden by env vars read when the app starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.cache.store import CACHE_DEFAULTS
from app.gate_runs.settings import GATE_DEFAULTS
from app.ops.settings import OBSERVABILITY_DEFAULTS
from app.reliability_settings import RELIABILITY_DEFAULTS

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Every key the app reads, with its default. Env: GPTOSS_<KEY> (e.g. GPTOSS_DATA_DIR), plus the
# conventional unprefixed DATABASE_URL and REDIS_URL.
DEFAULTS: dict[str, Any] = {
    "DATA_DIR": ".data",  # SQLite file, model cache, private Redis
    "PROFILES": "profiles.toml",  # the profiles file
    "DATABASE_URL": None,  # None: sqlite:///<DATA_DIR>/gptoss.db
    "REDIS_URL": DEFAULT_REDIS_URL,  # Celery broker and cancel signals
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # request bodies above this get 413
    "CANCEL_SIGNAL_TTL_S": 24 * 3600,  # lifetime of the Redis cancel key of a running job
    "VISIBILITY_TIMEOUT_S": 6 * 3600,  # Redis redelivers an unacked task after this; > longest job
    "SSE_HEARTBEAT_S": 15.0,  # an idle event stream sends a comment this often
    "EVENTS_TTL_S": 3600,  # a job's event stream lives this long after the job ends
    "PROFILE": None,  # set in a worker process: the profile whose model it loads
    "ENGINE_PROCESS": 1,  # 1: a worker runs each engine in a child process (engine/process.py)
    "WORKER_GIL_SWITCH_MS": 0.5,  # a worker's GIL switch interval (Python's default 5 ms; workers/gil.py)
    **OBSERVABILITY_DEFAULTS,  # worker metrics port, heartbeats, stats window
    **RELIABILITY_DEFAULTS,  # API keys, rate limits, the reconciler (app/reliability_settings.py)
    **GATE_DEFAULTS,  # the scheduled release gate (app/gate_runs/settings.py)
    **CACHE_DEFAULTS,  # the response cache: CACHE_MAX_ENTRIES (0: off), CACHE_TTL_S (app/cache/store.py)
    # Batch API (app/batches/settings.py has the same defaults for apps built without these keys)
    "MAX_UPLOAD_BYTES": 200 * 1024 * 1024,  # POST /v1/files answers 413 above this (OpenAI's limit)
    "MAX_BATCH_LINES": 50_000,  # requests per batch input file (OpenAI's limit)
    "BATCH_INSERT_CHUNK": 1000,  # job rows per insert transaction (and per enqueue round)
    "BATCH_CHECK_INTERVAL_S": 1.0,  # how often a running batch is checked for its end or expiry
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the settings present in the environment (GPTOSS_*, DATABASE_URL, REDIS_URL)."""
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = environ.get(f"GPTOSS_{key}")
        if value is not None:
            settings[key] = type(default)(value) if isinstance(default, int | float) else value
    for key in ("DATABASE_URL", "REDIS_URL"):
        if environ.get(key):
            settings[key] = environ[key]
    return settings


def resolve_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then env, then explicit overrides; fills in the SQLite URL under DATA_DIR."""
    settings = {**DEFAULTS, **settings_from_env(), **(overrides or {})}
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = sqlite_url(settings["DATA_DIR"])
    settings["DATABASE_URL"] = with_psycopg_driver(settings["DATABASE_URL"])
    return settings


def with_psycopg_driver(url: str) -> str:
    """postgres:// and postgresql:// URLs use psycopg 3 (the driver installed), not psycopg2."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def sqlite_url(data_dir: str | Path) -> str:
    """The default SQLite database URL, creating the data folder if needed."""
    folder = Path(data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'gptoss.db'}"
