"""Keep torch's CPU work on as few long-lived threads as possible.

torch's CPU build parallelises with GNU OpenMP, which gives every thread that runs a parallel
region its own pool of worker threads, kept until that thread exits. Once the live pools hold more
threads than there are cores, libgomp stops spinning between regions and every small op of a
decode step pays a futex wake-up: measured here (2 cores), a decode step of the demo model took
59 ms on the engine's thread when the main thread had run torch before, and 34 ms when it had not.

So heavy one-off work (loading, converting, calibrating a model; a benchmark's plain `generate`)
runs on a short-lived thread, whose pool goes away with it, and the engine's generation thread is
left as the only long-lived owner of a pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_short_lived_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `function` on a new thread and wait for it; its OpenMP pool dies with the thread."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # re-raised on the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"torch-{getattr(function, '__name__', 'work')}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
