"""Data-parallel training with torch.distributed: the trainers run unchanged under a launcher.

    torchrun --nproc-per-node 2 .venv/bin/sotopia-env grpo --reward-model runs/rm/best --episodes e.jsonl
    accelerate launch --multi_gpu --num_processes 8 .venv/bin/sotopia-env bc --episodes e.jsonl

A launcher (torchrun, accelerate launch) starts one process per device and tells each its place in the
environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. `setup` joins the process group they
describe (gloo on CPU, NCCL on GPU, each rank on its own GPU); without them there is no group and every
function here is a no-op, so a plain single-process run is exactly what it was.

Each rank takes its `shard` of the global batch, computes its loss and gradients, and `average_gradients`
all-reduces the trainable (LoRA) gradients weighted by each rank's number of loss terms (sequences or
tokens), so K ranks with a share each take the same step as one process with the whole batch. Every rank
loads the checkpoint on resume; only the main rank (rank 0) writes checkpoints, metrics, adapters,
summaries and records. The data order depends on (seed, step) only, so a run resumes with any world size.

Why an all-reduce of the LoRA gradients and not a DistributedDataParallel wrapper: the trainable parameters
are a few MB, so DDP's bucketing and overlap of communication with the backward pass buy little, while its
wrapper would sit between the trainers and peft (adapter switching for the KL reference, save_pretrained,
several forward passes per step with gradient accumulation, which needs `no_sync`). One flat all-reduce
after the backward passes keeps the model as it is and makes the global-batch weighting explicit.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank (0..size-1), size, and its rank on its machine
    (the GPU it uses)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """The world the launcher described (one process when no launcher set WORLD_SIZE)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    env = os.environ
    return World(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def setup() -> World:
    """Join the process group the launcher's variables describe, once per process; returns the world.

    A single process (WORLD_SIZE unset or 1) joins nothing. NCCL when a GPU is visible (this rank takes GPU
    LOCAL_RANK, so the trainers' "cuda" device is its own), gloo on CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if size > 1 and missing:  # checked first: a library (in-process vLLM) may have made a group of its own
        raise RuntimeError(
            f"WORLD_SIZE={size} but {', '.join(missing)} not set: start the run with "
            "`torchrun --nproc-per-node K ...` or `accelerate launch --num_processes K ...`, which set them all"
        )
    w = world()
    if w.size == 1 or dist.is_initialized():
        return w
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", w.local_rank))
    else:
        dist.init_process_group("gloo")
    atexit.register(_leave)
    return world()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process trains with others (a process group of more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Whether this process is the one that writes (rank 0, or the only process)."""
    return world().main


def shard(items: Sequence[T], rank: int | None = None, size: int | None = None) -> list[T]:
    """This rank's share of a global batch: contiguous blocks whose sizes differ by at most one, the first
    ranks taking the larger ones. The shares of ranks 0..size-1, concatenated, are `items` in order, and they
    depend on (items, rank, size) only."""
    w = world()
    rank, size = w.rank if rank is None else rank, w.size if size is None else size
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a world of {size} processes (0..{size - 1})")
    base, extra = divmod(len(items), size)
    start = rank * base + min(rank, extra)
    return list(items[start : start + base + (rank < extra)])


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def average_gradients(params: Sequence[torch.nn.Parameter], weight: float) -> None:
    """Make every rank's gradients the global batch's: sum over ranks of (this rank's gradient x its weight),
    divided by the summed weight. `weight` is the number of loss terms the rank's loss averaged over (its
    sequences, or tokens); a rank with an empty share passes 0. One all-reduce of one flat float32 buffer.

    Every rank must call it with the same `params`, in the same order. Raises if no rank had data."""
    if not active():
        return
    device = _device()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1).to(device, torch.float32) for g in grads])
    flat = torch.cat([flat * weight, torch.tensor([float(weight)], device=device)])
    dist.all_reduce(flat)
    total = flat[-1].item()
    if total <= 0:
        raise ValueError("no rank had a loss term in this step's batch: the global batch is empty")
    flat = flat[:-1] / total
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.device, g.dtype)
        offset += n


def mean_over_ranks(values: dict[str, float], weight: float) -> dict[str, float]:
    """Weighted means of scalar statistics over ranks (each rank's values averaged over `weight` terms): what
    one process with the whole batch would report. One all-reduce; the values unchanged in a single process."""
    if not active():
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([values[k] * weight for k in keys] + [float(weight)], dtype=torch.float64, device=_device())
    dist.all_reduce(buf)
    total = buf[-1].item()
    return {k: (buf[i].item() / total if total else 0.0) for i, k in enumerate(keys)}


def gather(obj: T) -> list[T]:
    """Every rank's `obj` (picklable, small: rewards, counts), in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T) -> T:
    """The main rank's `obj` (picklable, small: a summary, a decision to stop), on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` run by the main rank alone, its result on every rank, or its exception raised on every rank: a
    check that refuses the run (e.g. provenance) stops all ranks, not the main one while the others wait."""
    if not active():
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as exc:  # handed to every rank, raised there
            outcome = (False, exc)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def broadcast_parameters(params: Sequence[torch.nn.Parameter]) -> None:
    """Copy the main rank's values of `params` to every rank, so all ranks start from one policy whatever
    their random state was when it was built (DDP does the same when it wraps a model)."""
    if not active():
        return
    device = _device()
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(device, torch.float32) for p in params])
        dist.broadcast(flat, src=0)
        offset = 0
        for p in params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def barrier() -> None:
    """Wait until every rank gets here (e.g. until the main rank has written a file the others read)."""
    if active():
        dist.barrier()
