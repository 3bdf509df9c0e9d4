"""The Celery task celery beat sends to run the release gate (on the batch worker's queue)."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from app.queue import RUN_GATE_TASK
from gate.schedule import run_scheduled_gate as run_scheduled_gate_now


# No retries: a run that crashed half way would bias the next one; the next interval runs afresh.
@shared_task(name=RUN_GATE_TASK, ignore_result=True)
def run_scheduled_gate() -> str | None:
    """Run and store the scheduled release gate, unless this interval already has its run."""
    return run_scheduled_gate_now(current_app._get_current_object())  # type: ignore[attr-defined]
