"""Paths the tests compute: the repository root (worker processes run there) and the test data."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/support/paths.py -> the repository root
