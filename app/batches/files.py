"""Stored files: a row per file and its bytes at files_dir/<id>, a path only the server chooses."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from app.batches.models import StoredFile, new_file_id
from app.db import get_or_404, id_page
from app.errors import ApiError
from app.keys.caller import Caller

FILE_ID_PATTERN = re.compile(r"file-[0-9a-f]{24}")


def file_path(files_dir: Path, file_id: str) -> Path:
    """Where a file's bytes live; the id is checked so no client string ever becomes a path."""
    if not FILE_ID_PATTERN.fullmatch(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return files_dir / file_id


def display_name(filename: str | None) -> str:
    """The uploaded name as shown to clients: no folders, at most 255 characters; ValueError when it
    holds control characters (no download header could carry them)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name):
        raise ValueError(f"the file name {name!r} holds control characters")
    return name[:255] or "upload.jsonl"


def store_file(
    session: orm.Session,
    files_dir: Path,
    filename: str,
    purpose: str,
    owner: str | None,
    write: Callable[[Path], None],
) -> StoredFile:
    """Write the bytes with write(temp_path), move them into place, then commit the row (owned by
    `owner`)."""
    files_dir.mkdir(parents=True, exist_ok=True)
    file_id = new_file_id()
    final_path = file_path(files_dir, file_id)
    partial_path = final_path.with_suffix(".part")
    try:
        write(partial_path)
        size = partial_path.stat().st_size
        os.replace(partial_path, final_path)
        row = StoredFile(
            id=file_id, filename=filename, purpose=purpose, size_bytes=size, status="processed", owner=owner
        )
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        for path in (partial_path, final_path):
            path.unlink(missing_ok=True)
        raise
    return row


def visible_files(caller: Caller) -> sa.ColumnElement[bool]:
    """The files this caller may see and touch: its own, or every file for an admin."""
    return caller.sees(StoredFile.owner)


def find_file(session: orm.Session, file_id: str, caller: Caller) -> StoredFile | None:
    return session.scalar(sa.select(StoredFile).where(StoredFile.id == file_id, visible_files(caller)))


def get_file_or_404(session: orm.Session, file_id: str, caller: Caller) -> StoredFile:
    """The file, if this caller may see it; else the same 404 as for an id that never existed."""
    error = ApiError(404, f"No such File object: {file_id}", param="file_id", code="file_not_found")
    return get_or_404(session, StoredFile, file_id, error, visible_files(caller))


def delete_file(session: orm.Session, files_dir: Path, file_id: str) -> None:
    """Remove the row, then the bytes (a reader that already opened the file finishes reading)."""
    session.execute(sa.delete(StoredFile).where(StoredFile.id == file_id))
    session.commit()
    with contextlib.suppress(ValueError):
        file_path(files_dir, file_id).unlink(missing_ok=True)


def list_files(
    session: orm.Session,
    caller: Caller,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    newest_first: bool,
) -> tuple[list[StoredFile], bool]:
    """A page of the caller's files ordered by id (= by time); returns (page, has_more)."""
    by_purpose = StoredFile.purpose == purpose if purpose else None
    visible = visible_files(caller)
    return id_page(session, StoredFile, after, limit, by_purpose, visible, newest_first=newest_first)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def file_json(row: StoredFile) -> dict[str, Any]:
    """The OpenAI file object."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.size_bytes,
        "created_at": _unix(row.created_at),
        "expires_at": None,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": None,
    }
