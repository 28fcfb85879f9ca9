"""Train the reward model: MSE on (dialogue state, utterance) -> scalar label, LoRA, early stopping.

    sotopia-env train-rm --data runs/labels.jsonl --out runs/rm

The data is `sotopia-env label`'s output (any JSONL with `prompt`, `utterance` and `label` works). A
held-out split (by episode, or for rows without one by dialogue read off the state, so turns of one dialogue
never straddle it) is scored every `eval_every`
steps; the best adapter by held-out MSE is kept in OUT/best and training stops after `patience`
evaluations without improvement. OUT/checkpoint holds the latest adapter, optimizer, step and data order,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rewards.reward_model import RewardModel, RewardModelConfig
from rewards.sotopia_rl import is_rm_file, read_rm_file
from sotopia_env.jsonio import append_jsonl, iter_jsonl, replace_folder, write_json_atomic
from sotopia_env.observation import dialogue_of
from sotopia_env.provenance import check_same_settings
from trainers import distributed
from trainers.checkpoint import check_finite_parameters, resume_checkpoint, resume_metrics, save_checkpoint
from trainers.rm_config import NOT_COMPARED, RMTrainConfig  # noqa: F401 - re-exported: the trainer's config


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """`sotopia-env label`'s rows, or a Sotopia-RL reward-model file (`input`/`instruction`, `output`, `value`)."""
    if Path(path).suffix == ".json" and is_rm_file(path):
        return read_rm_file(path)
    rows = [r for r in iter_jsonl(path) if r.get("label") is not None]
    if not rows:
        raise ValueError(f"{path}: no rows with a 'label'; produce them with sotopia-env label")
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), (str, list)) or not isinstance(r.get("utterance"), str):
            raise ValueError(f"{path}: row {i + 1} needs 'prompt' and 'utterance'")
    return rows


def dialogue_key(row: dict[str, Any], index: int) -> str:
    """What a row's held-out group is: its episode (`episode_id`), or for rows that carry none (Sotopia-RL's
    files) its dialogue read off the state, scenario and the two characters (`observation.dialogue_of`), so the
    turns of one dialogue, seen from either seat, never straddle the split. A state of another shape is its own."""
    if row.get("episode_id") is not None:
        return f"episode:{row['episode_id']}"
    prompt = row["prompt"] if isinstance(row["prompt"], str) else json.dumps(row["prompt"])
    return dialogue_of(prompt) or f"row:{index}"


