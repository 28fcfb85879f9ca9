"""One checkpoint format for every trainer: the LoRA adapter (peft files), optimizer + LR schedule + torch
RNG state (`trainer_state.pt`) and the trainer's own JSON state (`state.json`: step, best metric, ...).

A new checkpoint is written beside the old one and swapped in by renames, so a crash at any moment leaves
one complete checkpoint on disk: the old one, the new one, or (between the two renames) the old one under
`<name>.old`, which `load_checkpoint` also finds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state()},
               tmp / "trainer_state.pt")
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
    return json.loads((path / "state.json").read_text())
