"""Celery glue: each profile's lanes plus `batches`, JSON only, late acks, tasks inside the app context.

A profile's work waits in four lanes (Redis lists), taken in this order by its workers: `high`,
`normal` (the queue named as the profile, as before lanes), `low`, `batch` (the lines of batches).
Interactive work (jobs, chat, responses) is `normal` unless it asks for another priority. Batches
are not starved: after BATCH_TURN_EVERY - 1 messages from the other lanes in a row, a worker asks the
batch lane first for one message. Nor do they fill a worker: batch lines hold at most max_batch -
BATCH_RESERVED_SLOTS of its slots, so an interactive job starts at once beside a running batch
(LaneOrder; `batch_slots`). Inside a lane, work is fair between keys: each lane is FAIR_BUCKETS
queues, a job goes to the one its key (else its batch) hashes to, and a worker takes the queues of a
lane in turn.

Every task name and every message the API or a worker sends is here. The names keep the modules
the tasks were first registered in ("workers.batch_tasks.ingest_batch", ...): messages already
queued, and beat schedules already stored, name them so.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, NamedTuple

from celery import Celery, Task
from flask import Flask
from kombu import Exchange, Queue

from app.settings import Settings

RUN_JOB_TASK = "workers.tasks.run_job"
INGEST_BATCH_TASK = "workers.batch_tasks.ingest_batch"
WATCH_BATCH_TASK = "workers.batch_tasks.watch_batch"
RECONCILE_TASK = "workers.reconciler.reconcile"
RUN_GATE_TASK = "gate.tasks.run_scheduled_gate"
PURGE_TASK = "workers.retention.purge"
WEBHOOKS_TASK = "workers.webhooks.deliver"

BATCHES_QUEUE = "batches"  # consumed by the batch worker (Procfile `batches`), never by a model worker
PUBLISH_BATCH = 1000  # messages buffered in one Redis pipeline (kombu >= 5.7 batches publishes)

LANES = ("high", "normal", "low", "batch")  # the order a profile's worker takes them in
PRIORITIES = ("low", "normal", "high")  # what interactive work may ask for (`priority`)
# kombu's Redis transport keeps one list per priority step, and a worker's BRPOP names each list of each
# queue. No message here carries a priority (the lanes order the work), so one step: 16 keys per BRPOP,
# not kombu's default 64, which the worker packed and sent for every message it took.
KOMBU_PRIORITY_STEPS = (0,)
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
# how long a worker's BRPOP waits before asking again: a batch slot freed meanwhile is taken this late
BRPOP_TIMEOUT_S = 0.05


FAIR_BUCKETS = 4  # queues per lane; two keys share one with probability 1/FAIR_BUCKETS
MAX_LINES_PER_MESSAGE = 32  # a batch's lines in one run_job message, at most (lines_per_message)


class QueuedJob(NamedTuple):
    job_id: str
    profile: str
    task_id: str
    queue: str  # job_queue(...): its lane's queue for its key


# OpenAI's `service_tier` (chat, responses) as a priority; "auto" and "default" are `normal`
SERVICE_TIER_PRIORITY = {"priority": "high", "default": "normal", "auto": "normal", "flex": "low"}
ServiceTier = Literal["auto", "default", "flex", "priority"]


def lane_of(batch_id: str | None, request: Mapping[str, Any]) -> str:
    """A job's lane: `batch` for a batch's lines, else the priority its request asked for."""
    if batch_id is not None:
        return "batch"
    priority = request.get("priority")
    return priority if priority in PRIORITIES else "normal"


def lane_queue(profile: str, lane: str, bucket: int = 0) -> str:
    """A Celery queue of a profile's lane: `<profile>[.<lane>][~<bucket>]`; the first queue of `normal`
    keeps the profile's own name (the one queue before lanes)."""
    name = profile if lane == "normal" else f"{profile}.{lane}"
    return f"{name}~{bucket}" if bucket else name


def fair_bucket(key: str | None) -> int:
    """The bucket of a key (an owner, else a batch): stable across processes, unlike hash()."""
    if not key:
        return 0
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % FAIR_BUCKETS


