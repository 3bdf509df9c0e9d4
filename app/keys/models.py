"""The api_keys table: a named key, its role, and only the sha256 of its secret."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from app.models import Base, UTCDateTime, time_ordered_id, utcnow


def new_key_id() -> str:
    return time_ordered_id("key_", 8)


class ApiKey(Base):
    """A key made by `gptoss keys add`; its id is the owner of what the key makes."""

    __tablename__ = "api_keys"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(40), primary_key=True, default=new_key_id)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True)  # names stay taken once revoked
    key_hash: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True)  # sha256 hex of the key
    admin: orm.Mapped[bool] = orm.mapped_column(default=False, server_default=sa.false())
    created_at: orm.Mapped[datetime] = orm.mapped_column(UTCDateTime, default=utcnow)
    revoked_at: orm.Mapped[datetime | None] = orm.mapped_column(UTCDateTime)
