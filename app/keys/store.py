"""API key rows: add (the secret is shown once, only its sha256 is stored), list, revoke, look up."""

from __future__ import annotations

import hashlib
import re
import secrets

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.db import make_engine
from app.keys.caller import env_key_id
from app.keys.models import ApiKey
from app.models import utcnow

KEY_PREFIX = "sk-gptoss-"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")  # one word: `keys list` prints it in a column


class KeyCommandError(ValueError):
    """A keys command that cannot be done as asked; the message says why."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def add_key(session: orm.Session, name: str, admin: bool) -> tuple[ApiKey, str]:
    """Store a new key named `name`; returns its row and its secret (the only time it is known)."""
    if not NAME_PATTERN.fullmatch(name):
        raise KeyCommandError(
            f"a key name is 1 to 64 letters, digits and . _ @ + - (a letter or digit first), not {name!r}"
        )
    secret = new_secret()
    row = ApiKey(name=name, key_hash=key_hash(secret), admin=admin, created_at=utcnow())
    session.add(row)
    try:
        session.commit()
    except sa_exc.IntegrityError:
        session.rollback()
        taken = f"a key named {name!r} exists already (names stay taken after a revoke)"
        raise KeyCommandError(taken) from None
    return row, secret


def list_keys(session: orm.Session) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: orm.Session, name: str) -> ApiKey:
    """Revoke the active key named `name`: from now on it gets 401."""
    row = session.scalar(sa.select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise KeyCommandError(f"no key named {name!r}")
    if row.revoked_at is not None:
        raise KeyCommandError(f"the key {name!r} was revoked already")
    row.revoked_at = utcnow()
    session.commit()
    return row


def find_active_key(session: orm.Session, hashed: str) -> ApiKey | None:
    """The unrevoked key whose secret has this sha256 hex digest."""
    query = sa.select(ApiKey).where(ApiKey.key_hash == hashed, ApiKey.revoked_at.is_(None))
    return session.scalar(query)


def any_active_key(session: orm.Session) -> bool:
    """Whether the database holds a key (then every request needs one)."""
    return session.scalar(sa.select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def stored_keys_exist(database_url: str) -> bool:
    """Whether the database at this URL holds an active key; False where it cannot be read (before
    `make migrate`, or with the database away): then the server stays on this machine."""
    engine = make_engine(database_url)
    try:
        with orm.Session(engine) as session:
            return any_active_key(session)
    except sa_exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def key_directory(session: orm.Session, env_keys: tuple[str, ...]) -> dict[str, str]:
    """{key id: name} of every key: GPTOSS_API_KEYS[i] for the env keys, then the stored ones."""
    names = {env_key_id(key): f"GPTOSS_API_KEYS[{index}]" for index, key in enumerate(env_keys)}
    names.update({key_id: name for key_id, name in session.execute(sa.select(ApiKey.id, ApiKey.name))})
    return names
