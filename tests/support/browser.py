"""A real browser for the console's tests: Playwright driving Debian's chromium (`make install` puts it
there with apt-get where it can). Skipped, saying why, where either is missing; under CI=true a missing
browser fails the run instead, so the console's browser tests cannot silently stop running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def unavailable(reason: str) -> None:
    """Skip (or, under CI=true, fail) the tests that need the browser."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs the console's browser tests: {reason}")
    pytest.skip(reason)


def launch(playwright: Any) -> Any:
    """Chromium headless; --no-sandbox because its sandbox refuses to start as root (containers, CI)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for a test module (each test opens its own context: its own cookies)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed ({exc}); `make install` installs it")
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: `apt-get install chromium` (`make install` does, as root)")
    with sync_playwright() as playwright:
        try:
            running = launch(playwright)
        except Error as exc:
            unavailable(f"{CHROMIUM} did not start under Playwright: {exc}")
        try:
            yield running
        finally:
            running.close()
