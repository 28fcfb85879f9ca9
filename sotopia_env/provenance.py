"""Provenance: the settings an output was made with, recorded beside it the first time and checked on every
rerun into it, and the run id that keeps its record ids apart from every other run's.

A rerun into an existing --out continues that output (resumes); that is sound only when it makes the rest
the way the first run made the start. So every resumable command keeps its settings in a JSON file (a
trainer's OUT/config.json, a record file's `<out>.settings.json`) and calls `check_same_settings` before any
work: the first run records them, a later run compares and refuses, naming each differing field, unless the
caller overrides (`--resume-anyway`), which records the new settings with a warning. Fields that do not change
results (progress, where and how fast it runs) are passed as `ignore`: their latest values are recorded, never
compared. A field only one side has (a setting added by a later version) is not compared.

The run id is a random tag made when the settings are first recorded, kept in the same file (`run_id`), so a
resumed run makes the ids an uninterrupted one would. An output that existed before it was first recorded (a
run from before this check) has no run id (""): its records were made without one, and a resume must match them.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from .jsonio import read_json, write_json_atomic

RUN_ID = "run_id"  # the key of the run id in a settings file


def settings_beside(out: str | Path) -> Path:
    """The settings file of a command whose output is one file: `runs/labels.jsonl` -> `runs/labels.settings.json`."""
    return Path(out).with_suffix(".settings.json")


def scoped_id(run_id: str, key: str) -> str:
    """A record id that names its run: `<run id>|<key>`, or the key alone for a run without an id."""
    return f"{run_id}|{key}" if run_id else key


def _made(out: Path, file: Path) -> bool:
    """Whether `out` holds anything a run made: a non-empty file, or a folder with more than the settings."""
    if out.is_file():
        return out.stat().st_size > 0
    return out.is_dir() and any(p != file and not p.name.startswith(f".{file.name}.") for p in out.iterdir())


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples as lists, as they read back from the file


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _create(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write the first record of `path` unless another process got there first; returns the one that won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    write_json_atomic(tmp, record)
    try:
        os.link(tmp, path)  # fails if it exists: two processes starting one run agree on one run id
        return record
    except FileExistsError:
        return read_json(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_same_settings(
    out: str | Path,
    file: str | Path,
    settings: Mapping[str, Any],
    *,
    ignore: Collection[str] = (),
    override: bool = False,
    explain: Mapping[str, Callable[[Any, Any], list[str]]] | None = None,
    records: str | Path | None = None,
) -> str:
    """Record `settings` (JSON-able) in `file` the first time, compare them with what it holds on every later
    run into `out`, and return the run id.

    A difference in a field outside `ignore` raises a ValueError naming `out`, each differing field (saved ->
    now) and the fix, unless `override`, which prints a warning and records the new settings. explain: per
    field, a function (saved, now) -> readable differences, for a structured field (compared also when only
    now has it). records: what holds the output's records, when not `out` itself (label's OUT.raw.jsonl).

    Only an output that holds something is compared: one the last run left empty (it failed at once) just
    records the new settings. One that holds records but no settings file was made before settings were
    recorded: these are recorded with a warning, and the run id is ""."""
    out, file = Path(out), Path(file)
    made = Path(records) if records is not None else out
    now = _plain(dict(settings))
    if not file.exists():
        if _made(made, file):
            print(
                f"warning: {out} has no record of the settings it was made with ({file}); assuming these and "
                "recording them: later reruns are checked against them",
                file=sys.stderr,
            )
            _create(file, {**now, RUN_ID: ""})
            return ""
        saved = _create(file, {**now, RUN_ID: uuid.uuid4().hex[:8]})
        if saved.get(RUN_ID) is not None and {k: v for k, v in saved.items() if k != RUN_ID} == now:
            return str(saved[RUN_ID])
    else:
        saved = read_json(file)
    if not isinstance(saved, dict):
        raise ValueError(f"{file}: holds a JSON {type(saved).__name__}, not the settings object this command writes")
    run_id = str(saved.get(RUN_ID) or "")
    explain = explain or {}
    changes = []
    for key, value in now.items():
        if key in ignore or key == RUN_ID:
            continue
        if key in explain:
            changes += explain[key](saved.get(key), value)
        elif key in saved and saved[key] != value:
            changes.append(f"{key}: {_show(saved[key])} -> {_show(value)}")
    if changes and not _made(made, file):  # nothing made with the old settings yet (a run that failed at once)
        changes = []
    if changes and not override:
        raise ValueError(
            f"{out} was made with other settings ({'; '.join(changes)}; recorded in {file}); use a new --out, "
            "or pass --resume-anyway to continue it with these settings"
        )
    if changes:
        print(
            f"warning: {out}: continuing with other settings than it was made with ({'; '.join(changes)}), as "
            f"--resume-anyway asks; {file} now records these",
            file=sys.stderr,
        )
    if {k: v for k, v in saved.items() if k != RUN_ID} != now:
        write_json_atomic(file, {**now, RUN_ID: run_id})
    return run_id


def recorded_run_id(file: str | Path) -> str:
    """The run id a settings file holds ("" when none)."""
    path = Path(file)
    return str(read_json(path).get(RUN_ID) or "") if path.exists() else ""
