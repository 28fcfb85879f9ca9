"""Reading and writing JSON and JSONL files: the one place the project does it.

A JSONL record is one line, split on "\n" only: U+2028, U+2029 and U+0085 inside a record are data (the
writers escape them anyway, so a reader that splits on them, like `str.splitlines`, still sees one line).
Two kinds of JSONL file, read two ways:
- files the project appends to (episodes, labels, caches, metrics): `append_jsonl` writes each record as
  one line under a file lock, with one `write` and an fsync, so a crash leaves at most one torn trailing
  line. A last line without its newline is a record when it is one whole JSON object (`is_complete_record`:
  a write cut short never is one); otherwise it is a torn write, which `iter_jsonl` skips and the next
  append cuts off. The next append gives a complete last record its newline and never drops it.
- files a person writes (scenarios, characters, Sotopia dumps): `read_records` reads every line, the last
  one too when it has no newline.
A line that is not JSON is an error naming the file and the line. JSON has no NaN or Infinity: the writers
refuse them (naming the file and the field) and the readers report them (naming the file and the line)
instead of passing on what Python's `json` would accept. Whole files (`write_text_atomic`,
`write_json_atomic`, `write_jsonl_atomic`) and whole folders (`replace_folder`: checkpoints, saved models)
are written beside their target, synced, and renamed into place, so a reader or a crash sees the old one or
the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class JSONFileError(ValueError):
    """A JSON or JSONL file that cannot be read; the message names the file and the line (`where`), says
    what is wrong (`why`) and what to do."""

    def __init__(self, path: str | Path, where: str, why: str, fix: str) -> None:
        self.path, self.where, self.why = Path(path), where, why
        super().__init__(f"{path}: {where + ': ' if where else ''}{why}; {fix}")


class NonFiniteError(ValueError):
    """A value to write holds NaN or Infinity, which JSON has no number for; the message names the file
    and the field."""


# --- reading ---------------------------------------------------------------------------------------


class _Constant(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def _loads(data: bytes | str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity (Python's json accepts them; JSON does not)."""
    return json.loads(data, parse_constant=_reject_constant)


_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _constant_line(text: str, name: str) -> int:
    """The line of the first bare `name` (NaN, Infinity, -Infinity) outside strings in a JSON text."""
    masked = _STRING.sub('""', text)  # a JSON string holds no raw newline: line numbers stay
    found = re.search(r"(?<![\w.])" + re.escape(name) + r"(?!\w)", masked)
    return masked.count("\n", 0, found.start()) + 1 if found else 1


def _why_constant(name: str) -> str:
    return f"{name} is not a JSON number (a writer let a non-finite value through)"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise JSONFileError(path, "", f"cannot read ({exc.strerror or exc})", "check the path") from exc


def parse_line(path: str | Path, lineno: int, raw: bytes) -> Any:
    """One JSONL line's value; a `JSONFileError` naming the file and the line when it is not JSON, not
    UTF-8, or holds NaN or Infinity."""
    try:
        return _loads(raw)
    except _Constant as exc:
        raise JSONFileError(path, f"line {lineno}", _why_constant(exc.name), "write null or a number there") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise JSONFileError(path, f"line {lineno}", f"not valid JSON ({reason})", "fix or remove that line") from exc


def is_complete_record(raw: bytes) -> bool:
    """Whether a line is one whole JSON object, as `append_jsonl` writes each record. A record cut short by a
    crash never is one (no proper prefix of an object's text parses as an object), so a last line without
    its newline that is one is a record, and one that is not is a torn write."""
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False


def jsonl_lines(data: bytes, appended: bool) -> list[tuple[int, bytes]]:
    """(line number, raw line) of each non-blank line of a JSONL file's bytes, split on b"\\n" only.
    appended: the file is one the project appends to, whose last line without a newline counts only when
    it is a complete record (`is_complete_record`); else (a hand-written file) it always counts."""
    *ended, last = data.split(b"\n")
    lines = [(n, raw) for n, raw in enumerate(ended, 1) if raw.strip()]
    if last.strip() and (not appended or is_complete_record(last)):
        lines.append((len(ended) + 1, last))
    return lines


def read_json(path: str | Path) -> Any:
    """The value of a whole JSON file; an error names the file and the line where parsing stopped."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        return _loads(data)
    except _Constant as exc:
        line = _constant_line(data.decode("utf-8", "replace"), exc.name)
        raise JSONFileError(path, f"line {line}", _why_constant(exc.name), "write null or a number there") from None
    except json.JSONDecodeError as exc:
        raise JSONFileError(path, f"line {exc.lineno}", f"not valid JSON ({exc.msg})", "fix the file") from exc
    except UnicodeDecodeError as exc:
        raise JSONFileError(path, "", f"not UTF-8 text ({exc.reason})", "save it as UTF-8") from exc


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file the project appends to (`append_jsonl`). A missing file has none; a last
    line without a newline is a record when it is a complete JSON object, else a torn append, skipped; any
    other line that is not JSON raises `JSONFileError` naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return
    for lineno, raw in jsonl_lines(_read_bytes(path), appended=True):
        yield parse_line(path, lineno, raw)


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """(where, record) pairs of a hand-written data file, `where` naming the record in error messages:
    a JSONL file gives one per non-blank line ("line 3"), the last one also without a newline; a JSON list
    one per item ("record 2"); any other JSON value is one record ("record 0"). Records are not checked
    for shape: callers say what they expected."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [(f"line {n}", parse_line(path, n, raw)) for n, raw in jsonl_lines(_read_bytes(path), appended=False)]
    data = read_json(path)
    if isinstance(data, list):
        return [(f"record {i}", record) for i, record in enumerate(data)]
    return [("record 0", data)]


