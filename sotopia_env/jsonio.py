"""Reading and writing JSON and JSONL files: the one place the project does it.

Two kinds of JSONL file, read two ways:
- files the project appends to (episodes, labels, caches, metrics): `append_jsonl` writes each record as
  one line under a file lock, with one `write` and an fsync, so a crash leaves at most one partial
  trailing line; `iter_jsonl` skips that line, and the next append cuts it off first.
- files a person writes (scenarios, characters, Sotopia dumps): `read_records` reads every line, the last
  one too when it has no newline.
A line that is not JSON is an error naming the file and the line. Whole files (`write_text_atomic`,
`write_json_atomic`, `write_jsonl_atomic`) are written beside their target and renamed over it, so a
reader or a crash sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class JSONFileError(ValueError):
    """A JSON or JSONL file that cannot be read; the message names the file and the line."""


# --- reading ---------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise JSONFileError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from exc


def _parse_line(path: Path, lineno: int, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise JSONFileError(f"{path}: line {lineno}: not valid JSON ({reason}); fix or remove that line") from exc


def read_json(path: str | Path) -> Any:
    """The value of a whole JSON file; an error names the file and the line where parsing stopped."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise JSONFileError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); fix the file") from exc
    except UnicodeDecodeError as exc:
        raise JSONFileError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file the project appends to (`append_jsonl`). A missing file has none; a last
    line without a newline is an append that has not finished (or never will) and is skipped; any other
    line that is not JSON raises `JSONFileError` naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return
    *complete, _unfinished = _read_bytes(path).split(b"\n")
    for lineno, raw in enumerate(complete, 1):
        if raw.strip():
            yield _parse_line(path, lineno, raw)


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """(where, record) pairs of a hand-written data file, `where` naming the record in error messages:
    a JSONL file gives one per non-blank line ("line 3"), the last one also without a newline; a JSON list
    one per item ("record 2"); any other JSON value is one record ("record 0"). Records are not checked
    for shape: callers say what they expected."""
    path = Path(path)
    if path.suffix == ".jsonl":
        lines = _read_bytes(path).split(b"\n")
        return [(f"line {n}", _parse_line(path, n, raw)) for n, raw in enumerate(lines, 1) if raw.strip()]
    data = read_json(path)
    if isinstance(data, list):
        return [(f"record {i}", record) for i, record in enumerate(data)]
    return [("record 0", data)]


# --- writing ---------------------------------------------------------------------------------------


def jsonl_line(record: BaseModel | dict[str, Any]) -> str:
    """One record as one JSONL line (a pydantic model is dumped in JSON mode)."""
    payload = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
    return json.dumps(payload, ensure_ascii=False) + "\n"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace a file's whole content: written and synced under a temporary name beside it, then renamed
    over it, so a reader or a crash never sees half a file. A write that fails leaves the old file (or
    none) and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per writer: two processes replacing the same file must not share a temporary.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, value: Any, indent: int | None = 1) -> None:
    """A whole JSON file at once (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(value, indent=indent))


def write_jsonl_atomic(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    """A whole JSONL file at once (see `write_text_atomic`); `append_jsonl` adds to one line by line."""
    write_text_atomic(path, "".join(jsonl_line(r) for r in records))


def _cut_partial_tail(fd: int) -> None:
    """Drop a trailing line that has no newline (left by a crash mid-write)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return
    pos = size
    chunk = 4096
    while pos > 0:
        start = max(0, pos - chunk)
        os.lseek(fd, start, os.SEEK_SET)
        data = os.read(fd, pos - start)
        if pos == size and data.endswith(b"\n"):
            return
        nl = data.rfind(b"\n")
        if nl >= 0:
            os.ftruncate(fd, start + nl + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def append_jsonl(path: str | Path, record: BaseModel | dict[str, Any]) -> None:
    """Append one record as one line, atomically with respect to other writers and crashes."""
    line = jsonl_line(record).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _cut_partial_tail(fd)
        os.lseek(fd, 0, os.SEEK_END)
        written = os.write(fd, line)
        if written != len(line):  # a short write on a regular file means the disk is full
            raise OSError(f"{path}: short write ({written} of {len(line)} bytes); is the disk full?")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
