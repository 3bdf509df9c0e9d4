"""Run the release gate: plan the load, drive it, compute the figures, check the SLO, report and plot."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from app.gate_runs.models import new_gate_run_id
from gate.arrivals import ArrivalProcess, arrival_times
from gate.driver import LoadPlan, drive_load
from gate.figures import compute_figures
from gate.plot import latency_plot_png
from gate.report import build_report, report_markdown
from gate.slo import Slo, check_slo
from gate.suite import suite_for

DEFAULT_REQUEST_TIMEOUT_S = 120.0  # a request not finished by then counts as an error


@dataclass(frozen=True)
class GateOptions:
    url: str
    profile: str
    slo: Slo
    duration_s: float
    rate: float | None = None  # requests per second; None: the SLO's min_qps
    arrivals: ArrivalProcess = "poisson"
    seed: int | None = None
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    api_key: str | None = None
    trigger: str = "cli"  # "cli" or "schedule"

    @property
    def target_rate(self) -> float:
        return self.rate or self.slo.min_qps


@dataclass(frozen=True)
class GateRun:
    """A finished run: the report (JSON), its Markdown and the latency plot (PNG)."""

    report: dict[str, Any]
    plot_png: bytes

    @property
    def id(self) -> str:
        return self.report["id"]

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    def markdown(self, plot_link: str | None = None) -> str:
        """The Markdown report; the plot link defaults to where the API serves this run's plot."""
        link = plot_link or f"{self.report['load']['url']}/v1/gate/runs/{self.id}/plot.png"
        return report_markdown(self.report, link)


def run_gate(options: GateOptions) -> GateRun:
    """Drive the live API for the set duration and judge the run against the SLO."""
    if options.target_rate <= 0 or options.duration_s <= 0:
        raise ValueError("the gate needs a positive rate and duration")
    seed = (
        options.seed if options.seed is not None else random.randrange(2**31)
    )  # recorded: runs can be redone
    plan = LoadPlan(
        base_url=options.url.rstrip("/"),
        profile=options.profile,
        run_id=new_gate_run_id(),
        prompts=suite_for(options.profile),
        arrivals=arrival_times(options.arrivals, options.target_rate, options.duration_s, seed),
        request_timeout_s=options.request_timeout_s,
        api_key=options.api_key,
    )
    result = drive_load(plan)
    figures = compute_figures(result.samples, options.duration_s, result.run_s)
    load = {
        "rate": options.target_rate,
        "arrivals": options.arrivals,
        "duration_s": options.duration_s,
        "seed": seed,
    }
    checks = check_slo(figures, options.slo)
    report = build_report(plan, result, figures, checks, options.slo, load, options.trigger)
    return GateRun(report, latency_plot_png(report))
