"""Worker heartbeats in Redis: each worker refreshes `gptoss:worker:<hostname>` (a hash with a TTL).

The hash holds the worker's profile, the queues it consumes, the model it serves (model_id and the
five tags as JSON), its pid, metrics port, last_heartbeat and started_at (unix seconds: a job a
worker claimed before its current process started was left by a dead one). Redis expires the key
when the worker stops refreshing it, so a dead worker vanishes without anyone cleaning up. The set
`gptoss:workers` lists the names to look at (no SCAN over the keyspace).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

WORKER_KEY_PREFIX = "gptoss:worker:"
WORKER_NAMES_KEY = "gptoss:workers"


def worker_key(hostname: str) -> str:
    return f"{WORKER_KEY_PREFIX}{hostname}"


@dataclass(frozen=True)
class WorkerHeartbeat:
    name: str  # the Celery hostname, e.g. "latency_first@gpu-box-1"
    profile: str  # the profile it is pinned to ("" when it serves any)
    queues: tuple[str, ...]  # the Celery queues it consumes
    model_id: str  # "" while its model loads
    tags: dict[str, str]  # the five tags of its engine ({} while its model loads)
    pid: int
    metrics_port: int  # its /metrics port (0: none)
    last_heartbeat: float  # unix seconds, the worker's clock
    started_at: float = 0.0  # when the worker process started (unix seconds; 0: not said)

    def as_fields(self) -> dict[str, str]:
        return {
            "profile": self.profile,
            "queues": ",".join(self.queues),
            "model_id": self.model_id,
            "tags": json.dumps(self.tags),
            "pid": str(self.pid),
            "metrics_port": str(self.metrics_port),
            "last_heartbeat": f"{self.last_heartbeat:.3f}",
            "started_at": f"{self.started_at:.3f}",
        }

    @classmethod
    def from_fields(cls, name: str, fields: Mapping[bytes, bytes]) -> WorkerHeartbeat:
        text = {key.decode(): value.decode() for key, value in fields.items()}
        return cls(
            name=name,
            profile=text.get("profile", ""),
            queues=tuple(q for q in text.get("queues", "").split(",") if q),
            model_id=text.get("model_id", ""),
            tags=json.loads(text.get("tags") or "{}"),
            pid=int(text.get("pid") or 0),
            metrics_port=int(text.get("metrics_port") or 0),
            last_heartbeat=float(text.get("last_heartbeat") or 0),
            started_at=float(text.get("started_at") or 0),
        )

    def as_json(self) -> dict[str, Any]:
        """What /readyz shows of a worker."""
        return {
            "name": self.name,
            "model_id": self.model_id or None,
            "state": "serving" if self.model_id else "loading",
            "tags": self.tags or None,
            "pid": self.pid,
            "last_heartbeat": self.last_heartbeat,
            "age_s": round(max(0.0, time.time() - self.last_heartbeat), 3),
        }


def write_heartbeat(client: redis.Redis, beat: WorkerHeartbeat, ttl_s: int) -> None:
    """Refresh the worker's key and keep its name listed."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(worker_key(beat.name), mapping=beat.as_fields())  # type: ignore[arg-type]
    pipe.expire(worker_key(beat.name), ttl_s)
    pipe.sadd(WORKER_NAMES_KEY, beat.name)
    pipe.execute()


def remove_heartbeat(client: redis.Redis, hostname: str) -> None:
    """A worker stopping cleanly says so at once instead of waiting for its key to expire."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(worker_key(hostname))
    pipe.srem(WORKER_NAMES_KEY, hostname)
    pipe.execute()


def live_workers(client: redis.Redis) -> list[WorkerHeartbeat]:
    """Workers whose key has not expired, by name; names whose key expired are dropped from the set."""
    names = sorted(name.decode() for name in client.smembers(WORKER_NAMES_KEY))  # type: ignore[union-attr]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(worker_key(name))
    beats, gone = [], []
    for name, fields in zip(names, pipe.execute(), strict=True):
        if fields:
            beats.append(WorkerHeartbeat.from_fields(name, fields))
        else:
            gone.append(name)
    if gone:
        client.srem(WORKER_NAMES_KEY, *gone)
    return beats


def live_workers_by_profile(client: redis.Redis, profiles: list[str]) -> dict[str, list[WorkerHeartbeat]]:
    """Each profile's live workers (a worker counts for every profile queue it consumes)."""
    workers = live_workers(client)
    return {profile: [w for w in workers if profile in w.queues] for profile in profiles}
