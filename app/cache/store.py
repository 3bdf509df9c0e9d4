"""The response cache: answers of deterministic requests, keyed by the model and the exact request.

Key: sha256 of the model that produced the answer (engine, model_id and a revision of its weights
that its worker announces, see engine/revision.py) and the request's generation inputs: everything
that changes the rendered prompt (messages or prompt, reasoning_effort, current_date) and the
sampling (max_tokens, temperature, top_p, seed, stop). The submit path stores these filled in with
the profile's defaults (app/jobs/defaults.py), so a request is cached when it runs deterministically:
temperature 0 (asked for, or the profile's default) or a fixed seed. A request opts out with
`"cache": false` in the job body, metadata {"cache": "false"} (chat completions and batch lines
too), or the header `Cache-Control: no-cache` / `no-store`; then it is neither served from nor
stored in the cache. Release-gate traffic always bypasses it (the gate measures the engine).

Workers store an answer when a cacheable job succeeds with finish_reason stop or length. Entries
live in Redis: one key per entry with a TTL (CACHE_TTL_S) and a sorted set by store time that
keeps at most CACHE_MAX_ENTRIES (the oldest go first). CACHE_MAX_ENTRIES = 0 turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from app.models import is_gate_request
from app.settings import CacheSettings

ENTRY_KEY_PREFIX = "gptoss:cache:entry:"
INDEX_KEY = "gptoss:cache:index"  # sorted set: entry key -> unix time it was stored
REVISION_KEY_PREFIX = "gptoss:served-revision:"
PROMPT_FIELDS = ("messages", "prompt", "reasoning_effort", "current_date")  # what the prompt renders from
KEY_FIELDS = (*PROMPT_FIELDS, "max_tokens", "temperature", "top_p", "seed", "stop")
OPT_OUT_VALUES = frozenset({"false", "no", "off", "0"})
CACHEABLE_FINISH_REASONS = frozenset({"stop", "length"})

# Store an entry, drop index members older than the TTL, then evict the oldest beyond the limit.
_PUT_SCRIPT = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[3]))
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if excess > 0 then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    redis.call('DEL', ARGV[6] .. member)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
return excess
"""


@dataclass(frozen=True)
class ModelIdentity:
    """The model an answer comes from: its engine, id and weights revision."""

    engine: str
    model_id: str
    revision: str


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: what a cache hit copies into the new job."""

    job_id: str  # the job that produced it
    content: str
    reasoning: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    tags: dict[str, str]  # the five tags of the model that ran the original job
    quality: dict[str, Any]  # its quality_* columns (app/quality.py)
    reasoning_tokens: int | None = None  # entries stored before it was counted have none


def is_deterministic(request: Mapping[str, Any]) -> bool:
    """Greedy decoding (temperature 0) or a fixed seed gives the same answer every time.

    `request` is a stored one, defaults filled in; rows stored before that had temperature 0 by default.
    """
    return float(request.get("temperature", 0.0)) == 0.0 or request.get("seed") is not None


def opted_out(request: Mapping[str, Any]) -> bool:
    """`cache: false` in the body, metadata cache=false, or release-gate traffic."""
    metadata = request.get("metadata") or {}
    return (
        request.get("cache") is False
        or str(metadata.get("cache", "")).lower() in OPT_OUT_VALUES
        or is_gate_request(dict(request))
    )


def is_cacheable(request: Mapping[str, Any]) -> bool:
    """Whether this stored (validated) job request may be served from and stored in the cache."""
    # an answer to a request with tools may be a call, which the cache does not keep
    return is_deterministic(request) and not opted_out(request) and not request.get("tools")


def no_cache_header(cache_control: str | None) -> bool:
    """`Cache-Control: no-cache` or `no-store` opts a request out."""
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    return bool(directives & {"no-cache", "no-store"})


def cache_key(model: ModelIdentity, request: Mapping[str, Any]) -> str:
    """The entry's key: the model and the request's generation inputs, canonically encoded."""
    inputs = {name: request.get(name) for name in KEY_FIELDS}
    inputs["temperature"] = float(request.get("temperature", 0.0))
    inputs["top_p"] = float(request.get("top_p", 1.0))
    material = {"model": asdict(model), "request": inputs}
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Cached answers in Redis, bounded in number and age."""

    def __init__(self, client: redis.Redis, settings: CacheSettings) -> None:
        self.client = client
        self.settings = settings
        self._put = client.register_script(_PUT_SCRIPT)

    def get(self, key: str) -> CachedAnswer | None:
        if not self.settings.enabled:
            return None
        raw: Any = self.client.get(ENTRY_KEY_PREFIX + key)
        return CachedAnswer(**json.loads(raw)) if raw is not None else None

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store (or refresh) an answer; the oldest entries beyond max_entries are evicted."""
        if not self.settings.enabled:
            return
        value = json.dumps(asdict(answer), separators=(",", ":"))
        keys = [INDEX_KEY, ENTRY_KEY_PREFIX + key]
        args: list[str | int | float] = [
            key, value, self.settings.ttl_s, time.time(), self.settings.max_entries, ENTRY_KEY_PREFIX,
        ]  # fmt: skip
        self._put(keys=keys, args=args)

    def size(self) -> int:
        """Entries in the index (expired ones leave it at the next store)."""
        return int(self.client.zcard(INDEX_KEY))  # type: ignore[arg-type]


def announce_model_revision(client: redis.Redis, profile: str, revision: str) -> None:
    """A worker says which revision of its model serves `profile` (beside app/ops/served_models.py)."""
    client.set(f"{REVISION_KEY_PREFIX}{profile}", revision)


def served_revision(client: redis.Redis, profile: str) -> str | None:
    value: Any = client.get(f"{REVISION_KEY_PREFIX}{profile}")
    return value.decode() if isinstance(value, bytes) else value
