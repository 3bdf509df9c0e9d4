"""How the `gptoss` commands reach the API: its URL, the key they send, and its errors as exit messages."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def base_url(args: argparse.Namespace) -> str:
    """--url, else GPTOSS_URL, else OPENAI_BASE_URL (whose /v1 is the API's own), else the default."""
    url = getattr(args, "url", None) or os.environ.get("GPTOSS_URL")
    if not url and os.environ.get("OPENAI_BASE_URL"):
        url = os.environ["OPENAI_BASE_URL"].rstrip("/").removesuffix("/v1")
    return url or DEFAULT_URL


def run_with_client(args: argparse.Namespace, timeout_s: float, run: Callable[[httpx.Client], int]) -> int:
    """Call `run` with a client of the API (see base_url); exit with a message when it is away."""
    url = base_url(args)
    try:
        # where the API requires keys (GPTOSS_API_KEYS); the openai SDK's variable works too
        key = os.environ.get("GPTOSS_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as client:
            return run(client)
    except httpx.TransportError as exc:
        raise SystemExit(f"gptoss: cannot reach {url}: {exc}") from exc


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
