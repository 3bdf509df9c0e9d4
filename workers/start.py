"""Start the Celery worker of one profile: its lanes' queues, a threads pool as wide as its batch."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from app.profiles import load_profiles
from app.queue import profile_queues
from app.settings import SettingsError, load_settings
from engine.preflight import PreflightError
from engine.startup import check_profile


def worker_command(profile: str, max_batch: int, loglevel: str, name: str | None = None) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "make_celery", "worker",
        "-Q", ",".join(profile_queues(profile)), "-P", "threads", "-c", str(max_batch),
        "-n", name or f"{profile}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def port_taken(host: str, port: int) -> str | None:
    """Why `port` cannot be listened on at `host`, or None when it can (or is 0: not used)."""
    if port == 0:
        return None
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds it
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: list[str] | None = None) -> None:
    """Replace this process with `celery worker` for the profile, GPTOSS_PROFILE set for it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("profile")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--name", help="the worker's name (default <profile>@<host>; unique per worker)")
    args = parser.parse_args(argv)
    try:  # PROFILE: checked as the worker's own (with GPTOSS_MULTI_HOST=1, its metrics host)
        settings = load_settings({"PROFILE": args.profile})
    except SettingsError as exc:
        parser.exit(2, f"workers.start: {exc}\n")
    profiles = load_profiles(settings.profiles_path)
    if args.profile not in profiles:
        parser.error(f"unknown profile {args.profile!r}; the profiles file has {sorted(profiles)}")
    observability = settings.observability
    port = observability.metrics_port_for(args.profile, list(profiles))
    problem = port_taken(observability.worker_metrics_host, port)
    if problem is not None:
        parser.exit(
            2,
            f"workers.start: {args.profile}'s metrics port {observability.worker_metrics_host}:{port} "
            f"cannot be used ({problem}); set GPTOSS_WORKER_METRICS_PORT to a free base port (each "
            "profile adds its index) or 0 for no worker metrics\n",
        )
    try:  # before Celery: a profile that cannot work here never takes a job nor reports ready
        plan = check_profile(profiles[args.profile].preflight_spec(settings.profiles_path))
    except PreflightError as exc:
        parser.exit(1, f"workers.start: profile {args.profile} cannot start on this machine: {exc}\n")
    print(f"workers.start: {args.profile} passed its start check: {plan}", file=sys.stderr, flush=True)
    os.environ["GPTOSS_PROFILE"] = args.profile
    command = worker_command(args.profile, profiles[args.profile].max_batch, args.loglevel, args.name)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
