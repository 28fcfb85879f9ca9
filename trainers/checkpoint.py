"""One checkpoint format for every trainer: the LoRA adapter (peft files), optimizer + LR schedule + torch
RNG state (`trainer_state.pt`) and the trainer's own JSON state (`state.json`: step, best metric, ...).

A new checkpoint is written beside the old one and swapped in by renames, so a crash at any moment leaves
one complete checkpoint on disk: the old one, the new one, or (between the two renames) the old one under
`<name>.old`, which `load_checkpoint` also finds.

Metric rows (`metrics.jsonl`) are appended after each step, checkpoints only every few steps, so a run
killed between the two has logged steps that its resume will run again: `resume_metrics` cuts them off
when a run starts, and `read_metrics` gives one row per step for summaries.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from sotopia_env.jsonio import iter_jsonl, read_json, write_jsonl_atomic


def save_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state()},
        tmp / "trainer_state.pt",
    )
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any] | None:
    """Restore adapter, optimizer, schedule and RNG in place; returns the saved state, or None if there is
    no checkpoint."""
    path = Path(path)
    if not (path / "state.json").exists():
        path = path.with_name(path.name + ".old")
        if not (path / "state.json").exists():
            return None
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    saved = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"])
    return read_json(path / "state.json")


def resume_metrics(path: Path, step: int) -> None:
    """Keep only the metric rows of steps <= `step` (the checkpoint the run resumes from, 0 for a fresh
    start): the run logs the later steps again. The file is replaced atomically."""
    path = Path(path)
    if not path.exists():
        return
    rows = list(iter_jsonl(path))
    kept = [r for r in rows if r["step"] <= step]
    if len(kept) < len(rows):
        write_jsonl_atomic(path, kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metric rows in step order, one per step: where a step was logged twice (a file written before
    `resume_metrics` existed), the later row wins."""
    by_step = {r["step"]: r for r in iter_jsonl(path)}
    return [by_step[s] for s in sorted(by_step)]
