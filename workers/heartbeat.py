"""A worker's heartbeat thread: refreshes gptoss:worker:<hostname> every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from app.ops.heartbeats import WorkerHeartbeat, remove_heartbeat, write_heartbeat

log = logging.getLogger(__name__)


class HeartbeatThread:
    """Writes `describe()` every `interval_s` with a TTL of `ttl_s`; removes the key on stop."""

    def __init__(
        self,
        client: redis.Redis,
        describe: Callable[[], WorkerHeartbeat],
        interval_s: float,
        ttl_s: int,
    ) -> None:
        self.client = client
        self.describe = describe
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)
        self._name: str | None = None

    def start(self) -> None:
        self.beat()  # before returning: the worker is listed the moment it is ready
        self._thread.start()

    def beat(self) -> None:
        try:
            heartbeat = self.describe()
            self._name = heartbeat.name
            write_heartbeat(self.client, heartbeat, self.ttl_s)
        except Exception as exc:  # Redis down: keep trying; /readyz reports the worker missing meanwhile
            log.warning("heartbeat not written: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._name is not None:
            try:
                remove_heartbeat(self.client, self._name)
            except redis.RedisError as exc:
                log.warning(
                    "heartbeat of %s not removed (it expires in %d s): %s", self._name, self.ttl_s, exc
                )

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()
