"""`gptoss`: submit jobs, read their status and cancel them over the HTTP API (GPTOSS_URL); `keys`
manages the API keys in the server's database, `storage` copies files' bytes into it."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import sys
import time
from typing import Any

import httpx

from cli.api import DEFAULT_URL, checked, run_with_client
from cli.batch import add_batch_parser
from cli.keys import add_keys_parser
from cli.sse_client import print_job_stream
from cli.storage import add_storage_parser
from gate.cli import add_gate_parser

FINISHED = {"succeeded", "failed", "cancelled"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss", description="Talk to a gptoss-batch API.")
    parser.add_argument(
        "--url", help=f"API base URL (env GPTOSS_URL, else OPENAI_BASE_URL, default {DEFAULT_URL})"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="queue a job; prints its id (or its answer with --wait)")
    submit.add_argument(
        "prompt", nargs="?", help="the prompt text; - (or nothing, with input piped in) reads it from stdin"
    )
    submit.add_argument("--messages-file", help="a JSON file with a list of {role, content} messages")
    submit.add_argument("--system", help="a system message put before the prompt")
    submit.add_argument("--profile", help="latency_first or quality_first (default: the first profile)")
    submit.add_argument("--max-tokens", type=int)
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--reasoning-effort", choices=["low", "medium", "high"])
    submit.add_argument("--tools", help="a JSON file with a list of function tools (OpenAI's chat shape)")
    submit.add_argument("--tool-choice", help="auto, none, required, or the name of one function")
    submit.add_argument("--wait", action="store_true", help="poll until the job ends, then print its content")
    submit.add_argument("--stream", action="store_true", help="print the answer's tokens as they arrive")
    submit.add_argument("--show-reasoning", action="store_true", help="--stream: reasoning to stderr")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")

    for name, text in (("status", "print a job as JSON"), ("cancel", "cancel a queued or running job")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id")
    add_batch_parser(commands)
    add_keys_parser(commands)
    add_storage_parser(commands)
    add_gate_parser(commands)
    return parser


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body from the submit arguments."""
    if args.messages_file:
        with open(args.messages_file) as file:
            body: dict[str, Any] = {"messages": json.load(file)}
    elif args.system:
        body = {"messages": [{"role": "user", "content": prompt_text(args.prompt)}]}
    else:
        body = {"prompt": prompt_text(args.prompt)}
    if args.system:
        body["messages"] = [{"role": "system", "content": args.system}, *body["messages"]]
    options = {
        "profile": args.profile,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "reasoning_effort": args.reasoning_effort,
        "tools": read_tools(args.tools) if args.tools else None,
        "tool_choice": tool_choice(args.tool_choice),
    }
    return body | {key: value for key, value in options.items() if value is not None}


def prompt_text(prompt: str | None) -> str:
    """The prompt argument, or stdin's text for `-` (or no argument with input piped in)."""
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        prompt = sys.stdin.read()
    if not prompt or not prompt.strip():
        raise SystemExit("gptoss submit: give a prompt (an argument, or on stdin) or --messages-file")
    return prompt


def package_version() -> str:
    try:
        return importlib.metadata.version("gptoss-batch")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def read_tools(path: str) -> list[dict[str, Any]]:
    """Function tools from a JSON file, in OpenAI's chat shape ({"type", "function": {...}}) or flat."""
    with open(path) as file:
        tools = json.load(file)
    if not isinstance(tools, list):
        raise SystemExit(f"gptoss submit: {path} must hold a JSON list of tools")
    return [{"type": "function", **tool["function"]} if "function" in tool else tool for tool in tools]


def tool_choice(choice: str | None) -> str | dict[str, str] | None:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}


def wait_for(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job until it ends (fast at first, then every half second)."""
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        job = checked(client.get(f"/v1/jobs/{job_id}"))
        if job["status"] in FINISHED:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"gptoss: job {job_id} still {job['status']} after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def main(argv: list[str] | None = None) -> int:
    """Run one gptoss command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("batch", "gate", "keys", "storage"):
            return int(args.func(args))
        return run_with_client(args, 30.0, lambda client: _run(client, args))
    except BrokenPipeError:  # `gptoss status ID | head`: the reader left, which is no error of ours
        with contextlib.suppress(OSError, ValueError):  # so the flush at exit is quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.command == "status":
        print(json.dumps(checked(client.get(f"/v1/jobs/{args.job_id}")), indent=2))
        return 0
    if args.command == "cancel":
        job = checked(client.post(f"/v1/jobs/{args.job_id}/cancel"))
        print(f"{job['id']} {job['status']}")
        return 0
    job = checked(client.post("/v1/jobs", json=job_body(args)))
    if args.stream:
        return print_job_stream(client, job["id"], show_reasoning=args.show_reasoning)
    if not args.wait:
        print(job["id"])
        return 0
    job = wait_for(client, job["id"], args.timeout)
    if job["status"] != "succeeded":
        detail = (job.get("error") or {}).get("message") or job["status"]
        print(f"job {job['id']} {job['status']}: {detail}", file=sys.stderr)
        return 1
    for call in job["result"].get("tool_calls") or ():
        problem = f"  # not run as written: {call['error']}" if call.get("error") else ""
        print(f"tool call {call['id']}: {call['name']}({call['arguments']}){problem}")
    if job["result"]["content"] or not job["result"].get("tool_calls"):
        print(job["result"]["content"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
