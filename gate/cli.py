"""`gptoss gate`: run the release gate against a live API; exit 1 when the SLO is not met (for CI/cron)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from gate.driver import api_error_message, auth_headers
from gate.runner import DEFAULT_REQUEST_TIMEOUT_S, GateOptions, GateRun, run_gate
from gate.slo import SloFileError, find_slo

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_gate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `gate` subcommand to a parser's subparsers; args.func(args) runs it."""
    gate = subparsers.add_parser(
        "gate",
        help="run the release gate (load at a target rate, SLO checks, report); exit 1 on failure",
        description=run_gate_command.__doc__,
        epilog="Where the API requires keys, set GPTOSS_API_KEY.",
    )
    gate.add_argument("--profile", default="latency_first", help="profile to drive (default: %(default)s)")
    gate.add_argument("--slo", default="personal", help="SLO name: personal, enterprise or one of --slo-file")
    gate.add_argument("--slo-file", help="a TOML file of extra SLOs (env GPTOSS_GATE_SLO_FILE)")
    gate.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    gate.add_argument("--rate", type=float, help="requests per second (default: the SLO's min_qps)")
    gate.add_argument(
        "--arrivals",
        choices=["poisson", "fixed"],
        default="poisson",
        help="poisson (default) or fixed spacing",
    )
    gate.add_argument("--seed", type=int, help="arrivals seed (default: random; the report records it)")
    gate.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help=f"seconds after which a request counts as an error (default {DEFAULT_REQUEST_TIMEOUT_S:.0f})",
    )
    # SUPPRESS: a `gptoss --url U gate` given before the subcommand is not overwritten by a default
    gate.add_argument("--url", default=argparse.SUPPRESS, help=f"API base URL (GPTOSS_URL, {DEFAULT_URL})")
    gate.add_argument(
        "--out-dir", type=Path, default=Path("gate-reports"),
        help="write <run id>.json, .md and .png here (default ./gate-reports)",
    )  # fmt: skip
    gate.add_argument("--no-report", action="store_true", help="write no report files")
    gate.add_argument("--no-store", action="store_true", help="do not store the run in the API's database")
    gate.set_defaults(func=run_gate_command)
    return gate


def run_gate_command(args: argparse.Namespace) -> int:
    """Drive the API at the SLO's rate for --duration seconds, print the verdict, store the report."""
    url = (getattr(args, "url", None) or os.environ.get("GPTOSS_URL") or DEFAULT_URL).rstrip("/")
    api_key = os.environ.get("GPTOSS_API_KEY") or None
    try:
        slo = find_slo(args.slo, args.slo_file or os.environ.get("GPTOSS_GATE_SLO_FILE"))
    except SloFileError as exc:
        print(f"gptoss gate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.duration <= 0 or (slo.min_qps if args.rate is None else args.rate) <= 0:
        print("gptoss gate: --duration and --rate (or the SLO's min_qps) must be positive", file=sys.stderr)
        return EXIT_USAGE
    problem = api_problem(url, api_key)
    if problem is not None:
        print(f"gptoss gate: FAILED: {problem}", file=sys.stderr)
        return EXIT_FAILED
    options = GateOptions(
        url=url,
        profile=args.profile,
        slo=slo,
        duration_s=args.duration,
        rate=args.rate,
        arrivals=args.arrivals,
        seed=args.seed,
        request_timeout_s=args.request_timeout,
        api_key=api_key,
    )
    run = run_gate(options)
    print(verdict_text(run))
    if not getattr(args, "no_report", False):
        print(f"report: {write_report_files(run, args.out_dir)}")
    if not args.no_store:
        store_run(url, run, api_key)
    return EXIT_PASSED if run.passed else EXIT_FAILED


def api_problem(url: str, api_key: str | None) -> str | None:
    """Why the API cannot be gated (unreachable, or refusing this client), or None when it answers."""
    try:
        response = httpx.get(f"{url}/v1/profiles", headers=auth_headers(api_key), timeout=10.0)
    except httpx.HTTPError as exc:
        return f"cannot reach the API at {url}: {exc}"
    if response.status_code != 200:
        return f"the API at {url} answers HTTP {response.status_code}: {api_error_message(response)}"
    return None


def verdict_text(run: GateRun) -> str:
    """The verdict, then one line per threshold: "FAIL  p95_ttft_s 12.3 > 10.0 (+23%)"."""
    report, figures = run.report, run.report["figures"]
    load = report["load"]
    lines = [
        f"gate {run.id}: {'PASSED' if run.passed else 'FAILED'} - {report['slo']['name']} SLO on "
        f"{report['profile']} ({figures['requests']} requests over {load['duration_s']:g} s at "
        f"{load['rate']:g} req/s, {figures['failed']} failed)"
    ]
    lines += [f"  {'ok  ' if check['passed'] else 'FAIL'}  {check['message']}" for check in report["checks"]]
    return "\n".join(lines)


def write_report_files(run: GateRun, out_dir: Path) -> Path:
    """<id>.json, <id>.md (linking <id>.png) and <id>.png in out_dir; returns the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{run.id}.json").write_text(json.dumps(run.report, indent=2) + "\n")
    (out_dir / f"{run.id}.png").write_bytes(run.plot_png)
    markdown = out_dir / f"{run.id}.md"
    markdown.write_text(run.markdown(plot_link=f"{run.id}.png"))
    return markdown


def store_run(url: str, run: GateRun, api_key: str | None) -> None:
    """POST the run to the API (GET /v1/gate/runs lists it); a failure is reported, not fatal."""
    body = {
        "report": run.report,
        "markdown": run.markdown(),
        "plot_png_base64": base64.b64encode(run.plot_png).decode(),
    }
    try:
        response = httpx.post(f"{url}/v1/gate/runs", json=body, headers=auth_headers(api_key), timeout=30.0)
    except httpx.HTTPError as exc:
        print(f"gptoss gate: could not store the run: {exc}", file=sys.stderr)
        return
    if response.status_code != 201:
        print(f"gptoss gate: could not store the run: HTTP {response.status_code} {response.text[:200]}")
        return
    print(f"stored: {url}/v1/gate/runs/{run.id}")


def main(argv: list[str] | None = None) -> int:
    """`python -m gate gate ...`: the same command as `gptoss gate ...`."""
    parser = argparse.ArgumentParser(prog="gptoss", description="Run the gptoss-batch release gate.")
    parser.add_argument("--url", help=f"API base URL (env GPTOSS_URL, default {DEFAULT_URL})")
    add_gate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
