"""Database engine and sessions: SQLite (WAL) by default, Postgres through DATABASE_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy import event, orm

SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str) -> sa.Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
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


def init_db(app: Flask) -> None:
    """Attach an engine, a session factory and a write lock for app.config['DATABASE_URL'] to the app."""
    engine = app.extensions["gptoss_db_engine"] = make_engine(app.config["DATABASE_URL"])
    app.extensions["gptoss_sessions"] = orm.sessionmaker(engine, expire_on_commit=False)
    app.extensions["gptoss_db_write_lock"] = write_lock_for(app.config["DATABASE_URL"])


def write_lock_for(url: str) -> AbstractContextManager[Any]:
    """What a process's busy writers hold around a write transaction: a lock for SQLite, else nothing.

    SQLite lets one writer in at a time and makes the others retry in its busy handler, which sleeps
    1, 2, 5, 10, 15... ms between tries: a worker storing several jobs' results in the same decode
    step waited about 10 ms per write. Queued on a lock, the next writer starts as soon as the last
    one commits. Postgres locks rows and needs none."""
    return threading.Lock() if url.startswith("sqlite") else nullcontext()


def session_factory() -> orm.sessionmaker[orm.Session]:
    """The current app's session factory."""
    return current_app.extensions["gptoss_sessions"]


@contextmanager
def db_session() -> Iterator[orm.Session]:
    """A session of the current app, closed at the end (commit explicitly)."""
    with session_factory()() as session:
        yield session
