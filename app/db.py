"""Database engine and sessions: SQLite (WAL) by default, Postgres through DATABASE_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, orm

from app.errors import ApiError
from app.services import services

RowT = TypeVar("RowT")

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Connections a process keeps open. SQLAlchemy's default keeps 5 and opens and closes the rest per
# checkout: under 16 concurrent submits that connect (and, on SQLite, its PRAGMAs) cost a submit
# about 15 % of its CPU (bench/load.py). Kept connections are only as many as were ever busy at once.
POOL_SIZE = 16
POOL_OVERFLOW = 48


def make_engine(url: str) -> sa.Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, **pool)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool)
    event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the API read while a worker writes; the busy timeout makes writers wait, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def write_lock_for(url: str) -> AbstractContextManager[Any]:
    """What a process's busy writers hold around a write transaction: a lock for SQLite, else nothing.

    SQLite lets one writer in at a time and makes the others retry in its busy handler, which sleeps
    1, 2, 5, 10, 15... ms between tries: a worker storing several jobs' results in the same decode
    step waited about 10 ms per write. Queued on a lock, the next writer starts as soon as the last
    one commits. Postgres locks rows and needs none."""
    return threading.Lock() if url.startswith("sqlite") else nullcontext()


def session_factory() -> orm.sessionmaker[orm.Session]:
    """The current app's session factory."""
    return services().sessions


@contextmanager
def db_session() -> Iterator[orm.Session]:
    """A session of the current app, closed at the end (commit explicitly)."""
    with session_factory()() as session:
        yield session


def id_page(
    session: orm.Session,
    model: type[RowT],
    after: str | None,
    limit: int,
    *conditions: sa.ColumnElement[bool] | None,
    newest_first: bool = True,
) -> tuple[list[RowT], bool]:
    """A page of rows by their time-ordered id after the cursor `after` (conditions None are left out);
    returns (page, has_more). Every list endpoint pages so."""
    column: Any = model.id  # type: ignore[attr-defined]
    query = sa.select(model).where(*(c for c in conditions if c is not None))
    query = query.order_by(column.desc() if newest_first else column.asc()).limit(limit + 1)
    if after:
        query = query.where(column < after if newest_first else column > after)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


def get_or_404(
    session: orm.Session,
    model: type[RowT],
    row_id: str,
    error: ApiError,
    visible: sa.ColumnElement[bool],
) -> RowT:
    """The row with this id where `visible` holds (its caller may see it), else `error` (the resource's
    own 404, the same whether the row is missing or another key's)."""
    column: Any = model.id  # type: ignore[attr-defined]
    row = session.scalar(sa.select(model).where(column == row_id, visible))
    if row is None:
        raise error
    return row
