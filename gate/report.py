"""The run's report: a JSON document (what is stored and served) and its Markdown rendering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gate.driver import LoadPlan, LoadResult
from gate.slo import Check, Slo, format_number


def model_tags(result: LoadResult) -> dict[str, str] | None:
    """The tags of the model that served the run (the first final event that carried them)."""
    return next((s.tags for s in result.samples if s.tags), None)


def build_report(
    plan: LoadPlan,
    result: LoadResult,
    figures: dict[str, Any],
    checks: list[Check],
    slo: Slo,
    load: dict[str, Any],
    trigger: str,
) -> dict[str, Any]:
    """Everything about the run: verdict, checks, load settings, model, figures and every request."""
    failures = [check.message for check in checks if not check.passed]
    return {
        "id": plan.run_id,
        "object": "gate.run",
        "trigger": trigger,
        "passed": not failures,
        "failures": failures,
        "checks": [check.as_json() for check in checks],
        "profile": plan.profile,
        "slo": slo.model_dump(),
        "load": {
            **load,
            "url": plan.base_url,
            "request_timeout_s": plan.request_timeout_s,
            "suite": [{"name": p.name, "max_tokens": p.max_tokens} for p in plan.prompts],
        },
        "model": model_tags(result),
        "started_at": round(result.started_at, 3),
        "finished_at": round(result.started_at + result.run_s, 3),
        "figures": figures,
        "samples": [sample.as_json() for sample in result.samples],
    }


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else format_number(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def report_markdown(report: dict[str, Any], plot_link: str) -> str:
    """The report as Markdown: verdict, checks, latency, throughput, per-prompt figures, errors, plot."""
    figures = report["figures"]
    lines = [
        *_verdict_lines(report),
        *_latency_lines(figures),
        *_throughput_lines(figures),
        *_prompt_lines(figures, report["load"]["suite"]),
    ]
    if figures["errors"]:
        lines += ["", "## Errors", "", "| error | requests |", "|---|---:|"]
        lines += [f"| {kind} | {count} |" for kind, count in figures["errors"].items()]
    lines += ["", f"![Latency over time]({plot_link})", ""]
    return "\n".join(lines)


def _verdict_lines(report: dict[str, Any]) -> list[str]:
    """Title, what was run against which model, and the table of SLO checks."""
    load, model = report["load"], report["model"]
    served_by = (
        f"{model['model_id']} (engine {model['engine']}, {model['model_size']}, {model['gpu_mode']})"
        if model
        else "unknown (no request finished)"
    )
    lines = [
        f"# Release gate {'PASSED' if report['passed'] else 'FAILED'}: "
        f"`{report['slo']['name']}` SLO on `{report['profile']}`",
        "",
        f"- run `{report['id']}` ({report['trigger']}), started {_utc(report['started_at'])}",
        f"- load: {report['figures']['requests']} requests over {format_number(load['duration_s'])} s at "
        f"{format_number(load['rate'])} req/s ({load['arrivals']} arrivals) against {load['url']}",
        f"- model: {served_by}",
        "",
        "| check | measured | threshold | result |",
        "|---|---:|---:|---|",
    ]
    for check in report["checks"]:
        value = "n/a" if check["value"] is None else format_number(check["value"])
        limit = f"{check['comparison']} {format_number(check['limit'])}"
        lines.append(
            f"| {check['metric']} | {value} | {limit} | {'pass' if check['passed'] else '**FAIL**'} |"
        )
    if report["failures"]:
        lines += ["", "Failed thresholds:", *(f"- {failure}" for failure in report["failures"])]
    return lines


def _latency_lines(figures: dict[str, Any]) -> list[str]:
    lines = ["", "## Latency (seconds, successful requests, as the client saw them)", ""]
    lines += ["| | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|"]
    for label, key in (("time to first token", "ttft_s"), ("end to end", "e2e_s")):
        row = figures[key]
        cells = " | ".join(_seconds(row[name]) for name in ("p50", "p95", "p99", "max"))
        lines.append(f"| {label} | {cells} |")
    return lines


def _throughput_lines(figures: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Throughput",
        "",
        f"- requests: {figures['requests']} sent, {figures['succeeded']} succeeded, {figures['failed']} "
        f"failed (error rate {_percent(figures['error_rate'])})",
        f"- achieved {format_number(figures['achieved_qps'])} req/s over the "
        f"{format_number(figures['window_s'])} s load window "
        f"(offered {format_number(figures['offered_qps'])})",
        f"- {figures['completion_tokens']} completion tokens, {_seconds(figures['tokens_per_s'])} tokens/s "
        f"over the whole run ({format_number(figures['run_s'])} s); "
        f"p50 {_seconds(figures['stream_tokens_per_s']['p50'])} tokens/s streamed per request",
    ]


def _prompt_lines(figures: dict[str, Any], suite: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## By prompt",
        "",
        "| prompt | max_tokens | requests | succeeded | p50 TTFT (s) | p50 E2E (s) | mean tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    max_tokens = {prompt["name"]: prompt["max_tokens"] for prompt in suite}
    for name, row in figures["by_prompt"].items():
        mean_tokens = "n/a" if row["mean_completion_tokens"] is None else row["mean_completion_tokens"]
        lines.append(
            f"| {name} | {max_tokens.get(name, '')} | {row['requests']} | {row['succeeded']} "
            f"| {_seconds(row['p50_ttft_s'])} | {_seconds(row['p50_e2e_s'])} | {mean_tokens} |"
        )
    return lines
