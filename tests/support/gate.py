"""Helpers shared by the release-gate tests: a gate run built from given samples, and PNG checks."""

from __future__ import annotations

import io
import time
from collections.abc import Sequence

from app.gate_runs.models import new_gate_run_id
from gate.driver import LoadPlan, LoadResult, RequestSample
from gate.figures import compute_figures
from gate.plot import latency_plot_png
from gate.report import build_report
from gate.runner import GateRun
from gate.slo import Slo, check_slo, find_slo
from gate.suite import suite_for
from tests.support.apps import FAKE_TAGS


def sample(index: int, ttft_s: float | None, e2e_s: float | None, error: str | None = None) -> RequestSample:
    """A request sent at `index` seconds into the run that succeeded (no error) or failed."""
    return RequestSample(
        index=index,
        prompt=suite_for("latency_first")[index % 3].name,
        scheduled_s=float(index),
        sent_s=float(index) + 0.001,
        ttft_s=ttft_s,
        e2e_s=e2e_s,
        ok=error is None,
        error=error,
        completion_tokens=None if error else 20,
        job_id=f"job_{index}",
        tags=None if error else FAKE_TAGS,
    )


def gate_run_of(
    samples: Sequence[RequestSample], slo: Slo | None = None, duration_s: float = 10.0
) -> GateRun:
    """The GateRun the runner would make from these samples (no API involved)."""
    slo = slo or find_slo("personal")
    plan = LoadPlan(
        base_url="http://127.0.0.1:9",
        profile="latency_first",
        run_id=new_gate_run_id(),
        prompts=suite_for("latency_first"),
        arrivals=[s.scheduled_s for s in samples],
        request_timeout_s=120.0,
    )
    result = LoadResult(list(samples), time.time() - duration_s, duration_s + 2.0)
    figures = compute_figures(result.samples, duration_s, result.run_s)
    load = {"rate": len(samples) / duration_s, "arrivals": "fixed", "duration_s": duration_s, "seed": None}
    report = build_report(plan, result, figures, check_slo(figures, slo), slo, load, "cli")
    return GateRun(report, latency_plot_png(report))


def assert_valid_png(data: bytes) -> tuple[int, int]:
    """The image's (width, height) after Pillow has decoded it completely."""
    from PIL import Image

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size
