"""`gptoss batch run FILE`: upload a prompt file as a batch, show its progress, download the answers;
`batch wait|status|cancel|list` for batches already made (`run --detach`, or Ctrl-C, leaves one running)."""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any, cast

import httpx

from cli.api import checked, run_with_client
from cli.prompt_lines import PromptFileError, RequestDefaults, answer_line, convert_prompt_file

FINAL_STATUSES = {"completed", "failed", "cancelled", "expired"}


def add_batch_parser(subparsers: Any) -> None:
    """Add `batch run|wait|status|cancel|list` to the gptoss command parser."""
    batch = subparsers.add_parser("batch", help="run a file of prompts through the Batch API")
    commands = batch.add_subparsers(dest="batch_command", required=True)
    run = commands.add_parser("run", help="upload, follow with a progress bar, download the answers")
    run.add_argument(
        "input", help='one prompt per line, {"prompt"|"messages": ...} JSONL, or Batch API lines'
    )
    run.add_argument(
        "--profile", help="the profile (or model id) of every request (default: the first profile)"
    )
    run.add_argument("--system", help="a system message put before each prompt")
    run.add_argument("--max-tokens", type=int)
    run.add_argument("--temperature", type=float)
    run.add_argument("--reasoning-effort", choices=["low", "medium", "high"])
    run.add_argument("--detach", action="store_true", help="create the batch, print its id and return")
    wait = commands.add_parser("wait", help="follow a batch (after run --detach or Ctrl-C), then download")
    wait.add_argument("batch_id")
    for command in (run, wait):
        command.add_argument(
            "-o", "--output", default="-", help="results JSONL, in input order (default: stdout)"
        )
        command.add_argument(
            "--poll", type=float, default=1.0, help="seconds between progress checks (default 1)"
        )
        command.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    run.set_defaults(func=batch_run)
    wait.set_defaults(func=batch_wait)
    for name, text, func in (
        ("status", "print a batch as JSON", batch_status),
        ("cancel", "cancel a batch; finished answers are kept", batch_cancel),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("batch_id")
        command.set_defaults(func=func)
    listing = commands.add_parser("list", help="the newest batches, one a line")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=batch_list)


def batch_run(args: argparse.Namespace) -> int:
    """Run the file as one batch; exit status 0 when every request succeeded, 1 otherwise."""
    return run_with_client(args, 120.0, lambda client: _run(client, args))


def batch_wait(args: argparse.Namespace) -> int:
    """Follow a batch already created to its end, then write its results in input order."""

    def wait(client: httpx.Client) -> int:
        batch = checked(client.get(f"/v1/batches/{args.batch_id}"))
        return _follow_and_write(client, batch, input_order(client, batch["input_file_id"]), None, args)

    return run_with_client(args, 120.0, wait)


def batch_status(args: argparse.Namespace) -> int:
    return run_with_client(
        args, 30.0, lambda client: _print(checked(client.get(f"/v1/batches/{args.batch_id}")))
    )


def batch_cancel(args: argparse.Namespace) -> int:
    def cancel(client: httpx.Client) -> int:
        batch = checked(client.post(f"/v1/batches/{args.batch_id}/cancel"))
        print(f"{batch['id']} {batch['status']}")
        return 0

    return run_with_client(args, 30.0, cancel)


def batch_list(args: argparse.Namespace) -> int:
    def listing(client: httpx.Client) -> int:
        for batch in checked(client.get("/v1/batches", params={"limit": args.limit}))["data"]:
            counts = batch["request_counts"]
            done = counts["completed"] + counts["failed"]
            print(f"{batch['id']}  {batch['status']:<11} {done}/{counts['total']}  {batch['endpoint']}")
        return 0

    return run_with_client(args, 30.0, listing)


def _print(document: dict[str, Any]) -> int:
    print(json.dumps(document, indent=2))
    return 0


def input_order(client: httpx.Client, file_id: str) -> dict[str, int]:
    """custom_id -> position in the batch's input file (as stored on the server)."""
    order: dict[str, int] = {}
    with client.stream("GET", f"/v1/files/{file_id}/content") as response:
        response.raise_for_status()
        for text in response.iter_lines():
            if text.strip():
                order.setdefault(str(json.loads(text).get("custom_id")), len(order))
    return order


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    model = args.profile or checked(client.get("/v1/profiles"))["data"][0]["id"]
    options = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "reasoning_effort": args.reasoning_effort,
    }
    defaults = RequestDefaults(model, args.system, {k: v for k, v in options.items() if v is not None})
    order: dict[str, int] = {}  # custom_id -> position, to write results in input order
    input_lines: list[int] = []  # converted line -> prompt file line, to report errors against the input
    with tempfile.TemporaryFile("w+", encoding="utf-8") as converted:
        try:
            with open(args.input, encoding="utf-8-sig") as source:
                for line in convert_prompt_file(source, converted, defaults):
                    order.setdefault(line.custom_id, len(order))
                    input_lines.append(line.input_line)
        except (PromptFileError, UnicodeDecodeError) as exc:
            raise SystemExit(f"gptoss batch run: {args.input}: {exc}") from exc
        converted.seek(0)
        upload = {
            "file": (
                os.path.basename(args.input) + ".batch.jsonl",
                cast(IO[bytes], converted.buffer),
                "application/jsonl",
            )
        }
        file = checked(client.post("/v1/files", data={"purpose": "batch"}, files=upload))
    batch = checked(client.post("/v1/batches", json={
        "input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h",
    }))  # fmt: skip
    print(f"gptoss: {batch['id']}: {len(input_lines)} requests", file=sys.stderr)
    if getattr(args, "detach", False):
        print(batch["id"])
        print(f"gptoss: detached; come back with: gptoss batch wait {batch['id']} -o FILE", file=sys.stderr)
        return 0
    return _follow_and_write(client, batch, order, input_lines, args)


