"""Every third-party module the package imports is a declared dependency of it (core or an extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

from tests.support.paths import REPO_ROOT

PACKAGES = ("app", "engine", "workers", "gate", "cli")


def imported_modules() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES)


def declared() -> set[str]:
    requirements = importlib.metadata.requires("gptoss-batch") or []
    return {
        re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in requirements
    }


def test_every_imported_distribution_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in imported_modules()
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & declared()
    }
    assert undeclared == {}
