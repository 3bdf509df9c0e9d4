"""Shared fixtures: real Redis, SQLite and Postgres, a tiny gpt-oss model and real worker processes.

They live in tests/support/ and are registered here as plugins; tests import helpers from
tests.support.<module>, never from a conftest.
"""

pytest_plugins = [
    "tests.support.services",
    "tests.support.apps",
    "tests.support.keys",
    "tests.support.pipeline",
    "tests.support.cluster",
    "tests.support.gptoss_vocab",
    "tests.support.browser",
    "tests.support.ports",  # one ledger of handed-out ports for the run's workers
    "tests.support.leftovers",  # the last check: no process the suite started still runs
]
