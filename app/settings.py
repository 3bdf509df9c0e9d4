"""Settings: every key with its documented default, overridden by env vars, read once when a process starts.

`Settings.from_config` turns the merged mapping (defaults, then env GPTOSS_<KEY> plus the conventional
unprefixed DATABASE_URL and REDIS_URL, then explicit overrides) into one typed, frozen object, and
refuses a value it cannot read with a SettingsError naming the variable. create_app builds it once
and keeps it on the app's services (app/services.py); nothing parses the config again.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app.multi_host import multi_host_problem

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_WORKER_METRICS_HOST = "127.0.0.1"
FIRST_WORKER_METRICS_PORT = 9101  # latency_first (the first profile) 9101, quality_first 9102, ...
DEFAULT_LOCK_INTERVAL_S = 24 * 3600.0  # the gate's lock interval of a run started by hand with no schedule
FILE_STORAGE_KINDS = ("local", "database")  # app/batches/storage.py
MAX_LINE_BYTES = 1024 * 1024  # one batch request line; longer lines are reported, not read into memory

# Every key the app reads, with its default. Env: GPTOSS_<KEY> (e.g. GPTOSS_DATA_DIR), plus the
# conventional unprefixed DATABASE_URL and REDIS_URL.
DEFAULTS: dict[str, Any] = {
    "DATA_DIR": ".data",  # SQLite file, model cache, private Redis, batch files
    "PROFILES": "profiles.toml",  # the profiles file
    "DATABASE_URL": None,  # None: sqlite:///<DATA_DIR>/gptoss.db
    "REDIS_URL": DEFAULT_REDIS_URL,  # Celery broker and cancel signals
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # request bodies above this get 413
    "CANCEL_SIGNAL_TTL_S": 24 * 3600,  # lifetime of the Redis cancel key of a running job
    "VISIBILITY_TIMEOUT_S": 6 * 3600,  # Redis redelivers an unacked task after this; > longest job
    "SSE_HEARTBEAT_S": 15.0,  # an idle event stream sends a comment this often
    "EVENTS_TTL_S": 3600,  # a job's event stream lives this long after the job ends
    "PROFILE": None,  # set in a worker process: the profile whose model it loads
    "MULTI_HOST": 0,  # 1: one host of several; refuse single-host defaults (app/multi_host.py)
    "ENGINE_PROCESS": 1,  # 1: a worker runs each engine in a child process (engine/process.py)
    "WORKER_GIL_SWITCH_MS": None,  # a worker's GIL switch interval; unset: by where its engine runs
    # Security and reliability
    "API_KEYS": "",  # comma-separated; set: every route but /healthz needs `Authorization: Bearer <key>`
    "RATE_LIMIT_PER_MIN": 6000,  # job submits per client (API key, else IP) per minute; 0: no limit
    "MAX_STREAMS_PER_CLIENT": 64,  # open event streams (SSE) per client; 0: no limit
    "RECONCILE_INTERVAL_S": 60.0,  # celery beat runs the reconciler this often; 0: not scheduled
    "RECONCILE_STUCK_AFTER_S": 120.0,  # a queued/running job this old with no message/worker is re-enqueued
    "CLIENT_RETRY_GRACE_S": 15.0,  # a waiting client left: its job waits this long for a retry to take it
    # Observability
    "WORKER_METRICS_PORT": FIRST_WORKER_METRICS_PORT,  # worker /metrics: this + the profile's index; 0: off
    "WORKER_METRICS_HOST": None,  # where a worker's /metrics listens; None: 127.0.0.1 (MULTI_HOST: required)
    "HEARTBEAT_INTERVAL_S": 5.0,  # how often a worker refreshes its gptoss:worker:<hostname> key
    "HEARTBEAT_TTL_S": 15,  # a worker whose key is older than this is gone (/readyz?profile=: 503)
    "STATS_MAX_JOBS": 10_000,  # GET /v1/stats looks at the newest this many jobs of its window
    # The scheduled release gate
    "GATE_SCHEDULE_S": 24 * 3600.0,  # celery beat runs the gate this often; 0 turns the schedule off
    "GATE_PROFILE": "latency_first",  # the profile the scheduled gate drives
    "GATE_SLO": "personal",  # the SLO it checks (gate/slos.toml, or GATE_SLO_FILE)
    "GATE_DURATION_S": 60.0,  # how long it sends requests
    "GATE_RATE": 0.0,  # requests per second; 0: the SLO's min_qps
    "GATE_API_URL": "http://127.0.0.1:8000",  # the API the scheduled gate drives
    "GATE_SLO_FILE": "",  # a TOML file of extra or overriding SLOs
    "GATE_QUEUE": "batches",  # the queue of the worker that runs it (the batch worker; no model)
    "GATE_API_KEY": "",  # the key it sends where the API requires keys; empty: the first of API_KEYS
    # The response cache (app/cache/store.py)
    "CACHE_MAX_ENTRIES": 10_000,  # answers kept at most (oldest evicted first); 0 turns the cache off
    "CACHE_TTL_S": 24 * 3600,  # an answer is served from the cache for this long after it was stored
    # Batch API
    "FILE_STORAGE": "local",  # where files' bytes live: local (DATA_DIR/files) or database (docs/storage.md)
    "MAX_UPLOAD_BYTES": 200 * 1024 * 1024,  # POST /v1/files answers 413 above this (OpenAI's limit)
    "MAX_BATCH_LINES": 50_000,  # requests per batch input file (OpenAI's limit)
    "BATCH_INSERT_CHUNK": 1000,  # job rows per insert transaction (and per enqueue round)
    # a running batch's timed check (expiry, a stop); its last job's end and a cancel check it at once
    "BATCH_CHECK_INTERVAL_S": 30.0,
    # while interactive work waits, a worker still takes one batch line in every this many; 0: only idle
    "BATCH_TURN_EVERY": 10,
    # of a model worker's max_batch slots, this many are never given to batch lines (when max_batch > it)
    "BATCH_RESERVED_SLOTS": 1,
    # Retention (workers/retention.py): how long finished things are kept; 0 keeps them for ever
    "RETENTION_JOBS_S": 0,  # a finished job, after it ended
    "RETENTION_FILES_S": 0,  # an uploaded file, after its upload (its own expires_after comes first)
    "RETENTION_BATCH_OUTPUTS_S": 0,  # a batch's output and error files, after they were written
    "RETENTION_BATCHES_S": 0,  # a finished batch, after it ended
    "PURGE_INTERVAL_S": 3600.0,  # celery beat purges what expired this often; 0: not scheduled
    "PURGE_CHUNK": 500,  # rows deleted per purge transaction
    # Webhooks (workers/webhooks.py): events of finished jobs and batches POSTed, signed, to registered URLs
    "WEBHOOK_ALLOWED_HOSTS": "",  # comma-separated host names, IPs and CIDRs; empty: no webhooks at all
    "WEBHOOK_INTERVAL_S": 2.0,  # celery beat looks for new events and due deliveries this often; 0: never
    "WEBHOOK_TIMEOUT_S": 10.0,  # one delivery attempt's connect and read timeout
    "WEBHOOK_FIRST_RETRY_S": 5.0,  # the first retry's delay; later ones are multiples of it (up to 1440x)
    "WEBHOOK_RETRY_FOR_S": 24 * 3600.0,  # a delivery is retried this long after its first attempt
}
UNPREFIXED = ("DATABASE_URL", "REDIS_URL")


class SettingsError(ValueError):
    """A setting whose value cannot be read; the message names the env var and what it expects."""


def env_name(key: str) -> str:
    return key if key in UNPREFIXED else f"GPTOSS_{key}"


@dataclass(frozen=True)
class ReliabilitySettings:
    api_keys: tuple[str, ...]
    rate_limit_per_min: int
    max_streams_per_client: int
    reconcile_interval_s: float
    reconcile_stuck_after_s: float
    client_retry_grace_s: float


@dataclass(frozen=True)
class ObservabilitySettings:
    worker_metrics_port: int  # the first profile's; 0: no worker serves /metrics
    worker_metrics_host: str
    heartbeat_interval_s: float
    heartbeat_ttl_s: int
    stats_max_jobs: int

    def metrics_port_for(self, profile: str | None, profile_names: list[str]) -> int:
        """The base port plus the profile's index, so each profile's worker of a box listens on its own;
        0 = off. A worker serving every profile takes the port below the base."""
        base = self.worker_metrics_port
        if not base:
            return 0
        if profile is None or profile not in profile_names:
            return base - 1
        return base + profile_names.index(profile)


@dataclass(frozen=True)
class GateSettings:
    schedule_s: float
    profile: str
    slo: str
    duration_s: float
    rate: float | None
    api_url: str
    slo_file: str | None
    queue: str
    api_key: str | None

    @property
    def lock_interval_s(self) -> float:
        return self.schedule_s if self.schedule_s > 0 else DEFAULT_LOCK_INTERVAL_S


@dataclass(frozen=True)
class CacheSettings:
    max_entries: int
    ttl_s: int

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl_s > 0


@dataclass(frozen=True)
class BatchSettings:
    files_dir: Path  # DATA_DIR/files
    file_storage: str  # local | database (app/batches/storage.py)
    max_upload_bytes: int
    max_batch_lines: int
    insert_chunk: int
    check_interval_s: float
    turn_every: int  # app/queue.py LaneOrder
    reserved_slots: int


@dataclass(frozen=True)
class RetentionSettings:
    """How long finished things are kept, in seconds; 0 keeps them for ever (app/retention.py)."""

    jobs_s: int
    files_s: int
    batch_outputs_s: int
    batches_s: int
    purge_interval_s: float
    purge_chunk: int


@dataclass(frozen=True)
class WebhookSettings:
    """Where webhooks may be sent, and how often and how long they are tried (app/webhooks/)."""

    allowed_hosts: tuple[str, ...]  # host names, IPs and CIDRs; empty: webhooks are off
    interval_s: float
    timeout_s: float
    first_retry_s: float
    retry_for_s: float


@dataclass(frozen=True)
class Settings:
    """Everything a process reads from its configuration, typed, in one place."""

    data_dir: Path
    profiles_path: str
    database_url: str
    redis_url: str
    cancel_signal_ttl_s: int
    visibility_timeout_s: int
    sse_heartbeat_s: float
    events_ttl_s: int
    profile: str | None  # a worker's pinned profile
    multi_host: bool  # one host of several: checked at start (app/multi_host.py)
    engine_process: bool
    worker_gil_switch_ms: float
    reliability: ReliabilitySettings
    observability: ObservabilitySettings
    gate: GateSettings
    cache: CacheSettings
    batches: BatchSettings
    retention: RetentionSettings
    webhooks: WebhookSettings

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    def redis_client(self, socket_timeout_s: float = 5.0) -> redis.Redis:
        """A client of REDIS_URL that fails fast when Redis is away (connect 2 s, read `socket_timeout_s`)."""
        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=socket_timeout_s)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """The settings of a config mapping (keys it lacks take DEFAULTS); SettingsError on a bad value."""
        read = _Reader(config)
        data_dir = Path(read.text("DATA_DIR")).resolve()
        api_keys = parse_api_keys(config.get("API_KEYS", ""))
        database_url = with_psycopg_driver(config.get("DATABASE_URL") or sqlite_url(data_dir))
        metrics_host = config.get("WORKER_METRICS_HOST") or None
        if read.integer("MULTI_HOST"):
            problem = multi_host_problem(
                database_url,
                read.text("REDIS_URL"),
                config.get("PROFILE") or None,
                metrics_host,
                read.integer("WORKER_METRICS_PORT"),
            )
            if problem is not None:
                raise SettingsError(problem)
        engine_process = bool(read.integer("ENGINE_PROCESS"))
        return cls(
            data_dir=data_dir,
            profiles_path=read.text("PROFILES"),
            database_url=database_url,
            redis_url=read.text("REDIS_URL"),
            cancel_signal_ttl_s=read.integer("CANCEL_SIGNAL_TTL_S"),
            visibility_timeout_s=read.integer("VISIBILITY_TIMEOUT_S"),
            sse_heartbeat_s=read.number("SSE_HEARTBEAT_S"),
            events_ttl_s=read.integer("EVENTS_TTL_S"),
            profile=config.get("PROFILE") or None,
            multi_host=bool(read.integer("MULTI_HOST")),
            engine_process=engine_process,
            worker_gil_switch_ms=default_gil_switch_ms(
                read.optional_number("WORKER_GIL_SWITCH_MS"), engine_process
            ),
            reliability=ReliabilitySettings(
                api_keys=api_keys,
                rate_limit_per_min=read.integer("RATE_LIMIT_PER_MIN"),
                max_streams_per_client=read.integer("MAX_STREAMS_PER_CLIENT"),
                reconcile_interval_s=read.number("RECONCILE_INTERVAL_S"),
                reconcile_stuck_after_s=read.number("RECONCILE_STUCK_AFTER_S"),
                client_retry_grace_s=read.number("CLIENT_RETRY_GRACE_S"),
            ),
            observability=ObservabilitySettings(
                worker_metrics_port=read.integer("WORKER_METRICS_PORT"),
                worker_metrics_host=metrics_host or DEFAULT_WORKER_METRICS_HOST,
                heartbeat_interval_s=read.number("HEARTBEAT_INTERVAL_S"),
                heartbeat_ttl_s=read.integer("HEARTBEAT_TTL_S"),
                stats_max_jobs=read.integer("STATS_MAX_JOBS"),
            ),
            gate=GateSettings(
                schedule_s=read.number("GATE_SCHEDULE_S"),
                profile=read.text("GATE_PROFILE"),
                slo=read.text("GATE_SLO"),
                duration_s=read.number("GATE_DURATION_S"),
                rate=read.number("GATE_RATE") or None,
                api_url=read.text("GATE_API_URL").rstrip("/"),
                slo_file=read.text("GATE_SLO_FILE") or None,
                queue=read.text("GATE_QUEUE"),
                api_key=read.text("GATE_API_KEY") or next(iter(api_keys), None),
            ),
            cache=CacheSettings(
                max_entries=read.integer("CACHE_MAX_ENTRIES"), ttl_s=read.integer("CACHE_TTL_S")
            ),
            batches=BatchSettings(
                files_dir=data_dir / "files",
                file_storage=read.choice("FILE_STORAGE", FILE_STORAGE_KINDS),
                max_upload_bytes=read.integer("MAX_UPLOAD_BYTES"),
                max_batch_lines=read.integer("MAX_BATCH_LINES"),
                insert_chunk=read.integer("BATCH_INSERT_CHUNK"),
                check_interval_s=read.number("BATCH_CHECK_INTERVAL_S"),
                turn_every=read.integer("BATCH_TURN_EVERY"),
                reserved_slots=read.integer("BATCH_RESERVED_SLOTS"),
            ),
            retention=RetentionSettings(
                jobs_s=read.period("RETENTION_JOBS_S"),
                files_s=read.period("RETENTION_FILES_S"),
                batch_outputs_s=read.period("RETENTION_BATCH_OUTPUTS_S"),
                batches_s=read.period("RETENTION_BATCHES_S"),
                purge_interval_s=read.number("PURGE_INTERVAL_S"),
                purge_chunk=max(1, read.integer("PURGE_CHUNK")),
            ),
            webhooks=WebhookSettings(
                allowed_hosts=read.hosts("WEBHOOK_ALLOWED_HOSTS"),
                interval_s=read.number("WEBHOOK_INTERVAL_S"),
                timeout_s=read.number("WEBHOOK_TIMEOUT_S"),
                first_retry_s=read.number("WEBHOOK_FIRST_RETRY_S"),
                retry_for_s=read.number("WEBHOOK_RETRY_FOR_S"),
            ),
        )


class _Reader:
    """Reads one key of a config mapping as a type, naming the env var when the value is not one."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def _get(self, key: str, convert: Callable[[Any], Any], expected: str) -> Any:
        value = self.config.get(key, DEFAULTS[key])
        try:
            return convert(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{env_name(key)}={value!r}: expected {expected}") from None

    def text(self, key: str) -> str:
        return self._get(key, str, "a string")

    def integer(self, key: str) -> int:
        return self._get(key, _whole_number, "a whole number")

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, in any case."""
        expected = " or ".join(choices)
        return self._get(key, lambda v: _one_of(str(v).strip().lower(), choices), expected)

    def number(self, key: str) -> float:
        return self._get(key, float, "a number")

    def period(self, key: str) -> int:
        """Seconds, not negative; empty is 0 (for ever)."""
        return self._get(key, lambda v: _not_negative(_whole_number(v or 0)), "seconds (0: keep for ever)")

    def hosts(self, key: str) -> tuple[str, ...]:
        """Comma-separated host names, IPs and CIDRs (a CIDR must be one)."""
        return self._get(key, _hosts, "comma-separated host names, IP addresses or CIDRs (e.g. 10.0.0.0/8)")

    def optional_number(self, key: str) -> float | None:
        return self._get(key, lambda v: None if v in (None, "") else float(v), "a number")

    def optional_integer(self, key: str) -> int | None:
        return self._get(key, lambda v: None if v in (None, "") else _whole_number(v), "a whole number")


def default_gil_switch_ms(given: float | None, engine_process: bool) -> float:
    """A worker's GIL switch interval: as given, else Python's 5 ms where the engine runs in a child
    process and 0.5 ms where it runs in the worker's own (workers/gil.py says why)."""
    if given is not None:
        return given
    return 5.0 if engine_process else 0.5


def _whole_number(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(value)
    return value


def _hosts(value: Any) -> tuple[str, ...]:
    entries = tuple(entry.lower() for entry in parse_api_keys(value))
    for entry in entries:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)  # ValueError names nothing: the reader names the var
    return entries


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(value)
    return value


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings present in the environment (GPTOSS_*, then DATABASE_URL and REDIS_URL), typed."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {
        key: environ[f"GPTOSS_{key}"] for key in DEFAULTS if environ.get(f"GPTOSS_{key}")
    }
    found.update({key: environ[key] for key in UNPREFIXED if environ.get(key)})
    read = _Reader(found)
    for key in found:
        default = DEFAULTS[key]
        if isinstance(default, int | float):
            found[key] = read.integer(key) if isinstance(default, int) else read.number(key)
    return found


def resolve_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then env, then explicit overrides: the mapping a process starts from (and Flask's config)."""
    merged = {**DEFAULTS, **settings_from_env(), **(overrides or {})}
    merged["DATABASE_URL"] = with_psycopg_driver(merged["DATABASE_URL"] or sqlite_url(merged["DATA_DIR"]))
    return merged


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings of this process: defaults, env, then `overrides`."""
    return Settings.from_config(resolve_settings(overrides))


def parse_api_keys(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Keys (or hosts) from "k1, k2" (env) or a list (tests); blanks dropped."""
    if not value:
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(key.strip() for key in parts if key.strip())


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