def job_queue(
    profile: str, batch_id: str | None, request: Mapping[str, Any], owner: str | None = None
) -> str:
    """The queue a job waits in: its lane (lane_of), and in it the bucket of its owner, else its batch.
    Every way a job is queued (submit, ingest, requeue, the reconciler's re-send) asks here."""
    return lane_queue(profile, lane_of(batch_id, request), fair_bucket(owner or batch_id))


def profile_queues(profile: str) -> list[str]:
    """A profile's queues in the order its workers take them (`-Q`)."""
    return [lane_queue(profile, lane, bucket) for lane in LANES for bucket in range(FAIR_BUCKETS)]


def profile_queue_keys(profile: str) -> list[str]:
    """Every Redis list that holds a profile's waiting messages (each lane, each kombu priority step)."""
    return [
        queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}"
        for queue in profile_queues(profile)
        for step in KOMBU_PRIORITY_STEPS
    ]


def batch_slots_for(max_batch: int, reserved: int) -> int | None:
    """How many of a model worker's `max_batch` slots batch lines may hold; None: all of them (a worker
    of one slot, or no reserve: a batch there would otherwise never run)."""
    return max_batch - reserved if 0 < reserved < max_batch else None


def lines_per_message(batch_slots: int | None) -> int:
    """How many of a batch's lines travel in one run_job message to a worker with `batch_slots` for them
    (batch_slots_for): a quarter of them, at most MAX_LINES_PER_MESSAGE, at least 1. A worker that
    does not count its batch lines (None: one slot, or no reserve) gets one line a message, as its
    prefetch of messages is then all that bounds the lines it holds.

    A worker takes one message per BRPOP, and each costs it the same Celery bookkeeping (the take, the
    unacked copy, the ack, a pool thread) whatever it carries: one line a message capped a batch at about
    120 lines/s on the paced engine. A quarter keeps at least four messages in hand, so a new one is
    taken while the others' lines still run, and a worker of under 8 batch slots keeps one line a message."""
    if batch_slots is None:
        return 1
    return max(1, min(MAX_LINES_PER_MESSAGE, batch_slots // 4))


# run_job messages that carry several lines: their task id -> how many of those lines have ended (the
# worker's runner reports them, workers/tasks.py): their slots are free before the message is done
_lines_ended: dict[str, int] = {}
_lines_ended_lock = threading.Lock()


def line_ended(task_id: str) -> None:
    """One line of the message `task_id` ended (on any of the threads running its lines)."""
    with _lines_ended_lock:
        _lines_ended[task_id] = _lines_ended.get(task_id, 0) + 1


def message_done(task_id: str) -> None:
    """Every line of the message ended: it leaves Celery's requests, and its count goes."""
    with _lines_ended_lock:
        _lines_ended.pop(task_id, None)


def batch_lines_in_hand() -> int:
    """The batch lines this worker holds (taken, running or about to): the lines of Celery's requests
    from a batch lane, less those that already ended."""
    from celery.worker import state

    # The pool's threads add and drop requests while the consumer counts: iterating the WeakSet itself
    # can raise "Set changed size during iteration". Copying its set of references is one C call,
    # which no other thread interrupts.
    held = (ref() for ref in set(state.reserved_requests.data))
    return sum(
        len(request.args or ()) - _lines_ended.get(request.id, 0)
        for request in held
        if request is not None and is_batch_queue(str((request.delivery_info or {}).get("routing_key", "")))
    )


@functools.cache  # asked several times per message taken, of a handful of names
def _lane_rank(queue: str) -> int:
    name = queue.rsplit("~", 1)[0]
    for rank, lane in enumerate(LANES):
        if lane != "normal" and name.endswith(f".{lane}"):
            return rank
    return LANES.index("normal")


def is_batch_queue(queue: str) -> bool:
    return _lane_rank(queue) == LANES.index("batch")


class LaneOrder:
    """kombu's queue order for a worker (transport option `queue_order_strategy`): the lanes by rank,
    except that after `batch_turn_every - 1` messages from the other lanes in a row, the batch lane
    is asked first for one (0: never, batches wait for idle time). Asking costs nothing when the batch
    lane is empty: one BRPOP names every lane and Redis pops from the first non-empty one. While one
    more batch message (up to `message_lines` lines) could take the worker past `batch_slots` batch
    lines, the batch lane is not asked at all (None: no limit). The
    queues of one lane (its fair buckets) take turns: the one a message came from goes last."""

    def __init__(
        self,
        batch_turn_every: int = 10,
        batch_slots: int | None = None,
        in_hand: Callable[[], int] = batch_lines_in_hand,
        message_lines: int = 1,
    ) -> None:
        self.items: list[str] = []
        self.batch_turn_every = batch_turn_every
        self.batch_slots, self.in_hand = batch_slots, in_hand
        self.message_lines = message_lines  # the most lines a batch message brings (lines_per_message)
        self.since_batch = 0  # messages taken from the other lanes since the last batch line

    def update(self, items: Iterable[str]) -> None:
        self.items[:] = sorted(items, key=_lane_rank)

    def consume(self, n: int) -> list[str]:
        items = self.items[:n]
        if self.batch_slots is not None and self.in_hand() + self.message_lines > self.batch_slots:
            return [queue for queue in items if not is_batch_queue(queue)]
        if self.batch_turn_every and self.since_batch >= self.batch_turn_every - 1:
            return sorted(items, key=lambda queue: not is_batch_queue(queue))
        return items

    def rotate(self, last_used: str) -> str:
        """kombu tells which queue the last message came from."""
        if is_batch_queue(last_used):
            self.since_batch = 0
        else:
            self.since_batch += 1
        if last_used in self.items:  # last in its lane: the lane's other buckets come first next time
            self.items.remove(last_used)
            self.items.append(last_used)
            self.items.sort(key=_lane_rank)
        return last_used


@dataclass(frozen=True)
class LaneOrderOf:
    """A worker's queue order as kombu takes it: called once per channel, it makes a LaneOrder. As
    text in Celery's `conf` control reply (Flower's worker page), which is JSON: a bare callable is not."""

    batch_turn_every: int
    batch_slots: int | None

    message_lines: int = 1

    def __call__(self) -> LaneOrder:
        return LaneOrder(self.batch_turn_every, self.batch_slots, message_lines=self.message_lines)

    def __json__(self) -> str:
        return (
            f"LaneOrder(batch_turn_every={self.batch_turn_every}, batch_slots={self.batch_slots}, "
            f"message_lines={self.message_lines})"
        )


def celery_config(
    settings: Settings, profile_names: list[str], batch_slots: int | None = None
) -> dict[str, Any]:
    """Celery settings; the DB, not Celery, stores results. `batch_slots`: a model worker's (LaneOrder)."""
    visibility_timeout = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "socket_connect_timeout": 2,
            **unacked_restore_options(visibility_timeout),
            # a callable, not a name: kombu builds one per channel (kombu.utils.scheduling.cycle_by_name)
            "queue_order_strategy": LaneOrderOf(
                settings.batches.turn_every, batch_slots, lines_per_message(batch_slots)
            ),
            "polling_interval": BRPOP_TIMEOUT_S,  # kombu's BRPOP timeout (Redis >= 6 takes fractions)
            "priority_steps": list(KOMBU_PRIORITY_STEPS),
        },
        "broker_connection_max_retries": None,  # a worker outlives any Redis outage, then consumes again
        "task_queues": [
            Queue(name, Exchange(name), routing_key=name)
            for profile in profile_names
            for name in profile_queues(profile)
        ],
        "task_default_queue": profile_names[0],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # a submit must fail fast (and answer 503) when Redis is down, not hang for ever
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        "worker_hijack_root_logger": False,
        "include": ["workers.tasks", "workers.reconciler", "workers.retention", "workers.webhooks"],
        "beat_schedule": {
            **reconcile_beat_schedule(settings),
            **purge_beat_schedule(settings),
            **webhooks_beat_schedule(settings),
            **gate_beat_schedule(settings),
        },
    }


