"""Stored files: a row per file, its bytes in the FileStorage (app/batches/storage.py) under the row's id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.batches.models import FilePurpose, StoredFile, new_file_id
from app.batches.storage import FileStorage
from app.db import id_page
from app.errors import ApiError
from app.keys.caller import Caller
from app.models import utcnow
from app.retention import after as expiry_after
from app.retention import cutoff, get_unexpired_or_404
from app.settings import RetentionSettings


def display_name(filename: str | None) -> str:
    """The uploaded name as shown to clients: no folders, at most 255 characters; ValueError when it
    holds control characters (no download header could carry them)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name):
        raise ValueError(f"the file name {name!r} holds control characters")
    return name[:255] or "upload.jsonl"


def store_file(
    session: orm.Session,
    storage: FileStorage,
    filename: str,
    purpose: str,
    owner: str | None,
    chunks: Iterable[bytes],
    expires_after_s: int | None = None,
) -> StoredFile:
    """Store the bytes of `chunks`, then commit the row (owned by `owner`); a file with
    `expires_after_s` expires that long after its upload, whatever RETENTION_FILES_S says."""
    file_id = new_file_id()
    try:
        size = storage.write(file_id, chunks)
        now = utcnow()
        expires_at = now + timedelta(seconds=expires_after_s) if expires_after_s is not None else None
        row = StoredFile(
            id=file_id, filename=filename, purpose=purpose, size_bytes=size, status="processed",
            created_at=now, expires_at=expires_at, owner=owner,
        )  # fmt: skip
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        with contextlib.suppress(Exception):  # the first error is the one to report
            storage.delete([file_id])
        raise
    return row


def visible_files(caller: Caller) -> sa.ColumnElement[bool]:
    """The files this caller may see and touch: its own, or every file for an admin."""
    return caller.sees(StoredFile.owner)


def find_file(session: orm.Session, file_id: str, caller: Caller) -> StoredFile | None:
    return session.scalar(sa.select(StoredFile).where(StoredFile.id == file_id, visible_files(caller)))


def get_file_or_404(
    session: orm.Session, file_id: str, caller: Caller, retention: RetentionSettings
) -> StoredFile:
    """The file, if this caller may see it and it has not expired (app/retention.py); else 404 (the
    same as for an id that never existed, when it is another key's)."""
    error = ApiError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found")
    expiry = partial(file_expires_at, retention=retention)
    return get_unexpired_or_404(session, StoredFile, file_id, error, expiry, "File", caller)


def retention_period_s(purpose: str, retention: RetentionSettings) -> int:
    """RETENTION_BATCH_OUTPUTS_S for a batch's output and error files, RETENTION_FILES_S for uploads."""
    return retention.batch_outputs_s if purpose == FilePurpose.BATCH_OUTPUT else retention.files_s


def file_expires_at(row: StoredFile, retention: RetentionSettings) -> datetime | None:
    """The file's own expiry (expires_after at upload), else its purpose's retention after its creation."""
    if row.expires_at is not None:
        return row.expires_at
    return expiry_after(row.created_at, retention_period_s(row.purpose, retention))


def expired_files(retention: RetentionSettings, now: datetime) -> sa.ColumnElement[bool]:
    """The files past their expiry at `now`."""
    by_purpose = [
        sa.and_(
            StoredFile.expires_at.is_(None), StoredFile.purpose == purpose, StoredFile.created_at <= before
        )
        for purpose in FilePurpose
        if (before := cutoff(retention_period_s(purpose, retention), now)) is not None
    ]
    own = sa.and_(StoredFile.expires_at.is_not(None), StoredFile.expires_at <= now)
    return sa.or_(own, *by_purpose)  # never NULL (unknown), so that NOT of it lists the unexpired


def delete_file(session: orm.Session, storage: FileStorage, file_id: str) -> None:
    """Remove the row, then the bytes."""
    session.execute(sa.delete(StoredFile).where(StoredFile.id == file_id))
    session.commit()
    storage.delete([file_id])


def list_files(
    session: orm.Session,
    caller: Caller,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    newest_first: bool,
    retention: RetentionSettings,
) -> tuple[list[StoredFile], bool]:
    """A page of the caller's unexpired files ordered by id (= by time); returns (page, has_more)."""
    by_purpose = StoredFile.purpose == purpose if purpose else None
    unexpired = sa.not_(expired_files(retention, utcnow()))
    visible = visible_files(caller)
    return id_page(
        session, StoredFile, after, limit, by_purpose, unexpired, visible, newest_first=newest_first
    )


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def file_json(row: StoredFile, retention: RetentionSettings) -> dict[str, Any]:
    """The OpenAI file object; `expires_at` is when it expires (its own, or its purpose's retention)."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.size_bytes,
        "created_at": _unix(row.created_at),
        "expires_at": _unix(file_expires_at(row, retention)),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": None,
    }
