"""The README's environment table names every variable the code reads, and nothing else."""

from __future__ import annotations

import re

from app.settings import DEFAULTS, env_name
from engine.cpu.threads import OPENMP_VARIABLES
from tests.support.paths import REPO_ROOT

SOURCE_FOLDERS = ("app", "engine", "workers", "gate", "cli", "bench")
# read by libraries to find the Hugging Face cache; documented with the loader, not ours to set
NOT_OURS = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"}


def documented() -> set[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Environment\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])}


def read_by_the_code() -> set[str]:
    # openmp_env reads the OpenMP variables from the mapping it is given (the worker's environment)
    names = {env_name(key) for key in DEFAULTS} | set(OPENMP_VARIABLES)
    pattern = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""")
    for folder in SOURCE_FOLDERS:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            names |= set(pattern.findall(path.read_text()))
    names |= set(pattern.findall((REPO_ROOT / "gunicorn.conf.py").read_text()))
    for path in (REPO_ROOT / "Procfile", REPO_ROOT / "Makefile"):
        names |= set(re.findall(r"\$\{+([A-Z][A-Z0-9_]+)", path.read_text()))
    return names - NOT_OURS


def test_every_variable_the_code_reads_is_in_the_readme_table_and_only_those() -> None:
    table, code = documented(), read_by_the_code()
    assert code - table == set(), "read by the code but not in the README's environment table"
    assert table - code == set(), "in the README's environment table but read by nothing"
