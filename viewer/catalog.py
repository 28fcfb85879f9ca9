"""What `view` shows: the episodes of every file (one small `Entry` per episode, with where its line starts,
so a page reads only the episodes it shows), benchmark folders, training runs and an optional label file.
Bad lines are kept as `problems` (file, line, what is wrong) and left out, so one broken record never hides
the rest of a file.

Episode and label files may change while they are served (GRPO's resume, the judge and the labeller
rewrite them whole; collection appends): each request first compares every such file's device, inode, size
and modification time with those it was indexed at and re-indexes the ones that changed, and a record is
read only from the file version its entry was indexed from, so a page never shows another record.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sotopia_env import Episode

from .files import Benchmark, Run, Version, file_version, parse_json, read_benchmark, read_lines, read_run, version_of

# Files in run and benchmark folders that hold other records than episodes; never sniffed.
NOT_EPISODES = {"metrics.jsonl", "judge_cache.jsonl", "attribution_cache.jsonl"}
SKIPPED_DIRS = {"adapters", "adapter", "checkpoint", "best", "__pycache__"}  # model weights, not records
SELECTIONS_KEPT = 64  # filter combinations remembered (paging through one costs one pass)
MAX_DEPTH = 4  # folder levels searched below a path given on the command line
FACETS = ("file", "scenario", "category", "split", "model", "end_reason")
NOT_INDEXED: Version = (-1, -1, -1, -1)  # equal to no file's version, not even a missing file's (None)


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
    version: Version  # of the file when this entry was indexed: the record is read only from that version

    def facet(self, name: str) -> tuple[str, ...]:
        value = self.models if name == "model" else getattr(self, name)
        return value if isinstance(value, tuple) else (str(value),)


@dataclass
class Source:
    path: Path
    label: str  # shown in the list and its filter
    episodes: int = 0
    version: Version | None = NOT_INDEXED  # when last indexed (None: it could not be read)
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rewards: tuple[float, float] = (math.inf, -math.inf)  # lowest and highest speech reward


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


def _why(exc: ValidationError) -> str:
    err = exc.errors()[0]
    if err["type"] == "json_invalid":
        return f"not valid JSON ({err['ctx'].get('error', err['msg']) if err.get('ctx') else err['msg']})"
    where = ".".join(str(x) for x in err["loc"])
    return f"not an episode ({err['msg']}" + (f" at {where})" if where else ")")


def looks_like_episodes(path: Path, problems: list[str]) -> bool:
    """Whether a .jsonl file found in a folder holds episodes: its first line has an episode's fields. A
    first line that is not JSON at all is reported."""
    with path.open("rb") as f:
        first = f.readline(1 << 20)
    try:
        record = parse_json(first)
    except ValueError as exc:
        if first.strip():
            problems.append(f"{path}:1: not valid JSON ({exc}); the file is not read as episodes")
        return False
    return isinstance(record, dict) and {"scenario", "turns", "agents"} <= record.keys()


class Catalog:
    """Everything the pages show. Episode and label files are re-indexed when they change (`refresh`);
    benchmark folders and runs are read once, at start."""

    def __init__(self, paths: list[str | Path], labels: str | Path | None = None) -> None:
        self.sources: list[Source] = []
        self.entries: list[Entry] = []
        self.by_id: dict[str, list[int]] = {}
        self.start_problems: list[str] = []  # runs, benchmarks and sniffed files: read once
        self.skipped_files: list[str] = []
        self.runs: list[Run] = []
        self.benchmarks: list[Benchmark] = []
        self.labels: dict[tuple[str, int], dict[str, Any]] = {}
        self.labels_path = Path(labels) if labels is not None else None
        self.labels_version: Version | None = NOT_INDEXED
        self.label_problems: list[str] = []
        self.label_range: tuple[float, float] = (math.inf, -math.inf)
        self.reward_range: tuple[float, float] | None = None  # over the speech turns (or labels) shown
        self._selections: dict[Query, Selection] = {}  # answers for the files as indexed; cleared on a change
        self._lock = threading.RLock()  # pages are served from several threads
        self.roots = [Path(p) for p in paths]
        for root in self.roots:
            if root.is_dir():
                self._walk(root, root, 0)
            else:
                self._add_source(root, root.name)
        for bench in self.benchmarks:
            bench.policies = self._policy_sources(bench)
        self.refresh()

    @property
    def problems(self) -> list[str]:
        return self.start_problems + [p for s in self.sources for p in s.problems] + self.label_problems

    # --- reading -----------------------------------------------------------------------------------

    def _walk(self, root: Path, folder: Path, depth: int) -> None:
        names = sorted(os.listdir(folder))
        label = str(folder.relative_to(root.parent))
        if "report.json" in names:
            self.benchmarks.append(read_benchmark(folder, label, self.start_problems))
        if "metrics.jsonl" in names:
            self.runs.append(read_run(folder, label, self.start_problems))
        for name in names:
            path = folder / name
            if path.is_dir() and depth < MAX_DEPTH and name not in SKIPPED_DIRS and not name.startswith("."):
                self._walk(root, path, depth + 1)
            elif path.is_file() and name.endswith(".jsonl") and name not in NOT_EPISODES:
                if looks_like_episodes(path, self.start_problems):
                    self._add_source(path, str(path.relative_to(root.parent)))
                else:
                    self.skipped_files.append(str(path))

    def _add_source(self, path: Path, label: str) -> None:
        if any(s.path.resolve() == path.resolve() for s in self.sources):
            return  # named on the command line and found again in a folder named there too
        self.sources.append(Source(path, label))

    def _index(self, index: int) -> None:
        """(Re-)read one episode file: its entries, problems and reward range, from one version of it."""
        source = self.sources[index]
        source.entries, source.problems, source.rewards, source.version = [], [], (math.inf, -math.inf), None
        try:
            with source.path.open("rb") as f:  # the version and the bytes come from the same open file
                version = file_version(os.fstat(f.fileno()))
                data = f.read()
        except OSError as exc:
            source.problems.append(f"{source.path}: cannot be read ({exc.strerror or exc}); its episodes are not shown")
            source.episodes = 0
            return
        low, high = math.inf, -math.inf
        for lineno, offset, raw in read_lines(source.path, source.problems, data):
            try:
                episode = Episode.model_validate_json(raw)
            except ValidationError as exc:
                source.problems.append(f"{source.path}:{lineno}: {_why(exc)}; skipped")
                continue
            for turn in episode.turns:
                if turn.is_speech:
                    low, high = min(low, turn.reward), max(high, turn.reward)
            source.entries.append(
                Entry(
                    source=index,
                    file=source.label,
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
                    version=version,
                )
            )
        source.episodes, source.rewards, source.version = len(source.entries), (low, high), version

    def _policy_sources(self, bench: Benchmark) -> dict[str, int | None]:
        """Each benchmarked spec's episodes: benchmarks name a policy's folder `<slug>-<sha256(spec)[:8]>`."""
        found: dict[str, int | None] = {}
        for policy in bench.report.get("policies", []):
            spec = str(policy.get("spec", ""))
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
        self.labels, self.label_problems, self.labels_version = {}, [], None
        low, high = math.inf, -math.inf
        try:
            with path.open("rb") as f:
                version = file_version(os.fstat(f.fileno()))
                data = f.read()
        except OSError as exc:
            self.label_problems.append(f"{path}: cannot be read ({exc.strerror or exc}); no labels are shown")
            return
        for lineno, _, raw in read_lines(path, self.label_problems, data):
            try:
                row = parse_json(raw)
            except ValueError as exc:
                self.label_problems.append(f"{path}:{lineno}: not valid JSON ({exc}); skipped")
                continue
            try:
                key = (str(row["episode_id"]), int(row["turn_index"]))
            except (ValueError, KeyError, TypeError):
                self.label_problems.append(
                    f"{path}:{lineno}: not a label row (needs episode_id and turn_index); skipped"
                )
                continue
            self.labels[key] = row
            label = row.get("label")
            if isinstance(label, (int, float)) and not isinstance(label, bool):
                low, high = min(low, label), max(high, label)
        self.label_range, self.labels_version = (low, high), version

    # --- keeping up with the files -----------------------------------------------------------------

    def refresh(self) -> bool:
        """Re-index each episode file, and the label file, whose version changed since it was indexed.
        Cheap when nothing changed (one `stat` per file); True when something did."""
        with self._lock:
            changed = False
            for index, source in enumerate(self.sources):
                if version_of(source.path) != source.version:
                    self._index(index)
                    changed = True
            if self.labels_path is not None and version_of(self.labels_path) != self.labels_version:
                self._read_labels(self.labels_path)
                changed = True
            if changed:
                self._combine()
            return changed

    def _combine(self) -> None:
        """The flat list, the id index and the colour scale over every source, as now indexed."""
        self.entries = [e for s in self.sources for e in s.entries]
        by_id: dict[str, list[int]] = {}
        for i, entry in enumerate(self.entries):
            by_id.setdefault(entry.id, []).append(i)
        self.by_id = by_id
        # Labels, when a label file is given, replace the recorded rewards as the colour scale.
        if self.labels_path is not None:
            low, high = self.label_range
        else:
            low = min((s.rewards[0] for s in self.sources), default=math.inf)
            high = max((s.rewards[1] for s in self.sources), default=-math.inf)
        self.reward_range = (low, high) if low <= high else None
        self._selections = {}

    # --- queries -------------------------------------------------------------------------------------

    def select(self, query: Query) -> Selection:
        """The entries passing every filter, and per facet the counts of each value among the entries that
        pass all the other filters (what choosing that value would leave)."""
        with self._lock:
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

    def load(self, entry: Entry) -> Episode | None:
        """The entry's episode, read from the file version it was indexed from; None when the file has
        changed since (then `refresh` and find the episode again)."""
        try:
            with self.sources[entry.source].path.open("rb") as f:
                if file_version(os.fstat(f.fileno())) != entry.version:
                    return None
                f.seek(entry.offset)
                raw = f.read(entry.length)
        except OSError:
            return None
        try:
            episode = Episode.model_validate_json(raw)
        except ValidationError:  # rewritten in place within one clock tick at the same size: look again
            return None
        return episode if episode.id == entry.id else None

    def find(self, episode_id: str, copy: int = 0) -> Entry | None:
        """The episode with this id (the `copy`-th when several files hold it), or None."""
        with self._lock:
            found = self.by_id.get(episode_id, [])
            return self.entries[found[copy]] if 0 <= copy < len(found) else None

    def episode(self, episode_id: str, copy: int = 0) -> tuple[Entry, Episode] | None:
        """The entry and episode with this id as the files hold it now, or None when they do not."""
        for _ in range(3):  # a file rewritten again between the look-up and the read: look again
            self.refresh()
            entry = self.find(episode_id, copy)
            if entry is None:
                return None
            episode = self.load(entry)
            if episode is not None:
                return entry, episode
        raise RuntimeError(
            f"{self.sources[entry.source].path} changed three times while episode {episode_id!r} was read; "
            "reload the page when the writer is done"
        )
