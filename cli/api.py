"""How the `gptoss` commands reach the API: its URL, the key they send, and its errors as exit messages."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def run_with_client(args: argparse.Namespace, timeout_s: float, run: Callable[[httpx.Client], int]) -> int:
    """Call `run` with a client of the API (--url, else GPTOSS_URL); exit with a message when it is away."""
    base_url = getattr(args, "url", None) or os.environ.get("GPTOSS_URL") or DEFAULT_URL
    try:
        key = os.environ.get("GPTOSS_API_KEY")  # where the API requires keys (GPTOSS_API_KEYS)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
            return run(client)
    except httpx.TransportError as exc:
        raise SystemExit(f"gptoss: cannot reach {base_url}: {exc}") from exc


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body, or exit with the API's error message."""
    try:
        body = response.json()
    except ValueError:
        raise SystemExit(f"gptoss: HTTP {response.status_code}: {response.text[:200]}") from None
    if response.is_error:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise SystemExit(f"gptoss: HTTP {response.status_code}: {error.get('message', body)}")
    return body
