"""Sotopia-RL's training files, written from our data and read back.

- Reward-model data: a JSON list of `{"input": <dialogue state>, "output": <utterance>, "value": <label>}`
  (some of its files name the state `instruction`). We write it from `sotopia-env label`'s rows (state =
  the observation prompt the speaker acted on, value = the scalar label), and `train-rm --data` reads it.
- GRPO data: a JSON list of `{"input": <dialogue state>, "output": <the utterance said there>}`. We write
  it from episodes (every perceivable action's state), and `grpo --prompts` reads its inputs as states.

The files carry no episode ids, so `train-rm` groups a Sotopia-RL file's rows by the dialogue their state
shows (scenario and the two characters) when it holds rows out.

    sotopia-env export-sotopia-rl --labels runs/labels.jsonl --episodes runs/episodes.jsonl --out runs/srl
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sotopia_env import Episode, read_episodes
from sotopia_env.jsonio import iter_jsonl, read_records, write_json_atomic
from sotopia_env.replay import utterance_states

from .configs import SotopiaRLExportConfig

RM_STATE_KEYS = ("input", "instruction")  # Sotopia-RL's files use either name for the dialogue state


def rm_records(rows: Iterable[dict[str, Any]], state_key: str = "input") -> list[dict[str, Any]]:
    """Sotopia-RL reward-model records from labelled rows (`prompt`, `utterance`, `label`); rows without a
    label (not normalised yet) are left out."""
    if state_key not in RM_STATE_KEYS:
        raise ValueError(f"state_key must be one of {RM_STATE_KEYS}, not {state_key!r}")
    return [
        {state_key: r["prompt"], "output": r["utterance"], "value": float(r["label"])}
        for r in rows
        if r.get("label") is not None
    ]


def grpo_records(episodes: Iterable[Episode]) -> list[dict[str, str]]:
    """Sotopia-RL GRPO records: each perceivable action's dialogue state and what was said there."""
    return [{"input": s.prompt, "output": s.action.argument} for ep in episodes for s in utterance_states(ep)]


def _records(path: str | Path, what: str) -> list[tuple[str, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    records = read_records(path)
    for where, record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
    return records


def is_rm_file(path: str | Path) -> bool:
    """Whether a data file is in Sotopia-RL's reward-model format (its first record has a state and `value`)."""
    records = _records(path, "reward-model data")
    return bool(records) and "value" in records[0][1] and any(k in records[0][1] for k in RM_STATE_KEYS)


def read_rm_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows `train-rm` trains on (`prompt`, `utterance`, `label`) from a Sotopia-RL reward-model file."""
    rows = []
    for where, record in _records(path, "reward-model data"):
        state = next((record[k] for k in RM_STATE_KEYS if k in record), None)
        value = record.get("value")
        if not isinstance(state, str) or not isinstance(record.get("output"), str):
            raise ValueError(f"{path}: {where}: needs a string 'input' (or 'instruction') and a string 'output'")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{path}: {where}: 'value' must be a number, not {value!r}")
        rows.append({"prompt": state, "utterance": record["output"], "label": float(value)})
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def read_prompts(path: str | Path) -> list[str]:
    """Dialogue states for `grpo --prompts`: our JSONL of `{"prompt": ...}` records, or Sotopia-RL's GRPO
    JSON (`input`, `output`), whose inputs are the states."""
    states = []
    for where, record in _records(path, "prompts"):
        state = record.get("prompt", record.get("input"))
        if not isinstance(state, str) or not state:
            raise ValueError(f"{path}: {where}: needs a 'prompt' (ours) or an 'input' (Sotopia-RL's GRPO file)")
        states.append(state)
    return states


def export_command(cfg: SotopiaRLExportConfig) -> int:
    out = Path(cfg.out)
    if cfg.labels:
        records = rm_records(iter_jsonl(cfg.labels), cfg.state_key)
        if not records:
            raise ValueError(f"{cfg.labels}: no labelled rows; produce them with `sotopia-env label`")
        write_json_atomic(out / "reward_model.json", records)
        print(f"{len(records)} reward-model records -> {out / 'reward_model.json'}")
    if cfg.episodes:
        records = grpo_records(read_episodes(cfg.episodes))
        write_json_atomic(out / "grpo.json", records)
        print(f"{len(records)} GRPO states -> {out / 'grpo.json'}")
    return 0
