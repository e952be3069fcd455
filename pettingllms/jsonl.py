"""Reading and writing JSONL for the whole project, through `jsonlines`.

    >>> for row, where in read_jsonl(path):        # where = "file:line", for error messages
    ...     ...
    >>> with JsonlAppender(path) as out:           # one line per row, fsync every `sync_every` rows
    ...     out.write(row)

Two rules hold for every file we read or write:
- A broken line is a `DataError` naming the file and the line; nothing guesses.
- A kill can leave only the last line without its newline (a torn write): `split_torn_tail`
  finds it, so the ledger reader can drop it with a warning and run its episode again.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonlines

from pettingllms.exceptions import DataError


def dumps(row: Any) -> str:
    """One JSON line, without the newline (Python's default separators and ASCII escapes)."""
    return json.dumps(row)


def read_jsonl(path: Path | str, data: bytes | None = None) -> Iterator[tuple[Any, str]]:
    """Every non-empty line of `path` parsed, with its "file:line"; `data` reads given bytes instead."""
    line_number = 0

    def numbered_lines(source: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal line_number
        for line_number, line in enumerate(source, start=1):  # noqa: B007 - read by the loop below
            yield line

    source = io.BytesIO(data) if data is not None else open(path, "rb")
    with source:
        reader = jsonlines.Reader(numbered_lines(source))
        try:
            for row in reader.iter(skip_empty=True):
                yield row, f"{path}:{line_number}"
        except jsonlines.InvalidLineError as error:
            reason = "not UTF-8 text" if "utf-8" in str(error).lower() else "not valid JSON"
            raise DataError(f"{path}:{line_number}: {reason}; the file was damaged.") from None
        except (ValueError, RecursionError) as error:  # huge integers, absurd nesting
            raise DataError(f"{path}:{line_number}: unreadable JSON ({type(error).__name__}).") from None


def split_torn_tail(data: bytes) -> tuple[bytes, bytes]:
    """(complete lines, torn tail): the tail is what follows the last newline, b"" when none."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """Write `rows` to `path` through a temporary file, so a reader sees the old or the new file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with JsonlAppender(temporary, mode="w") as out:
            for row in rows:
                out.write(row)
            out.sync()
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class JsonlAppender:
    """Appends rows to a JSONL file, flushed after each write and fsynced every `sync_every` rows
    (0: only when `sync` is called)."""

    def __init__(self, path: Path | str, sync_every: int = 16, mode: str = "a"):
        self.path = Path(path)
        self._file = open(self.path, mode, encoding="utf-8")
        self._writer = jsonlines.Writer(self._file, flush=True, dumps=dumps)
        self.sync_every = sync_every
        self.unsynced = 0

    def write(self, row: Any) -> None:
        self._writer.write(row)
        self.unsynced += 1
        if self.sync_every and self.unsynced >= self.sync_every:
            self.sync()

    def write_all(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.write(row)

    def sync(self) -> None:
        """Put what was written on disk (not only in the OS cache)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self.unsynced = 0

    def close(self) -> None:
        self._writer.close()
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
