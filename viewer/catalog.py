"""What `view` shows, read once at start: the episodes of every file (one small `Entry` per episode, with
where its line starts, so a page reads only the episodes it shows), benchmark folders, training runs and
an optional label file. Bad lines are kept as `problems` (file, line, what is wrong) and left out, so one
broken record never hides the rest of a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sotopia_env import Episode
from sotopia_env.jsonio import is_complete_record

# Files in run and benchmark folders that hold other records than episodes; never sniffed.
NOT_EPISODES = {"metrics.jsonl", "judge_cache.jsonl", "attribution_cache.jsonl"}
SKIPPED_DIRS = {"adapters", "adapter", "checkpoint", "best", "__pycache__"}  # model weights, not records
SELECTIONS_KEPT = 64  # filter combinations remembered (paging through one costs one pass)
MAX_DEPTH = 4  # folder levels searched below a path given on the command line
FACETS = ("file", "scenario", "category", "split", "model", "end_reason")


@dataclass(frozen=True)
class Entry:
    """One indexed episode: enough to list and filter it without reading its line again."""

    source: int  # position in Catalog.sources
    file: str  # that source's label
    offset: int  # byte offset of its line in the file
    length: int
    line: int  # 1-based line number, for messages
    id: str
    scenario: str
    category: str
    split: str  # hard | other
    models: tuple[str, ...]
    characters: tuple[str, str]
    end_reason: str
    score: float | None  # mean of the judged agents' overall scores; None when not judged
    turns: int
    situation: str

    def facet(self, name: str) -> tuple[str, ...]:
        value = self.models if name == "model" else getattr(self, name)
        return value if isinstance(value, tuple) else (str(value),)


@dataclass
class Source:
    path: Path
    label: str  # shown in the list and its filter
    episodes: int = 0


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


@dataclass(frozen=True)
class Query:
    """The list's filters; empty means any."""

    file: str = ""
    scenario: str = ""
    category: str = ""
    split: str = ""
    model: str = ""
    end_reason: str = ""
    min_score: float | None = None
    max_score: float | None = None

    def failing(self, e: Entry) -> list[str]:
        """The filters this entry does not pass ("score" for the range)."""
        out = [f for f in FACETS if getattr(self, f) and getattr(self, f) not in e.facet(f)]
        low, high = self.min_score, self.max_score
        if (low is not None or high is not None) and (
            e.score is None or (low is not None and e.score < low) or (high is not None and e.score > high)
        ):
            out.append("score")
        return out


@dataclass
class Selection:
    entries: list[Entry]
    counts: dict[str, Counter]  # facet -> value -> episodes that pass every other filter and have that value
    judged: int  # matching episodes with a judge score


def mean_overall(episode: Episode) -> float | None:
    scores = [s.get("overall", sum(s.values()) / len(s)) for s in episode.judge_scores.values() if s]
    return sum(scores) / len(scores) if scores else None


def read_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw line) of each non-empty record, lines split on b"\\n" only. A last line
    without its newline counts when it is a whole record (`is_complete_record`, the rule the appender
    keeps); otherwise it is a write in progress, or one a crash cut short, and is reported and left out."""
    data = path.read_bytes()
    start, lineno = 0, 0
    while start < len(data):
        lineno += 1
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
            if data[start:].strip() and not is_complete_record(data[start:]):
                problems.append(
                    f"{path}:{lineno}: last line is not a whole record (a write in progress or cut short); skipped"
                )
                return
        if data[start:end].strip():
            yield lineno, start, data[start:end]
        start = end + 1


def _why(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return f"not valid JSON ({err['ctx'].get('error', err['msg']) if err.get('ctx') else err['msg']})"
    where = ".".join(str(x) for x in err["loc"])
    return f"not an episode ({err['msg']}" + (f" at {where})" if where else ")")


def looks_like_episodes(path: Path) -> bool:
    """Whether a .jsonl file found in a folder holds episodes: its first line has an episode's fields."""
    with path.open("rb") as f:
        first = f.readline(1 << 20)
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and {"scenario", "turns", "agents"} <= record.keys()


