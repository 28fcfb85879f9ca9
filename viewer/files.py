"""Reading the files `view` shows: lines with their offsets, JSON values, and the folders read once at start
(training runs, benchmark reports). What cannot be read is appended to a `problems` list as
"file[:line]: what is wrong; what was done", never raised: one bad file never hides the others."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_core

Version = tuple[int, int, int, int]  # a file's (device, inode, size, modification time in ns)


def file_version(st: os.stat_result) -> Version:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def version_of(path: Path) -> Version | None:
    """The file's version now; None when it cannot be read."""
    try:
        return file_version(path.stat())
    except OSError:
        return None


def parse_json(raw: bytes | str) -> Any:
    """One JSON value. pydantic-core's parser, not the standard library's: JSON nested past its recursion
    limit is then a ValueError like any other bad JSON, where `json.loads` raises RecursionError."""
    return pydantic_core.from_json(raw)


def read_lines(path: Path, problems: list[str], data: bytes | None = None) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw line) of each non-empty complete line of the file (or of `data`, the
    file's bytes already read); a last line without its newline (a write in progress, or one a crash cut
    short) is reported and left out."""
    data = path.read_bytes() if data is None else data
    start, lineno = 0, 0
    while start < len(data):
        lineno += 1
        end = data.find(b"\n", start)
        if end < 0:
            if data[start:].strip():
                problems.append(
                    f"{path}:{lineno}: last line has no newline (a write in progress or cut short); skipped"
                )
            return
        if data[start:end].strip():
            yield lineno, start, data[start:end]
        start = end + 1


@dataclass
class Run:
    """A training run folder: its metrics rows (step order) and summary."""

    label: str
    path: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass
class Benchmark:
    """A benchmark folder (`sotopia-env benchmark --out`): its report and one episode source per policy."""

    label: str
    path: Path
    report: dict[str, Any]
    markdown: str
    plots: list[str]  # PNG file names in the folder
    policies: dict[str, int | None] = field(default_factory=dict)  # spec -> source index of its episodes


def read_run(folder: Path, label: str, problems: list[str]) -> Run:
    summary_path, summary = folder / "summary.json", {}
    if summary_path.is_file():
        try:
            summary = parse_json(summary_path.read_bytes())
        except ValueError as exc:
            problems.append(f"{summary_path}: not valid JSON ({exc}); the run's summary is not shown")
        if not isinstance(summary, dict):
            summary = {}
    metrics: dict[int, dict[str, Any]] = {}
    for lineno, _, raw in read_lines(folder / "metrics.jsonl", problems):
        where = f"{folder / 'metrics.jsonl'}:{lineno}"
        try:
            row = parse_json(raw)
        except ValueError as exc:
            problems.append(f"{where}: not valid JSON ({exc}); skipped")
            continue
        try:
            metrics[int(row["step"])] = row  # a step logged again after a resume: the later row wins
        except (ValueError, KeyError, TypeError):
            problems.append(f"{where}: not a metrics row with a step; skipped")
    return Run(label, folder, [metrics[s] for s in sorted(metrics)], summary)


def read_benchmark(folder: Path, label: str, problems: list[str]) -> Benchmark:
    path = folder / "report.json"
    try:
        report = checked_report(parse_json(path.read_bytes()), path, problems)
    except ValueError as exc:
        problems.append(f"{path}: not valid JSON ({exc}); its tables are not shown")
        report = {}
    md = folder / "report.md"
    plots = sorted(p.name for p in folder.glob("*.png"))
    return Benchmark(label, folder, report, md.read_text() if md.is_file() else "", plots)


def checked_report(report: Any, path: Path, problems: list[str]) -> dict[str, Any]:
    """The report with each part the page lays out as a table row checked for its shape: a part of the wrong
    shape is named in the problems and left out (or shown empty). Values are kept as written: the page shows
    one that is not a number as such."""
    if not isinstance(report, dict):
        problems.append(f"{path}: not a JSON object; its tables are not shown")
        return {}
    checked = dict(report)
    for table, cells in (("policies", "dimensions"), ("comparisons", "differences")):
        rows = report.get(table, [])
        if not isinstance(rows, list):
            problems.append(f"{path}: {table} is not a list; left out")
            rows = []
        checked[table] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append(f"{path}: {table}[{i}] is not a mapping; left out")
                continue
            values = row.get(cells, {})
            if not isinstance(values, dict):
                problems.append(f"{path}: {table}[{i}].{cells} is not a mapping; shown empty")
                values = {}
            for name, value in values.items():
                if not isinstance(value, dict):
                    problems.append(f"{path}: {table}[{i}].{cells}.{name} is not a mapping; shown empty")
            checked[table].append({**row, cells: {k: v if isinstance(v, dict) else {} for k, v in values.items()}})
    return checked
