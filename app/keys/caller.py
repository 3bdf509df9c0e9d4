"""Who a request comes from: the key id that owns what it makes, and whether it sees everyone's things.

app/auth.py sets the caller of every request; each store narrows its queries with `Caller.sees`, so a
key that asks for another key's job, file, batch or response finds nothing (a 404, as for an id that
never existed). Rows made before keys existed, or in single-user mode, have no owner: admins see them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
from flask import g
from sqlalchemy import orm

ENV_KEY_PREFIX = "env_"


@dataclass(frozen=True)
class Caller:
    key_id: str | None  # stored in the `owner` column of what it makes; None: owned by nobody in particular
    admin: bool  # sees and touches every key's things

    def sees(self, owner: orm.Mapped[str | None]) -> sa.ColumnElement[bool]:
        """The condition that narrows a query on a table's `owner` column to this caller's rows (an
        admin sees every row)."""
        if self.admin:
            return sa.true()
        return owner == self.key_id if self.key_id is not None else sa.false()


SINGLE_USER = Caller(None, admin=True)  # no keys configured: local clients only, everything visible
UNVERIFIED = Caller(None, admin=False)  # a local client while the keys table cannot be read: sees nothing
SERVER = Caller(None, admin=True)  # the server's own reads of a job it has already shown to its caller


def env_key_id(key: str) -> str:
    """The stable owner id of a GPTOSS_API_KEYS key (from its hash; the key itself is never stored)."""
    return ENV_KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


def current_caller() -> Caller:
    """The caller of the current request (set by app/auth.py before every view)."""
    caller = g.get("gptoss_caller")
    if not isinstance(caller, Caller):
        raise RuntimeError("no caller for this request: app.auth did not run")
    return caller
