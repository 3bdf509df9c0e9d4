"""Start a ready worker's observability: its /metrics port and its heartbeat; stop both at shutdown."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from prometheus_client import start_http_server

from app.ops.heartbeats import WorkerHeartbeat
from app.services import services
from workers.engine_host import EngineHost
from workers.heartbeat import HeartbeatThread
from workers.metrics import WORKER_REGISTRY, EngineLoadCollector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerObservability:
    stop: Callable[[], None]
    beat: Callable[[], None]  # announce the worker now (its model just loaded: /readyz need not wait)


def start_worker_observability(
    app: Flask, consumer: Any, host: EngineHost | None, started_at: float
) -> WorkerObservability:
    """Serve /metrics and start heartbeats for the Celery worker `consumer`."""
    settings = services(app).settings.observability
    pinned = services(app).settings.profile
    port = settings.metrics_port_for(pinned, list(services(app).profiles))
    collector = EngineLoadCollector(host) if host is not None else None
    if collector is not None:
        WORKER_REGISTRY.register(collector)
    server = serve_metrics(settings.worker_metrics_host, port)
    queues = consumed_queues(consumer)
    client = services(app).settings.redis_client()

    def describe() -> WorkerHeartbeat:
        engines = host.loaded_engines() if host is not None else []
        served = next((e.tags.as_dict() for e in engines if pinned in (None, e.tags.profile)), {})
        return WorkerHeartbeat(
            name=consumer.hostname,
            profile=pinned or "",
            queues=queues,
            model_id=served.get("model_id", ""),
            tags=served,
            pid=os.getpid(),
            metrics_port=port if server is not None else 0,
            last_heartbeat=time.time(),
            started_at=started_at,
        )

    heartbeat = HeartbeatThread(client, describe, settings.heartbeat_interval_s, settings.heartbeat_ttl_s)
    heartbeat.start()

    def stop() -> None:
        heartbeat.stop()
        if server is not None:
            server.shutdown()
        if collector is not None:
            WORKER_REGISTRY.unregister(collector)

    return WorkerObservability(stop, heartbeat.beat)


def serve_metrics(address: str, port: int) -> Any:
    """The worker's /metrics server, or None when disabled (port 0). workers/start.py checked the port
    before the worker started; one taken since is logged."""
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=address, registry=WORKER_REGISTRY)
    except OSError as exc:
        log.error(
            "worker metrics not served on %s:%d (%s); set GPTOSS_WORKER_METRICS_PORT", address, port, exc
        )
        return None
    log.info("worker metrics on http://%s:%d/metrics", address, port)
    return server


def consumed_queues(consumer: Any) -> tuple[str, ...]:
    """The names of the Celery queues this worker consumes (its -Q option)."""
    return tuple(sorted(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues))