def unacked_restore_options(visibility_timeout_s: float) -> dict[str, int]:
    """Sweep for messages of dead workers often enough for the visibility timeout (kombu: every 100 s).

    A worker killed inside a sweep leaves the sweep's lock behind; it expires after a few sweeps
    (kombu: 5 minutes, during which nothing is redelivered). Two overlapping sweeps at worst
    deliver a message twice, which the job's claim guard turns into a no-op.
    """
    interval = max(1, min(10, int(visibility_timeout_s) // 3))
    return {
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5 * interval,
    }


def reconcile_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the reconciler: on the batch worker's queue (it loads no model)."""
    interval = settings.reliability.reconcile_interval_s
    if interval <= 0:
        return {}
    # `expires`: a run nobody took within one interval is dropped; the next one does its work
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"reconcile-jobs": {"task": RECONCILE_TASK, "schedule": interval, "options": options}}


def purge_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the retention purge (workers/retention.py), on the batch worker's queue."""
    interval = settings.retention.purge_interval_s
    if interval <= 0:
        return {}
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"purge-expired": {"task": PURGE_TASK, "schedule": interval, "options": options}}


def webhooks_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The celery beat entry of the webhook sender (workers/webhooks.py), on the batch worker's queue."""
    interval = settings.webhooks.interval_s
    if interval <= 0:
        return {}
    options = {"queue": BATCHES_QUEUE, "expires": interval}
    return {"deliver-webhooks": {"task": WEBHOOKS_TASK, "schedule": interval, "options": options}}


