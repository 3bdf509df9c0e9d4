"""Batch API settings, read from the app config when a request or task needs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The config keys (env GPTOSS_<KEY>, through app/settings.py DEFAULTS) and their defaults.
BATCH_DEFAULTS: dict[str, Any] = {
    "MAX_UPLOAD_BYTES": 200 * 1024 * 1024,  # POST /v1/files answers 413 above this (OpenAI's limit)
    "MAX_BATCH_LINES": 50_000,  # requests per batch input file (OpenAI's limit)
    "BATCH_INSERT_CHUNK": 1000,  # job rows per insert transaction (and per enqueue round)
    "BATCH_CHECK_INTERVAL_S": 1.0,  # how often a running batch is checked for its end or expiry
}

MAX_LINE_BYTES = 1024 * 1024  # one request line; longer lines are reported, not read into memory


@dataclass(frozen=True)
class BatchSettings:
    files_dir: Path  # DATA_DIR/files
    max_upload_bytes: int
    max_batch_lines: int
    insert_chunk: int
    check_interval_s: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BatchSettings:
        """The settings of an app config; keys it lacks take BATCH_DEFAULTS."""

        def get(key: str) -> Any:
            return type(BATCH_DEFAULTS[key])(config.get(key, BATCH_DEFAULTS[key]))

        return cls(
            files_dir=Path(config["DATA_DIR"]).resolve() / "files",
            max_upload_bytes=get("MAX_UPLOAD_BYTES"),
            max_batch_lines=get("MAX_BATCH_LINES"),
            insert_chunk=get("BATCH_INSERT_CHUNK"),
            check_interval_s=get("BATCH_CHECK_INTERVAL_S"),
        )
