"""The latency-over-time plot of a run (PNG), drawn with matplotlib's Agg renderer."""

from __future__ import annotations

import io
from typing import Any


def latency_plot_png(report: dict[str, Any]) -> bytes:
    """TTFT and E2E of each request against its send time, the SLO's P95 limits, failures marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: matplotlib is slow to load
    from matplotlib.figure import Figure

    samples, slo = report["samples"], report["slo"]
    ok = [s for s in samples if s["ok"]]
    failed = [s for s in samples if not s["ok"]]
    figure = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot: no global state, safe in worker threads
    axes = figure.add_subplot()
    sent = [s["sent_s"] for s in ok]
    axes.plot(sent, [s["e2e_s"] for s in ok], "o-", color="tab:blue", markersize=4, label="end to end")
    with_ttft = [s for s in ok if s["ttft_s"] is not None]
    axes.plot(
        [s["sent_s"] for s in with_ttft],
        [s["ttft_s"] for s in with_ttft],
        "s-",
        color="tab:orange",
        markersize=4,
        label="time to first token",
    )
    axes.axhline(slo["p95_e2e_s"], color="tab:blue", linestyle="--", linewidth=1, label="P95 E2E limit")
    axes.axhline(slo["p95_ttft_s"], color="tab:orange", linestyle="--", linewidth=1, label="P95 TTFT limit")
    if failed:
        times = [s["sent_s"] if s["sent_s"] is not None else s["scheduled_s"] for s in failed]
        axes.plot(
            times,
            [0.0] * len(failed),
            "x",
            color="tab:red",
            markersize=9,
            clip_on=False,
            label="failed request",
        )
    window_s = report["figures"]["window_s"]
    axes.axvspan(0, window_s, color="0.5", alpha=0.06, label="load window")
    verdict = "PASSED" if report["passed"] else "FAILED"
    axes.set_title(f"Release gate {verdict}: {slo['name']} SLO on {report['profile']}\n{report['id']}")
    axes.set_xlabel("request sent at (s from the start of the run)")
    axes.set_ylabel("latency as the client saw it (s)")
    latencies = [s["e2e_s"] for s in ok] + [slo["p95_e2e_s"], slo["p95_ttft_s"]]
    axes.set_ylim(0, max(latencies) * 1.08)
    axes.set_xlim(0, max([window_s, *(s["sent_s"] or 0 for s in samples)]) * 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=6, fontsize="small", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
