"""`gptoss storage copy-to-database`: copy the files' bytes from DATA_DIR/files into the database, the
step before switching a deployment to GPTOSS_FILE_STORAGE=database (docs/storage.md).

An operator's command on the server box, like `gptoss keys`: it finds the database and the folder by
the API's own settings (DATABASE_URL, GPTOSS_DATA_DIR). It copies every file row's bytes that the
database lacks, each file in one transaction, and leaves the folder as it is; running it again copies
only what is still missing, so it can run once while the API serves and once more after it stops.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import orm

from app.batches.models import StoredFile
from app.batches.storage import CHUNK_BYTES, DatabaseStorage, FileStorage, LocalStorage
from app.db import make_engine
from app.settings import load_settings


def add_storage_parser(subparsers: Any) -> None:
    """Add `storage copy-to-database` to the gptoss command parser."""
    storage = subparsers.add_parser("storage", help="move files' bytes between storages (on the server)")
    commands = storage.add_subparsers(dest="storage_command", required=True)
    copy = commands.add_parser(
        "copy-to-database", help="copy the bytes under GPTOSS_DATA_DIR/files into the database"
    )
    copy.set_defaults(func=storage_copy_to_database)


@dataclass
class CopyReport:
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0  # already in the target
    missing: list[str] = field(default_factory=list)  # rows whose bytes the source lacks too
    wrong_size: list[str] = field(default_factory=list)  # copied, but not the row's size


def copy_files(file_rows: Iterator[tuple[str, int]], source: FileStorage, target: FileStorage) -> CopyReport:
    """Copy each (file id, size) row's bytes that the target lacks from the source, streamed."""
    report = CopyReport()
    for file_id, size in file_rows:
        if target.exists(file_id):
            report.present += 1
        elif not source.exists(file_id):
            report.missing.append(file_id)
        else:
            with source.open(file_id) as content:
                copied = target.write(file_id, iter(partial(content.read, CHUNK_BYTES), b""))
            report.copied += 1
            report.copied_bytes += copied
            if copied != size:
                report.wrong_size.append(file_id)
    return report


def file_rows(session: orm.Session) -> Iterator[tuple[str, int]]:
    query = sa.select(StoredFile.id, StoredFile.size_bytes).order_by(StoredFile.id)
    for row in session.execute(query.execution_options(yield_per=1000)):
        yield row.id, row.size_bytes


def storage_copy_to_database(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        with orm.Session(engine) as session:  # the rows are read as the copy goes (SQLite: WAL allows it)
            local = LocalStorage(settings.batches.files_dir)
            report = copy_files(file_rows(session), local, DatabaseStorage(engine))
    except sa_exc.SQLAlchemyError as exc:
        raise SystemExit(
            f"gptoss storage: the database cannot be used ({type(exc).__name__}: {exc}); "
            "is it migrated (make migrate)?"
        ) from None
    finally:
        engine.dispose()
    print(
        f"copied {report.copied} files ({report.copied_bytes} bytes) into the database; "
        f"{report.present} were there already"
    )
    for file_id in report.missing:
        print(f"{file_id}: no bytes under {settings.batches.files_dir} nor in the database", file=sys.stderr)
    for file_id in report.wrong_size:
        print(f"{file_id}: copied, but its size is not the one its row records", file=sys.stderr)
    return 1 if report.wrong_size else 0