def gate_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery beat's entry for the scheduled gate; empty when GATE_SCHEDULE_S is 0."""
    gate = settings.gate
    if gate.schedule_s <= 0:
        return {}
    return {
        "release-gate": {
            "task": RUN_GATE_TASK,
            "schedule": timedelta(seconds=gate.schedule_s),
            "options": {"queue": gate.queue, "expires": gate.schedule_s},
        }
    }


def make_celery(
    app: Flask, settings: Settings, profile_names: list[str], batch_slots: int | None = None
) -> Celery:
    """The app's Celery, whose tasks run inside the Flask app context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings, profile_names, batch_slots))
    celery_app.set_default()
    app.extensions["celery"] = celery_app  # where Flask's Celery pattern (and `celery -A`) looks
    return celery_app


def send_run_job(celery_app: Celery, job_id: str, profile: str, task_id: str, queue: str) -> None:
    """Put run_job(job_id) on its queue (job_queue); raises when the broker cannot take it."""
    celery_app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, task_id=task_id)


def send_run_jobs(celery_app: Celery, jobs: Iterable[QueuedJob]) -> None:
    """Put run_job on the jobs' queues, many messages per Redis round trip: one message per task id,
    carrying every job of that id (a batch's lines share one, lines_per_message of them; any other
    job has its own)."""
    messages: dict[str, tuple[str, list[str]]] = {}  # task id -> (queue, job ids), in the jobs' order
    for job_id, _, task_id, queue in jobs:
        messages.setdefault(task_id, (queue, []))[1].append(job_id)
    declared: set[str] = set()
    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        for task_id, (queue, job_ids) in messages.items():
            # declaring each queue once per call, and giving argsrepr, halve Celery's per-message cost
            declare: list[str] | None = None if queue not in declared else []
            declared.add(queue)
            celery_app.send_task(
                RUN_JOB_TASK, args=job_ids, queue=queue, task_id=task_id, producer=producer,
                declare=declare, argsrepr=repr(job_ids), kwargsrepr="{}",
            )  # fmt: skip


def send_ingest(celery_app: Celery, batch_id: str) -> None:
    """Queue the validation and job creation of a batch; raises when the broker cannot take it."""
    celery_app.send_task(INGEST_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE)


def send_watch(celery_app: Celery, batch_id: str, countdown: float = 0.0) -> None:
    """Queue the next check of a running batch (its end, its cancel, its expiry)."""
    celery_app.send_task(WATCH_BATCH_TASK, args=[batch_id], queue=BATCHES_QUEUE, countdown=countdown or None)