def split_rows(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(training, held-out) rows: a seeded `fraction` of the dialogues (`dialogue_key`), whole, held out."""
    keys = [dialogue_key(r, i) for i, r in enumerate(rows)]
    groups = sorted(set(keys))
    random.Random(seed).shuffle(groups)
    n_held = max(1, round(len(groups) * fraction)) if len(groups) > 1 else 0
    held = set(groups[:n_held])
    train = [r for r, k in zip(rows, keys) if k not in held]
    heldout = [r for r, k in zip(rows, keys) if k in held]
    return train, heldout


def evaluate(rm: RewardModel, rows: list[dict[str, Any]]) -> dict[str, float]:
    rm.clear_cache()
    preds = rm.score([r["prompt"] for r in rows], [r["utterance"] for r in rows], batch_size=16)
    labels = [float(r["label"]) for r in rows]
    mse = sum((p - y) ** 2 for p, y in zip(preds, labels)) / len(rows)
    return {"mse": mse, "pearson": pearson(preds, labels)}


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy) if sx and sy else 0.0


def train_reward_model(cfg: RMTrainConfig, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    cfg.validate()
    world = distributed.setup()  # a process group under torchrun / accelerate launch, else nothing
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = asdict(cfg)
    distributed.on_main(
        lambda: check_same_settings(
            out, out / "train_config.json", settings, ignore=NOT_COMPARED, override=cfg.resume_anyway
        )
    )
    rows = load_rows(cfg.data)
    train, heldout = split_rows(rows, cfg.heldout_fraction, cfg.seed)
    if not heldout:
        raise ValueError("need at least two episodes in the data for a held-out split")
    rm_config = RewardModelConfig(
        base=cfg.base, lora_r=cfg.lora_r, lora_layers=cfg.lora_layers, max_length=cfg.max_length
    )
    rm = RewardModel.create(rm_config)
    params = [p for p in rm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / max(1, total))
    )

    # Resume: adapter weights, optimizer, schedule, step and best metric from the last checkpoint.
    ckpt = out / "checkpoint"
    state = resume_checkpoint(ckpt, rm.model, optimizer, schedule) or {
        "step": 0,
        "best_mse": None,  # no held-out evaluation yet (JSON has no Infinity)
        "bad_evals": 0,
    }
    distributed.broadcast_parameters(params)  # every rank starts from the main rank's adapter and head
    metrics_path = out / "metrics.jsonl"
    if world.main:
        resume_metrics(metrics_path, state["step"])  # steps logged after the checkpoint run again below
    encoded = rm.encode([r["prompt"] for r in train], [r["utterance"] for r in train])
    labels = torch.tensor([float(r["label"]) for r in train])
    started = time.monotonic()
    bar = tqdm(total=total, initial=state["step"], desc="train-rm", unit="step", disable=not (progress and world.main))
    stop = ""
    rm.model.train()
    while state["step"] < total and not stop:
        epoch, within = divmod(state["step"], steps_per_epoch)
        order = list(range(len(train)))
        random.Random(cfg.seed + epoch).shuffle(order)  # same order after a resume
        idx = distributed.shard(order[within * cfg.batch_size : (within + 1) * cfg.batch_size])  # this rank's rows
        loss_value = 0.0
        if idx:  # the last batch of an epoch may leave a rank without rows
            pred = rm.forward([encoded[i] for i in idx])
            loss = torch.nn.functional.mse_loss(pred, labels[idx].to(pred.device))
            loss.backward()
            loss_value = loss.item()
        distributed.average_gradients(params, len(idx))  # the global batch's mean over its rows
        loss_value = distributed.mean_over_ranks({"loss": loss_value}, len(idx))["loss"]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        record: dict[str, Any] = {"step": state["step"], "loss": loss_value, "lr": schedule.get_last_lr()[0]}
        if (state["step"] % cfg.eval_every == 0 or state["step"] == total) and world.main:
            held = evaluate(rm, heldout)
            rm.model.train()
            record.update({"heldout_mse": held["mse"], "heldout_pearson": held["pearson"]})
            if state["best_mse"] is None or held["mse"] < state["best_mse"]:
                state.update(best_mse=held["mse"], best_pearson=held["pearson"], best_step=state["step"], bad_evals=0)
                check_finite_parameters(rm.model, f"{out / 'best'}: the best reward model, of step {state['step']}")
                replace_folder(out / "best", rm.save)  # written beside, synced, renamed: never half a model
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= cfg.patience:
                    stop = f"no held-out improvement in {cfg.patience} evaluations"
            save_checkpoint(ckpt, rm.model, optimizer, schedule, state)
        if world.main and cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes:
            stop = stop or f"time limit of {cfg.max_minutes} minutes"
            save_checkpoint(ckpt, rm.model, optimizer, schedule, state)
        if world.main:
            append_jsonl(metrics_path, record)
        # The main rank evaluates and keeps the clock; every rank follows its decision to stop.
        state, stop = distributed.broadcast((state, stop))
    bar.close()
    summary = {
        "steps": state["step"],
        "best_step": state.get("best_step"),
        "heldout_mse": state["best_mse"],
        "heldout_pearson": state.get("best_pearson"),
        "train_rows": len(train),
        "heldout_rows": len(heldout),
        "stopped": stop or "completed",
        "model": str(out / "best"),
        "world_size": world.size,
    }
    if world.main:
        write_json_atomic(out / "summary.json", summary)
    return summary