def _follow_and_write(
    client: httpx.Client,
    batch: dict[str, Any],
    order: dict[str, int],
    input_lines: list[int] | None,
    args: argparse.Namespace,
) -> int:
    """Follow the batch to its end (Ctrl-C detaches: the batch runs on), then write its results."""
    try:
        batch = follow(client, batch["id"], args.poll, Progress(sys.stderr, enabled=not args.no_progress))
    except KeyboardInterrupt:
        print(
            f"\ngptoss: detached from {batch['id']}, which runs on; come back with "
            f"`gptoss batch wait {batch['id']} -o FILE`, or stop it with `gptoss batch cancel {batch['id']}`",
            file=sys.stderr,
        )
        return 130
    source = getattr(args, "input", None) or batch["input_file_id"]
    if batch["status"] == "failed":
        for error in (batch.get("errors") or {}).get("data", []):
            line = error.get("line")
            if line and input_lines is not None:
                line = input_lines[line - 1]
            print(f"gptoss: {source}: {f'line {line}: ' if line else ''}{error['message']}", file=sys.stderr)
        return 1
    write_results(client, batch, order, args.output)
    counts = batch["request_counts"]
    summary = f"{counts['completed']} completed, {counts['failed']} failed of {counts['total']}"
    print(f"gptoss: {batch['id']} {batch['status']}: {summary}", file=sys.stderr)
    return 0 if batch["status"] == "completed" and counts["failed"] == 0 else 1


def follow(client: httpx.Client, batch_id: str, poll: float, progress: Progress) -> dict[str, Any]:
    """Poll the batch until it reaches a final status, drawing progress on the way."""
    while True:
        batch = checked(client.get(f"/v1/batches/{batch_id}"))
        progress.update(batch)
        if batch["status"] in FINAL_STATUSES:
            progress.close()
            return batch
        time.sleep(poll)


class Progress:
    """One status line: a bar, done/failed/total, rate and ETA; redrawn with \\r on a terminal."""

    def __init__(self, stream: IO[str], enabled: bool = True, width: int = 30) -> None:
        self.stream, self.enabled, self.width = stream, enabled, width
        self.interactive = stream.isatty()
        self.last_printed = 0.0
        self.drawn = False

    def line(self, batch: dict[str, Any], now: float) -> str:
        """The status line at unix time `now`: the rate is the batch's own, since it went in progress."""
        counts = batch["request_counts"]
        total, done = counts["total"], counts["completed"] + counts["failed"]
        filled = int(self.width * done / total) if total else 0
        text = f"{batch['status']:<11} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        text += f" ({counts['failed']} failed)" if counts["failed"] else ""
        started = batch.get("in_progress_at")
        if started is not None and batch["status"] == "in_progress":
            elapsed = max(now - started, 1.0)
            rate = done / elapsed
            eta = f"ETA {_duration((total - done) / rate)}" if done else "ETA --"
            text += f" {rate:.1f} req/s {eta} ({_duration(elapsed)} in)"
        return text

    def update(self, batch: dict[str, Any]) -> None:
        now = time.time()
        text = self.line(batch, now)
        if not self.enabled:
            return
        if self.interactive:
            self.stream.write("\r" + text.ljust(79))
            self.drawn = True
        elif now - self.last_printed >= 10 or batch["status"] in FINAL_STATUSES:
            self.stream.write(text + "\n")  # a log, not a terminal: a line now and then
            self.last_printed = now
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def result_lines(
    client: httpx.Client, file_id: str | None, order: dict[str, int]
) -> Iterator[tuple[int, str, dict]]:
    """(input position, custom_id, answer line) of one result file, streamed."""
    if file_id is None:
        return
    with client.stream("GET", f"/v1/files/{file_id}/content") as response:
        response.raise_for_status()
        for text in response.iter_lines():
            if text:
                result = json.loads(text)
                yield order.get(result["custom_id"], len(order)), result["custom_id"], answer_line(result)


def write_results(client: httpx.Client, batch: dict[str, Any], order: dict[str, int], output: str) -> None:
    """Merge the output and error files (each in input order) into one results file in input order."""
    merged = heapq.merge(
        result_lines(client, batch.get("output_file_id"), order),
        result_lines(client, batch.get("error_file_id"), order),
        key=lambda item: item[0],
    )
    with contextlib.nullcontext(sys.stdout) if output == "-" else open(output, "w", encoding="utf-8") as sink:
        for _, _, answer in merged:
            sink.write(json.dumps(answer, ensure_ascii=False) + "\n")
