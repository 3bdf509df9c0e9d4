"""Where files' bytes live (GPTOSS_FILE_STORAGE): one small interface, two places.

- `local` (the default): DATA_DIR/files/<id>, written to <id>.part and moved into place. One box, or
  several that share that folder.
- `database`: rows of the file_chunks table, CHUNK_BYTES each, written in one transaction and read back
  one chunk per query, so no process holds a whole file in memory and hosts share files through the
  database alone.

Either way the bytes are written before the file's row is committed and removed after the row is
deleted, so every file row has its bytes. Only ids the server made (FILE_ID_PATTERN) name bytes.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa

from app.batches.models import FileChunk

FILE_ID_PATTERN = re.compile(r"file-[0-9a-f]{24}")
CHUNK_BYTES = 1024 * 1024  # one file_chunks row; also what a reader of either storage asks for at a time


class FileStorage(Protocol):
    def write(self, file_id: str, chunks: Iterable[bytes]) -> int:
        """Store `chunks` as the file's bytes, all or nothing; returns how many bytes."""
        ...

    def open(self, file_id: str) -> IO[bytes]:
        """The file's bytes, read as a stream; FileNotFoundError when it has none."""
        ...

    def exists(self, file_id: str) -> bool: ...

    def delete(self, file_ids: Sequence[str]) -> None:
        """Remove these files' bytes; ids with none are skipped."""
        ...


def make_file_storage(kind: str, folder: Path, engine: sa.Engine) -> FileStorage:
    """The storage GPTOSS_FILE_STORAGE names (checked by app/settings.py)."""
    return DatabaseStorage(engine) if kind == "database" else LocalStorage(folder)


def is_file_id(file_id: str) -> bool:
    return FILE_ID_PATTERN.fullmatch(file_id) is not None


@dataclass(frozen=True)
class LocalStorage:
    folder: Path  # DATA_DIR/files

    def path(self, file_id: str) -> Path:
        """Where a file's bytes live; the id is checked so no client string ever becomes a path."""
        if not is_file_id(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.folder / file_id

    def write(self, file_id: str, chunks: Iterable[bytes]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        final_path = self.path(file_id)
        partial_path = final_path.with_suffix(".part")
        size = 0
        try:
            with partial_path.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
            os.replace(partial_path, final_path)
        except BaseException:
            partial_path.unlink(missing_ok=True)
            raise
        return size

    def open(self, file_id: str) -> IO[bytes]:
        if not is_file_id(file_id):
            raise FileNotFoundError(file_id)
        return self.path(file_id).open("rb")  # a reader that opened it keeps reading after a delete

    def exists(self, file_id: str) -> bool:
        return is_file_id(file_id) and self.path(file_id).exists()

    def delete(self, file_ids: Sequence[str]) -> None:
        for file_id in filter(is_file_id, file_ids):
            self.path(file_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class DatabaseStorage:
    engine: sa.Engine

    def write(self, file_id: str, chunks: Iterable[bytes]) -> int:
        size = 0
        insert = sa.insert(FileChunk)
        with self.engine.begin() as connection:  # all chunks or none
            for seq, data in enumerate(rechunk(chunks, CHUNK_BYTES)):
                connection.execute(insert, {"file_id": file_id, "seq": seq, "data": data})
                size += len(data)
        return size

    def open(self, file_id: str) -> IO[bytes]:
        if not self.exists(file_id):
            raise FileNotFoundError(file_id)
        return io.BufferedReader(ChunkReader(self.engine, file_id), buffer_size=CHUNK_BYTES)

    def exists(self, file_id: str) -> bool:
        query = sa.select(FileChunk.seq).where(FileChunk.file_id == file_id, FileChunk.seq == 0)
        with self.engine.connect() as connection:
            return connection.scalar(query) is not None

    def delete(self, file_ids: Sequence[str]) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.delete(FileChunk).where(FileChunk.file_id.in_(list(file_ids))))


class ChunkReader(io.RawIOBase):
    """A file's chunks as a raw stream: one short query per chunk, no transaction held between them
    (so a 200 MB ingest keeps one chunk in memory and never blocks a writer)."""

    def __init__(self, engine: sa.Engine, file_id: str) -> None:
        self.engine, self.file_id = engine, file_id
        self.seq = 0
        self.piece = memoryview(b"")
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.piece and not self.ended:
            self.piece = memoryview(self._next_chunk() or b"")
        count = min(len(buffer), len(self.piece))
        buffer[:count] = self.piece[:count]
        self.piece = self.piece[count:]
        return count

    def _next_chunk(self) -> bytes | None:
        """The next non-empty chunk, None at the end."""
        query = sa.select(FileChunk.data).where(FileChunk.file_id == self.file_id, FileChunk.seq == self.seq)
        with self.engine.connect() as connection:
            data = connection.scalar(query)
        self.seq += 1
        if not data:  # no row, or the empty only chunk of an empty file
            self.ended = True
            return None
        return bytes(data)


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The bytes of `chunks` in pieces of `size` (the last one shorter); one empty piece when there
    are none, so an empty file has a row."""
    buffer = bytearray()
    sent = False
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
            sent = True
    if buffer or not sent:
        yield bytes(buffer)
