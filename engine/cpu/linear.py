"""A faster matrix layout for `nn.Linear` on CPUs whose BLAS is slow with a few rows.

A decode step multiplies a handful of rows (one per running request) by every weight matrix. On
this project's CI machines (AMD EPYC, torch's MKL) `x @ W.T` with 1-4 rows is pathologically slow:
10 ms for 1 row, 22 ms for 2 and 33 ms for 3 over one layer set of the demo model, against 3-5 ms
for the same product computed as `(W @ x.T).T`. The product is the same; only the BLAS call
differs. Which layout wins depends on the CPU and BLAS, so `choose_cpu_linear` times both on one of
the model's own weights at load and installs the faster one ("auto"), or obeys
GPTOSS_CPU_LINEAR=stock|transposed.
"""

from __future__ import annotations

import logging
import statistics
import time
import types
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "stock", "transposed")
PROBE_ROWS = (1, 2, 4, 8)  # decode-sized batches, where the layouts differ most
PROBE_BYTES = 128 * 2**20  # weights timed per probe: well above CPU cache sizes
MIN_GAIN = 0.8  # take the transposed layout only when it needs at most 80% of the stock time


@dataclass(frozen=True)
class LinearChoice:
    layout: str  # "stock" or "transposed"
    stock_ms: float | None = None  # measured, when "auto" chose
    transposed_ms: float | None = None

    def describe(self) -> str:
        if self.stock_ms is None or self.transposed_ms is None:
            return f"{self.layout} (set by GPTOSS_CPU_LINEAR)"
        measured = f"stock {self.stock_ms:.2f} ms, transposed {self.transposed_ms:.2f} ms per probe pass"
        return f"{self.layout} ({measured})"


def transposed_linear(self: Any, x: Any) -> Any:
    """nn.Linear.forward computed as (W @ x.T).T; one row is doubled (BLAS gemv is the slow case)."""
    import torch

    rows = x.reshape(-1, x.shape[-1])  # [rows, in]; often the transposed view a previous layer returned
    single = rows.shape[0] == 1
    # Row-major rows make rows.t() the layout BLAS is fast with (5x slower otherwise, measured).
    rows = rows.expand(2, -1).contiguous() if single else rows.contiguous()
    out = torch.mm(self.weight, rows.t()).t()  # [rows, out], a transposed view
    if single:
        out = out[:1]
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def choose_cpu_linear(model: Any, layout: str = "auto") -> LinearChoice:
    """Install the chosen layout on every plain nn.Linear of a CPU model; return what was chosen."""
    if layout not in LAYOUTS:
        raise ValueError(f"GPTOSS_CPU_LINEAR must be one of {LAYOUTS}, not {layout!r}")
    linears = _plain_linears(model)
    choice = LinearChoice(layout) if layout != "auto" else _measure(linears)
    if choice.layout == "transposed":
        for module in linears:
            module.forward = types.MethodType(transposed_linear, module)
    else:
        for module in linears:
            module.__dict__.pop("forward", None)
    log.info("CPU linear layout: %s", choice.describe())
    return choice


def _plain_linears(model: Any) -> list[Any]:
    from torch import nn

    return [module for module in model.modules() if type(module) is nn.Linear]


def _measure(linears: list[Any]) -> LinearChoice:
    """Time both layouts over the model's own weights (enough of them not to fit in the CPU caches,
    as in a decode step, where each weight is read once), at decode-sized batches."""
    import torch
    import torch.nn.functional as F

    probes, size = [], 0
    for module in linears:
        probes.append(module)
        size += module.weight.numel() * module.weight.element_size()
        if size >= PROBE_BYTES:
            break
    if not probes:
        return LinearChoice("stock", 0.0, 0.0)
    widths = {module.in_features for module in probes}
    inputs = {
        rows: {width: torch.randn(rows, width, dtype=probes[0].weight.dtype) for width in widths}
        for rows in PROBE_ROWS
    }

    def stock() -> None:
        for by_width in inputs.values():
            for module in probes:
                F.linear(by_width[module.in_features], module.weight, module.bias)

    def transposed() -> None:
        for by_width in inputs.values():
            for module in probes:
                transposed_linear(module, by_width[module.in_features])

    with torch.inference_mode():
        stock_ms, transposed_ms = _median_ms(stock), _median_ms(transposed)
    layout = "transposed" if transposed_ms <= MIN_GAIN * stock_ms else "stock"
    return LinearChoice(layout, stock_ms, transposed_ms)


def _median_ms(run: Any, repeats: int = 3) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
