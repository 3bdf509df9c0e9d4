"""Running requests through an engine from many threads at once (tests of Engine and EngineProcess)."""

from __future__ import annotations

import threading
from typing import Protocol

from engine.types import GenerationRequest, GenerationResult


class _Handle(Protocol):
    def result(self, timeout: float | None = None) -> GenerationResult: ...


class _Engine(Protocol):
    def submit(self, request: GenerationRequest) -> _Handle: ...


def run_all(
    engine: _Engine, requests: list[GenerationRequest], timeout: float = 120
) -> list[GenerationResult]:
    """Submit every request from its own thread at once; return results in order."""
    results: list[GenerationResult | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def worker(index: int) -> None:
        barrier.wait()
        results[index] = engine.submit(requests[index]).result(timeout=timeout)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