# --- writing ---------------------------------------------------------------------------------------


_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _non_finite(value: Any, at: str = "") -> tuple[str, str] | None:
    """(field path, token) of the first NaN or infinite float in a JSON-like value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return at, "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{at}[{key}]" if isinstance(key, int) else f"{at}.{key}" if at else str(key))
        if found:
            return found
    return None


def _dumps(value: Any, path: str | Path | None, record: str, **kwargs: Any) -> str:
    """json.dumps without NaN or Infinity: a `NonFiniteError` names the file, the record (`record`, e.g.
    "record 3 ", or "" for a whole file) and the field path of the first bad value."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        found = _non_finite(value)
        if found is None:
            raise
        field, token = found
        raise NonFiniteError(
            f"{path or '<unnamed file>'}: {record}field {field!r} is {token}; JSON has no such number, so nothing "
            "was written: make the value finite where it is computed, or None (null) where there is no value"
        ) from None


def jsonl_line(record: BaseModel | dict[str, Any], path: str | Path | None = None, number: int | None = None) -> str:
    """One record as one JSONL line (a pydantic model is dumped in JSON mode). NaN or Infinity anywhere in
    it is a `NonFiniteError` naming `path`, the record (`number`, 1-based, when given) and the field."""
    payload = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
    where = f"record {number} " if number is not None else "record "
    return _dumps(payload, path, where, ensure_ascii=False).translate(_SEPARATORS) + "\n"


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


def sync_folder(path: str | Path) -> None:
    """fsync a folder, so the renames and new names in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root, topdown=False):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(folder)


def _discard(path: Path) -> None:
    """Remove a folder as one step: renamed away first, so a crash mid-removal never leaves half of it
    under its name."""
    trash = path.with_name(path.name + ".trash")
    shutil.rmtree(trash, ignore_errors=True)
    if path.exists():
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def complete_folder(path: str | Path) -> Path | None:
    """The complete copy of a folder `replace_folder` writes: the folder itself, or, after a crash between
    its two renames, `<name>.old`; None when neither exists."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    return path if path.exists() else old if old.exists() else None


def replace_folder(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Replace a whole folder: `write(folder)` fills a new folder beside it (`<name>.tmp`), every file in it
    and the folder are synced, then the old folder is renamed to `<name>.old`, the new one to `<name>`,
    and only then is the old one removed. A crash at any moment leaves a complete folder under `<name>` or,
    between the two renames, under `<name>.old` (`complete_folder` finds it): the only complete copy is
    never removed before its replacement is in place. A `write` that fails leaves the old folder as it was."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    _discard(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        _sync_tree(tmp)
    except BaseException:
        _discard(tmp)
        raise
    if path.exists():  # complete (only a synced folder is ever renamed to `path`): an `.old` beside it is stale
        _discard(old)
        os.rename(path, old)
        sync_folder(path.parent)
    os.rename(tmp, path)  # with no `path`, an `.old` may be the only complete copy: it goes only after this
    sync_folder(path.parent)
    _discard(old)


def write_json_atomic(path: str | Path, value: Any, indent: int | None = 1) -> None:
    """A whole JSON file at once (see `write_text_atomic`); NaN or Infinity in it is a `NonFiniteError`."""
    write_text_atomic(path, _dumps(value, path, "", indent=indent))


def write_jsonl_atomic(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    """A whole JSONL file at once (see `write_text_atomic`); `append_jsonl` adds to one line by line."""
    write_text_atomic(path, "".join(jsonl_line(r, path, n) for n, r in enumerate(records, 1)))


def _last_line(fd: int) -> tuple[int, bytes]:
    """(where the file's last line starts, its bytes) for the line after the last newline (b"" when the
    file ends with one)."""
    pos = os.lseek(fd, 0, os.SEEK_END)
    tail = b""
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1, chunk[newline + 1 :] + tail
        tail, pos = chunk + tail, start
    return 0, tail


def append_jsonl(path: str | Path, record: BaseModel | dict[str, Any]) -> None:
    """Append one record as one line, atomically with respect to other writers and crashes. A last line
    without a newline that is a complete record gets its newline first; one that is not (a torn write) is
    cut off."""
    path = Path(path)
    line = jsonl_line(record, path).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start, last = _last_line(fd)
        if last and not is_complete_record(last):
            os.ftruncate(fd, start)
        elif last:
            line = b"\n" + line
        os.lseek(fd, 0, os.SEEK_END)
        written = os.write(fd, line)
        if written != len(line):  # a short write on a regular file means the disk is full
            raise OSError(f"{path}: short write ({written} of {len(line)} bytes); is the disk full?")
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
