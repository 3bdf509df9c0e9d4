"""`gptoss keys add|list|revoke`: the API keys in the database, an operator's command on the server box.

Like `alembic`, it talks to the database directly, found by the API's own settings (DATABASE_URL, else
the SQLite file under GPTOSS_DATA_DIR; app/settings.py). `add` prints the new key once, on stdout; only
its sha256 is stored. GPTOSS_API_KEYS keys are not listed here: they live in the environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.db import make_engine
from app.keys import store as key_store
from app.keys.models import ApiKey
from app.settings import load_settings


def add_keys_parser(subparsers: Any) -> None:
    """Add `keys add|list|revoke` to the gptoss command parser."""
    keys = subparsers.add_parser("keys", help="add, list and revoke API keys (on the server, in its DB)")
    commands = keys.add_subparsers(dest="keys_command", required=True)
    add = commands.add_parser("add", help="make a key named NAME and print it (shown only this once)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="the key sees and touches every key's things")
    add.set_defaults(func=keys_add)
    listing = commands.add_parser("list", help="the keys: name, id, role, created, revoked")
    listing.set_defaults(func=keys_list)
    revoke = commands.add_parser("revoke", help="revoke the key named NAME: it gets 401 from now on")
    revoke.add_argument("name")
    revoke.set_defaults(func=keys_revoke)


@contextmanager
def key_session() -> Iterator[orm.Session]:
    """A session of the API's database; a refused command or a database problem exits with a message."""
    engine = make_engine(load_settings().database_url)
    try:
        with orm.Session(engine, expire_on_commit=False) as session:
            yield session
    except key_store.KeyCommandError as exc:
        raise SystemExit(f"gptoss keys: {exc}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise SystemExit(
            f"gptoss keys: the database cannot be used ({type(exc).__name__}: {exc}); "
            "is it migrated (make migrate)?"
        ) from None
    finally:
        engine.dispose()


def keys_add(args: argparse.Namespace) -> int:
    with key_session() as session:
        row, secret = key_store.add_key(session, args.name, args.admin)
    print(secret)
    print(f"added {describe(row)}; keep the key above, it is not stored and cannot be shown again",
          file=sys.stderr)  # fmt: skip
    return 0


def keys_list(args: argparse.Namespace) -> int:
    with key_session() as session:
        for row in key_store.list_keys(session):
            print(describe(row))
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    with key_session() as session:
        row = key_store.revoke_key(session, args.name)
    print(f"revoked {describe(row)}")
    return 0


def describe(row: ApiKey) -> str:
    """name, id, role, created and (if so) revoked, tab-separated."""
    role = "admin" if row.admin else "user"
    revoked = f"\trevoked {row.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if row.revoked_at else ""
    return f"{row.name}\t{row.id}\t{role}\tcreated {row.created_at:%Y-%m-%dT%H:%M:%SZ}{revoked}"
