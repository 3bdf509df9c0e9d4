"""Start the Celery worker of one profile: its queue, a threads pool as wide as its batch, its name."""

from __future__ import annotations

import argparse
import os
import sys

from app.config import resolve_settings
from app.profiles import load_profiles


def worker_command(profile: str, max_batch: int, loglevel: str) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "make_celery", "worker",
        "-Q", profile, "-P", "threads", "-c", str(max_batch), "-n", f"{profile}@%h",
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Replace this process with `celery worker` for the profile, GPTOSS_PROFILE set for it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("profile")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    profiles = load_profiles(resolve_settings()["PROFILES"])
    if args.profile not in profiles:
        parser.error(f"unknown profile {args.profile!r}; the profiles file has {sorted(profiles)}")
    os.environ["GPTOSS_PROFILE"] = args.profile
    command = worker_command(args.profile, profiles[args.profile].max_batch, args.loglevel)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