class Catalog:
    """Everything the pages show, indexed once."""

    def __init__(self, paths: list[str | Path], labels: str | Path | None = None) -> None:
        self.sources: list[Source] = []
        self.entries: list[Entry] = []
        self.by_id: dict[str, list[int]] = {}
        self.problems: list[str] = []
        self.skipped_files: list[str] = []
        self.runs: list[Run] = []
        self.benchmarks: list[Benchmark] = []
        self.labels: dict[tuple[str, int], dict[str, Any]] = {}
        self.reward_range: tuple[float, float] | None = None  # over the speech turns (or labels) shown
        self._low, self._high = math.inf, -math.inf
        self._selections: dict[Query, Selection] = {}  # the files do not change while served: remember answers
        self.roots = [Path(p) for p in paths]
        for root in self.roots:
            if root.is_dir():
                self._walk(root, root, 0)
            else:
                self._add_source(root, root.name)
        for bench in self.benchmarks:
            bench.policies = self._policy_sources(bench)
        if labels is not None:
            self._read_labels(Path(labels))
        if self._low <= self._high:
            self.reward_range = (self._low, self._high)

    # --- reading -----------------------------------------------------------------------------------

    def _walk(self, root: Path, folder: Path, depth: int) -> None:
        names = sorted(os.listdir(folder))
        label = str(folder.relative_to(root.parent))
        if "report.json" in names:
            self.benchmarks.append(self._read_benchmark(folder, label))
        if "metrics.jsonl" in names:
            summary_path, summary = folder / "summary.json", {}
            if summary_path.is_file():
                try:
                    summary = json.loads(summary_path.read_text())
                except ValueError as exc:
                    self.problems.append(f"{summary_path}: not valid JSON ({exc}); the run's summary is not shown")
            metrics: dict[int, dict[str, Any]] = {}
            for lineno, _, raw in read_lines(folder / "metrics.jsonl", self.problems):
                try:
                    row = json.loads(raw)
                    metrics[int(row["step"])] = row  # a step logged again after a resume: the later row wins
                except (ValueError, KeyError, TypeError):
                    self.problems.append(f"{folder / 'metrics.jsonl'}:{lineno}: not a metrics row with a step; skipped")
            self.runs.append(Run(label, folder, [metrics[s] for s in sorted(metrics)], summary))
        for name in names:
            path = folder / name
            if path.is_dir() and depth < MAX_DEPTH and name not in SKIPPED_DIRS and not name.startswith("."):
                self._walk(root, path, depth + 1)
            elif path.is_file() and name.endswith(".jsonl") and name not in NOT_EPISODES:
                if looks_like_episodes(path):
                    self._add_source(path, str(path.relative_to(root.parent)))
                else:
                    self.skipped_files.append(str(path))

    def _add_source(self, path: Path, label: str) -> None:
        if any(s.path.resolve() == path.resolve() for s in self.sources):
            return  # named on the command line and found again in a folder named there too
        index = len(self.sources)
        source = Source(path, label)
        self.sources.append(source)
        for lineno, offset, raw in read_lines(path, self.problems):
            try:
                episode = Episode.model_validate_json(raw)
            except ValidationError as exc:
                self.problems.append(f"{path}:{lineno}: {_why(exc)}; skipped")
                continue
            for turn in episode.turns:
                if turn.is_speech:
                    self._low, self._high = min(self._low, turn.reward), max(self._high, turn.reward)
            self.by_id.setdefault(episode.id, []).append(len(self.entries))
            self.entries.append(
                Entry(
                    source=index,
                    file=label,
                    offset=offset,
                    length=len(raw),
                    line=lineno,
                    id=episode.id,
                    scenario=episode.scenario.id,
                    category=episode.scenario.category,
                    split="hard" if episode.scenario.hard else "other",
                    models=tuple(dict.fromkeys(episode.agent_models.get(a, "") for a in episode.agents)),
                    characters=(episode.characters[0].name, episode.characters[1].name),
                    end_reason=episode.end_reason,
                    score=mean_overall(episode),
                    turns=sum(t.is_speech for t in episode.turns),
                    situation=episode.scenario.situation,
                )
            )
            source.episodes += 1

    def _read_benchmark(self, folder: Path, label: str) -> Benchmark:
        try:
            report = json.loads((folder / "report.json").read_text())
        except ValueError as exc:
            self.problems.append(f"{folder / 'report.json'}: not valid JSON ({exc}); its tables are not shown")
            report = {}
        md = folder / "report.md"
        plots = sorted(p.name for p in folder.glob("*.png"))
        return Benchmark(label, folder, report, md.read_text() if md.is_file() else "", plots)

    def _policy_sources(self, bench: Benchmark) -> dict[str, int | None]:
        """Each benchmarked spec's episodes: benchmarks name a policy's folder `<slug>-<sha256(spec)[:8]>`."""
        found: dict[str, int | None] = {}
        for policy in bench.report.get("policies", []):
            spec = policy.get("spec", "")
            suffix = "-" + hashlib.sha256(spec.encode()).hexdigest()[:8]
            found[spec] = next(
                (
                    i
                    for i, s in enumerate(self.sources)
                    if s.path.parent.parent == bench.path and s.path.parent.name.endswith(suffix)
                ),
                None,
            )
        return found

    def _read_labels(self, path: Path) -> None:
        self._low, self._high = math.inf, -math.inf  # labels replace the recorded rewards as the colour scale
        for lineno, _, raw in read_lines(path, self.problems):
            try:
                row = json.loads(raw)
                key = (str(row["episode_id"]), int(row["turn_index"]))
            except (ValueError, KeyError, TypeError):
                self.problems.append(f"{path}:{lineno}: not a label row (needs episode_id and turn_index); skipped")
                continue
            self.labels[key] = row
            if isinstance(row.get("label"), (int, float)):
                self._low, self._high = min(self._low, row["label"]), max(self._high, row["label"])

    # --- queries -------------------------------------------------------------------------------------

    def select(self, query: Query) -> Selection:
        """The entries passing every filter, and per facet the counts of each value among the entries that
        pass all the other filters (what choosing that value would leave)."""
        if query in self._selections:
            return self._selections[query]
        if len(self._selections) >= SELECTIONS_KEPT:
            self._selections.pop(next(iter(self._selections)))
        chosen: list[Entry] = []
        counts: dict[str, Counter] = {f: Counter() for f in FACETS}
        judged = 0
        for e in self.entries:
            failing = query.failing(e)
            if not failing:
                chosen.append(e)
                judged += e.score is not None
                for f in FACETS:
                    counts[f].update(e.facet(f))
            elif len(failing) == 1 and failing[0] != "score":
                counts[failing[0]].update(e.facet(failing[0]))
        self._selections[query] = Selection(chosen, counts, judged)
        return self._selections[query]

    def load(self, entry: Entry) -> Episode:
        with self.sources[entry.source].path.open("rb") as f:
            f.seek(entry.offset)
            return Episode.model_validate_json(f.read(entry.length))

    def find(self, episode_id: str, copy: int = 0) -> Entry | None:
        """The episode with this id (the `copy`-th when several files hold it), or None."""
        found = self.by_id.get(episode_id, [])
        return self.entries[found[copy]] if 0 <= copy < len(found) else None
