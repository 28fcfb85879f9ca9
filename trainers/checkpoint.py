"""One checkpoint format for every trainer: the LoRA adapter (peft files), optimizer + LR schedule + torch
RNG state (`trainer_state.pt`, tensors and plain values only: it loads with `weights_only=True`) and the
trainer's own JSON state (`state.json`: step, best metric, ...).

A new checkpoint is written beside the old one, synced, and swapped in by renames (`jsonio.replace_folder`),
so a crash at any moment leaves one complete checkpoint on disk: the old one, the new one, or (between the two
renames) the old one under `<name>.old`, which `load_checkpoint` also finds. A checkpoint whose adapter holds
NaN or Infinity is never written (`check_finite_parameters`): the last good one stays the one to resume from.

Metric rows (`metrics.jsonl`) are appended after each step, checkpoints only every few steps, so a run
killed between the two has logged steps that its resume will run again: `resume_metrics` cuts them off
when a run starts (`resume_records` does the same for other per-step records), and `read_metrics` gives one
row per step for summaries. Records a run would drop while finding no checkpoint at all are copied aside
first (`<file>.orphaned-<time>`), with a warning: they may be all that is left of a run.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sotopia_env.jsonio import (
    complete_folder,
    iter_jsonl,
    read_json,
    replace_folder,
    write_json_atomic,
    write_jsonl_atomic,
)
from trainers import distributed


def check_finite_parameters(model: Any, where: str) -> None:
    """Raise a ValueError when a trainable parameter (the adapter, a trained head) holds NaN or Infinity:
    such weights must not be saved. `where` says what was about to be saved, e.g. "checkpoint of step 12"."""
    for name, param in model.named_parameters():
        if param.requires_grad:
            bad = (~torch.isfinite(param.detach())).sum().item()
            if bad:
                raise ValueError(
                    f"{where}: not saved, because the trainable parameter {name!r} holds {bad} NaN or infinite "
                    f"value(s) of {param.numel()}: training diverged. The last checkpoint saved before it stays the "
                    "one to resume from; lower --lr (or --max-grad-norm where the command has it) and rerun"
                )


def save_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any, state: dict[str, Any]) -> None:
    path = Path(path)
    check_finite_parameters(model, f"{path}: the checkpoint of step {state.get('step')}")

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            folder / "trainer_state.pt",
        )
        write_json_atomic(folder / "state.json", state, indent=None)

    replace_folder(path, write)


def load_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any] | None:
    """Restore adapter, optimizer, schedule and RNG in place; returns the saved state, or None if there is
    no checkpoint."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = complete_folder(path)
    if path is None or not (path / "state.json").exists():
        return None
    try:
        saved = torch.load(path / "trainer_state.pt", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError (something other than tensors and plain values), or a bad file
        raise ValueError(
            f"{path / 'trainer_state.pt'}: cannot load it with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); save_checkpoint writes only tensors and plain "
            "values, so this file came from elsewhere. Delete the folder to start the run over, or use a new --out"
        ) from exc
    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"])
    return read_json(path / "state.json")


def resume_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any) -> dict[str, Any] | None:
    """`load_checkpoint` for a run that may span several processes: the main rank alone reads its checkpoint, and
    every rank gets its step, optimizer, schedule and RNG state from it (the adapter follows with
    `distributed.broadcast_parameters`, which every trainer calls next). So ranks without a shared disk, whose
    own folders hold no checkpoint, resume at the main rank's step instead of starting over (and hanging in the
    first collective the others reach at another step). One process: `load_checkpoint` itself."""
    if not distributed.active():
        return load_checkpoint(path, model, optimizer, schedule)
    loaded = None
    if distributed.is_main():
        state = load_checkpoint(path, model, optimizer, schedule)
        if state is not None:
            loaded = (state, optimizer.state_dict(), schedule.state_dict(), torch.get_rng_state())
    loaded = distributed.broadcast(loaded)
    if loaded is None:
        return None
    state, optimizer_state, schedule_state, rng = loaded
    if not distributed.is_main():
        optimizer.load_state_dict(optimizer_state)
        schedule.load_state_dict(schedule_state)
        torch.set_rng_state(rng)
    return state


def resume_records(path: Path, step: int, step_of: Callable[[dict[str, Any]], int], what: str) -> None:
    """Keep only the records of steps <= `step` (`step_of(record)`; `step` is the checkpoint the run resumes
    from, 0 for a fresh start): the run writes the later steps again. The file is replaced atomically.

    With no checkpoint (`step` 0), records of later steps mean a run crashed before its first checkpoint, or
    its checkpoint is gone: they are copied to `<file>.orphaned-<time>` and a warning line says so."""
    path = Path(path)
    if not path.exists():
        return
    records = list(iter_jsonl(path))
    kept = [r for r in records if step_of(r) <= step]
    if len(kept) == len(records):
        return
    if step == 0:
        copy = path.with_name(f"{path.name}.orphaned-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copy2(path, copy)
        steps = sorted({step_of(r) for r in records if step_of(r) > 0})
        print(
            f"warning: {path}: {len(records) - len(kept)} {what} of steps {steps[0]}..{steps[-1]} but no checkpoint "
            f"to resume from (a run that stopped before its first checkpoint, or a checkpoint deleted); the run "
            f"starts at step 0 and writes them again, the old ones are kept in {copy}",
            file=sys.stderr,
        )
    write_jsonl_atomic(path, kept)


def resume_metrics(path: Path, step: int) -> None:
    """Keep only the metric rows of steps <= `step` (see `resume_records`)."""
    resume_records(path, step, lambda row: row["step"], "metric rows")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metric rows in step order, one per step: where a step was logged twice (a file written before
    `resume_metrics` existed), the later row wins."""
    by_step = {r["step"]: r for r in iter_jsonl(path)}
    return [by_step[s] for s in sorted(by_step)]
