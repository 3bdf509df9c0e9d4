"""The release gate without a service: arrivals, SLO checks, figures, the report, the plot, the driver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, Response, request

from app.queue import gate_beat_schedule
from app.settings import Settings
from gate.arrivals import arrival_count, arrival_times
from gate.driver import LoadPlan, drive_load
from gate.figures import compute_figures
from gate.schedule import gate_lock_key
from gate.slo import SloFileError, check_threshold, find_slo, load_slos
from gate.suite import suite_for
from tests.support.gate import assert_valid_png, gate_run_of, sample
from tests.support.live_server import serve


def test_builtin_slos_are_the_personal_and_enterprise_gates() -> None:
    slos = load_slos()
    assert (slos["personal"].min_qps, slos["personal"].p95_ttft_s, slos["personal"].p95_e2e_s) == (
        0.3,
        10,
        30,
    )
    assert slos["personal"].max_error_rate == 0.01
    assert slos["enterprise"].min_qps == 1.0 and slos["enterprise"].p95_ttft_s == 10


def test_a_user_slo_file_adds_and_overrides_slos(tmp_path: Path) -> None:
    path = tmp_path / "slos.toml"
    path.write_text(
        "[strict]\nmin_qps = 2\np95_ttft_s = 1\np95_e2e_s = 5\nmax_error_rate = 0\n\n"
        "[personal]\nmin_qps = 0.5\np95_ttft_s = 8\np95_e2e_s = 20\nmax_error_rate = 0.02\n"
    )
    assert find_slo("strict", path).p95_e2e_s == 5
    assert find_slo("personal", path).min_qps == 0.5
    assert find_slo("enterprise", path).min_qps == 1.0


def test_bad_slo_files_are_reported_with_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "slos.toml"
    path.write_text("[mine]\nmin_qps = 1\np95_ttft_s = -1\np95_e2e_s = 5\nmax_error_rate = 0\n")
    with pytest.raises(SloFileError, match=r"slos.toml: SLO 'mine': p95_ttft_s: .*greater than 0"):
        find_slo("mine", path)
    with pytest.raises(SloFileError, match="unknown SLO 'nope'; known: enterprise, personal"):
        find_slo("nope")
    with pytest.raises(SloFileError, match="cannot read the SLO file"):
        find_slo("personal", tmp_path / "missing.toml")


def test_failed_thresholds_say_by_how_much() -> None:
    assert check_threshold("p95_ttft_s", 12.3, 10.0, "<=").message == "p95_ttft_s 12.3 > 10.0 (+23%)"
    assert check_threshold("achieved_qps", 0.25, 0.3, ">=").message == "achieved_qps 0.25 < 0.3 (-17%)"
    assert check_threshold("p95_e2e_s", 2.0, 30.0, "<=").passed
    missing = check_threshold("p95_e2e_s", None, 30.0, "<=")
    assert not missing.passed and "no successful request" in missing.message


def test_arrivals_offer_exactly_the_target_rate_inside_the_window() -> None:
    assert arrival_count(0.3, 60) == 18 and arrival_count(0.3, 15) == 5 and arrival_count(0.01, 5) == 1
    assert arrival_times("fixed", 0.5, 10, None) == [0.0, 2.0, 4.0, 6.0, 8.0]
    poisson = arrival_times("poisson", 2.0, 30, seed=7)
    assert len(poisson) == 60 and poisson == sorted(poisson) and 0 <= poisson[0] and poisson[-1] < 30
    assert poisson == arrival_times("poisson", 2.0, 30, seed=7) != arrival_times("poisson", 2.0, 30, seed=8)
    gaps = [b - a for a, b in zip(poisson, poisson[1:], strict=False)]
    assert max(gaps) > 3 * min(gaps)  # bursts and lulls, unlike fixed spacing


def test_figures_count_only_successes_as_throughput_and_latency() -> None:
    samples = [sample(i, 0.5 + i / 10, 2.0 + i / 10) for i in range(9)] + [
        sample(9, None, None, "HTTP 503: x")
    ]
    figures = compute_figures(samples, window_s=10.0, run_s=12.0)
    assert (figures["requests"], figures["succeeded"], figures["failed"]) == (10, 9, 1)
    assert figures["achieved_qps"] == 0.9 and figures["offered_qps"] == 1.0 and figures["error_rate"] == 0.1
    assert figures["ttft_s"]["p50"] == 0.9 and figures["ttft_s"]["max"] == 1.3
    assert figures["e2e_s"]["samples"] == 9 and figures["errors"] == {"HTTP 503": 1}
    assert figures["completion_tokens"] == 180 and figures["tokens_per_s"] == 15.0


def test_the_report_holds_every_figure_in_json_markdown_and_plot() -> None:
    run = gate_run_of([sample(i, 0.4, 1.5) for i in range(10)], duration_s=10.0)
    report = run.report
    assert report["passed"] and report["failures"] == [] and report["object"] == "gate.run"
    assert [c["metric"] for c in report["checks"]] == [
        "achieved_qps",
        "p95_ttft_s",
        "p95_e2e_s",
        "error_rate",
    ]
    assert set(report["figures"]) >= {
        "achieved_qps", "offered_qps", "error_rate", "ttft_s", "e2e_s", "tokens_per_s", "by_prompt", "errors"
    }  # fmt: skip
    assert set(report["figures"]["ttft_s"]) == {"p50", "p95", "p99", "max", "samples"}
    assert report["model"]["model_id"] == "tiny" and len(report["samples"]) == 10
    json.dumps(report)  # JSON all the way down
    markdown = run.markdown(plot_link="run.png")
    assert markdown.startswith("# Release gate PASSED: `personal` SLO on `latency_first`")
    for line in (
        "| achieved_qps | 1.0 | >= 0.3 | pass |",
        "| p95_ttft_s | 0.4 | <= 10.0 | pass |",
        "| p95_e2e_s | 1.5 | <= 30.0 | pass |",
        "| error_rate | 0.0 | <= 0.01 | pass |",
        "| time to first token | 0.4 | 0.4 | 0.4 | 0.4 |",
        "| end to end | 1.5 | 1.5 | 1.5 | 1.5 |",
        "- requests: 10 sent, 10 succeeded, 0 failed (error rate 0.0 %)",
        "| short_chat | 16 | 4 | 4 | 0.4 | 1.5 | 20.0 |",
        "![Latency over time](run.png)",
    ):
        assert line in markdown.splitlines(), line
    width, height = assert_valid_png(run.plot_png)
    assert (width, height) == (900, 500)


def test_a_failing_report_lists_the_failed_thresholds_and_errors() -> None:
    samples = [sample(0, 12.0, 40.0), sample(1, 12.0, 35.0), sample(2, None, None, "job failed: boom")]
    run = gate_run_of(samples, duration_s=5.0)
    assert not run.passed
    assert run.report["failures"] == [
        "p95_ttft_s 12.0 > 10.0 (+20%)",
        "p95_e2e_s 39.8 > 30.0 (+32%)",
        "error_rate 0.333 > 0.01 (+3233%)",
    ]
    markdown = run.markdown().splitlines()
    assert "- p95_ttft_s 12.0 > 10.0 (+20%)" in markdown and "| job failed | 1 |" in markdown
    assert "| p95_ttft_s | 12.0 | <= 10.0 | **FAIL** |" in markdown
    assert_valid_png(run.plot_png)


@pytest.fixture
def scripted_api() -> Iterator[str]:
    """A stand-in API whose first job streams its first token after 2 s, second submit gets 503, third fails.

    The real service cannot be made slow on cue; this is only for the driver's timing and error paths.
    """
    app, submits = Flask(__name__), iter(range(1000))
    lock = threading.Lock()

    @app.post("/v1/jobs")
    def submit() -> tuple[dict, int]:
        with lock:
            number = next(submits)
        assert request.get_json()["metadata"]["gptoss_gate"].startswith("gate_")
        assert request.headers["Authorization"] == "Bearer secret-key"
        if number == 1:
            return {"error": {"message": "queue down"}}, 503
        return {"id": f"job_{number}"}, 202

    @app.get("/v1/jobs/<job_id>/events")
    def events(job_id: str) -> Response:
        assert request.headers["Authorization"] == "Bearer secret-key"

        def stream() -> Iterator[str]:
            yield ": stream open\n\n"
            if job_id == "job_0":
                time.sleep(2.0)
            yield 'event: delta\ndata: {"content": "Hi", "reasoning": "", "completion_tokens": 1}\n\n'
            if job_id == "job_2":
                yield 'event: error\ndata: {"status": "failed", "error": {"message": "boom"}}\n\n'
            else:
                done = {"status": "succeeded", "usage": {"completion_tokens": 3}, "tags": {"model_id": "x"}}
                yield f"event: done\ndata: {json.dumps(done)}\n\n"

        return Response(stream(), mimetype="text/event-stream")

    with serve(app) as url:
        yield url


def test_the_driver_is_open_loop_and_records_what_the_client_saw(scripted_api: str) -> None:
    arrivals = arrival_times("fixed", 4.0, 1.0, None)  # 0, 0.25, 0.5, 0.75
    prompts = suite_for("latency_first")
    plan = LoadPlan(scripted_api, "latency_first", "gate_0123456789ab", prompts, arrivals, 30, "secret-key")
    result = drive_load(plan)
    samples = result.samples
    assert [s.error for s in samples] == [None, "HTTP 503: queue down", "job failed: boom", None]
    # the slow first request never held back the later ones
    assert all(abs(s.sent_s - s.scheduled_s) < 0.15 for s in samples if s.sent_s is not None)
    assert samples[0].ttft_s is not None and samples[0].ttft_s >= 2.0
    assert samples[3].ttft_s is not None and samples[3].ttft_s < 1.0
    assert samples[3].completion_tokens == 3 and samples[3].ok and samples[3].tags == {"model_id": "x"}
    assert 2.0 <= result.run_s < 5.0


def test_the_beat_runs_the_gate_daily_by_default_and_not_at_all_with_schedule_0() -> None:
    entry = gate_beat_schedule(Settings.from_config({}))["release-gate"]
    assert entry["task"] == "gate.tasks.run_scheduled_gate" and entry["options"]["queue"] == "batches"
    assert entry["schedule"].total_seconds() == 24 * 3600
    assert gate_beat_schedule(Settings.from_config({"GATE_SCHEDULE_S": 0.0})) == {}
    assert gate_lock_key("latency_first", 3600, 7200.5) == "gptoss:gate:lock:latency_first:2"


def test_the_scheduled_gate_sends_the_first_api_key_unless_given_its_own() -> None:
    assert Settings.from_config({"API_KEYS": "k1, k2"}).gate.api_key == "k1"
    assert Settings.from_config({"API_KEYS": "k1", "GATE_API_KEY": "gate"}).gate.api_key == "gate"
    assert Settings.from_config({}).gate.api_key is None


def test_the_gate_command_writes_its_report_by_default() -> None:
    from pathlib import Path

    from cli.main import build_parser

    args = build_parser().parse_args(["gate", "--profile", "latency_first"])
    assert (args.out_dir, args.no_report) == (Path("gate-reports"), False)
    assert build_parser().parse_args(["gate", "--no-report"]).no_report is True
