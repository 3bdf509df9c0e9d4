"""A short revision of the weights a worker serves, so cached answers never outlive a model change.

Hashing gigabytes of weights at every start would be slow; the revision hashes each file's name,
size and modification time instead (for an HF-cache snapshot the files resolve to blobs named by
their content hash). Replacing or retraining the weights therefore changes the revision, and with it
every response-cache key (app/cache/store.py); copying them elsewhere only costs cache misses.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from engine.loader import DEMO_MODEL_ID, _find_in_hf_cache, demo_gguf_path

UNKNOWN_REVISION = "unknown"


def path_revision(path: Path) -> str:
    """16 hex digits from the name, size and mtime of the file, or of every file in the folder."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        resolved = file.resolve()
        stat = resolved.stat()
        digest.update(f"{file.name}\0{resolved.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _model_path(source: str, model_id: str) -> Path | None:
    """Where the served weights are, resolved the way engine/loader.py resolves `source`."""
    if source == "demo" or model_id == DEMO_MODEL_ID:
        return demo_gguf_path()
    path = Path(source).expanduser()
    if (path.is_dir() and (path / "config.json").is_file()) or (path.suffix == ".gguf" and path.is_file()):
        return path
    return _find_in_hf_cache(source)


@cache
def model_revision(source: str, model_id: str) -> str:
    """The revision of the model a profile's `source` loaded as `model_id` (computed once per process)."""
    try:
        path = _model_path(source, model_id)
        return path_revision(path) if path is not None else UNKNOWN_REVISION
    except OSError:
        return UNKNOWN_REVISION
