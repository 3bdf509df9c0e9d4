"""Fixtures of the worker tests that call the worker's code directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import orm

from app.db import make_engine


@pytest.fixture
def sessions(database_url: str) -> Iterator[orm.sessionmaker[orm.Session]]:
    """A session factory on the test database, as a worker makes one."""
    engine = make_engine(database_url)
    yield orm.sessionmaker(engine, expire_on_commit=False)
    engine.dispose()
