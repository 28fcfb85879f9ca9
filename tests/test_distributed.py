"""Data-parallel training (trainers.distributed) on this CPU with gloo.

The helpers are checked on hand-worked numbers in two spawned processes. The trainers are launched the way a
user launches them, `torchrun --standalone --nproc-per-node 2 -m benchmarks.cli <command>`, against the
plain single-process command: the same global batch and seeds must give the same adapter.

Tolerance. Two runs whose gradients agree to float32 rounding (the ranks' batches are padded to other widths,
so the sums run in another order) still differ in a few adapter entries: AdamW divides each entry's update by
its gradient's magnitude, so an entry whose gradient is ~0 takes a step of about +-lr whose sign is rounding
noise. The comparison therefore asks that every tensor agree to 0.3% in norm, that at most 0.1% of all entries
differ by more than 1e-5, and that the logged global figures (loss, gradient norm, KL, rewards) agree to 1e-4
relative. A rank weighted wrongly, a missing all-reduce or a rank training on other data moves whole tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from rewards.reward_model import RewardModel, RewardModelConfig
from trainers import distributed
from trainers.distributed import shard

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- the helpers, on hand-worked numbers ----------------------------------------------------------


def test_shard_gives_each_rank_a_contiguous_near_equal_block_of_the_global_batch():
    items = ["a", "b", "c", "d", "e"]
    assert [shard(items, r, 2) for r in range(2)] == [["a", "b", "c"], ["d", "e"]]
    assert [shard(items, r, 3) for r in range(3)] == [["a", "b"], ["c", "d"], ["e"]]
    assert [shard(["a"], r, 2) for r in range(2)] == [["a"], []]  # a rank may get nothing
    assert shard(items, 0, 1) == items  # one process: the whole batch
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard(items, 2, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _helpers_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    world = distributed.setup()
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(1))
    # Rank 0 averaged its loss over 3 terms, rank 1 over 1; rank 1 has no gradient for q (it never used it).
    p.grad = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([5.0, -2.0])
    q.grad = torch.tensor([4.0]) if rank == 0 else None
    distributed.average_gradients([p, q], 3 if rank == 0 else 1)
    stats = distributed.mean_over_ranks({"loss": 0.5 if rank == 0 else 2.5}, 3 if rank == 0 else 1)
    start = torch.nn.Parameter(torch.full((2,), float(rank + 7)))
    distributed.broadcast_parameters([start])
    result = {
        "world": [world.rank, world.size, world.main],
        "p": p.grad.tolist(),
        "q": q.grad.tolist(),
        "loss": stats["loss"],
        "gathered": distributed.gather(rank * 10),
        "broadcast": distributed.broadcast(f"from {rank}"),
        "start": start.tolist(),
    }
    Path(out, f"{rank}.json").write_text(json.dumps(result))


def test_gradients_are_averaged_over_ranks_weighted_by_their_loss_terms(tmp_path):
    mp.start_processes(_helpers_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0["world"] == [0, 2, True] and r1["world"] == [1, 2, False]
    for r in (r0, r1):
        # p: (3 x [1, 2] + 1 x [5, -2]) / 4 = [2, 1]; q: (3 x 4 + 1 x 0) / 4 = 3; loss: (3 x 0.5 + 2.5) / 4 = 1
        assert r["p"] == [2.0, 1.0] and r["q"] == [3.0] and r["loss"] == 1.0
        assert r["gathered"] == [0, 10] and r["broadcast"] == "from 0" and r["start"] == [7.0, 7.0]


def test_without_a_launcher_there_is_one_process_and_nothing_is_reduced(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.setup() == distributed.World(0, 1, 0) and distributed.is_main()
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.tensor([2.0])
    distributed.average_gradients([p], 5)
    assert p.grad.tolist() == [2.0] and distributed.gather("x") == ["x"] and distributed.broadcast(3) == 3


def test_a_world_without_a_rendezvous_address_asks_for_a_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        distributed.setup()


# --- the trainers under torchrun ------------------------------------------------------------------


def command(args: list[str], processes: int) -> list[str]:
    if processes == 1:  # the plain single-process command, no launcher
        return [sys.executable, "-m", "benchmarks.cli", *args]
    return [str(TORCHRUN), "--standalone", f"--nproc-per-node={processes}", "-m", "benchmarks.cli", *args]


# One thread per process: the machine has 2 cores, and the runs compare results, not speed.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args: list[str], processes: int) -> None:
    done = subprocess.run(command(args, processes), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def run_until_checkpoint(args: list[str], processes: int, out: Path, step: int) -> None:
    """Start the run and kill it (SIGKILL, launcher and workers) as soon as the checkpoint of `step` is on disk."""
    proc = subprocess.Popen(
        command(args, processes),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = out / "checkpoint" / "state.json"
    try:
        while not (state.exists() and json.loads(state.read_text())["step"] >= step):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            time.sleep(0.05)
    finally:
        # torchrun may start its workers in sessions of their own: kill each descendant by id, not the group.
        import psutil

        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in family:
            member.kill()
        psutil.wait_procs(family, timeout=30)
        proc.wait()


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).norm() <= 3e-3 * a[key].norm() + 1e-7, key
    far = sum(int(((a[k] - b[k]).abs() > 1e-5).sum()) for k in a)
    assert far <= 1e-3 * sum(t.numel() for t in a.values()), far


def assert_same_metrics(a: list[dict], b: list[dict], tolerances: dict[str, tuple[float, float]]) -> None:
    """tolerances: {figure: (relative, absolute)}."""
    assert [r["step"] for r in a] == [r["step"] for r in b]  # one row per step: only rank 0 logs
    for ra, rb in zip(a, b):
        for key, (rel, abs_) in tolerances.items():
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=abs_), (ra["step"], key)


# The gradient norm (of the all-reduced gradient), rewards and token counts agree to rounding; the KL of step 2
# carries the AdamW noise of step 1's adapter (measured: 1.2e-4 relative); the loss of a step on its own
# samples is ~0 (advantages sum to 0 per group, ratios are 1), so only its absolute size is compared: to 1e-6,
# since float32 rounding over advantages of size ~1 leaves up to 2.2e-7 between the two runs (measured over three
# sessions, each with its own random reward model).
GRPO_FIGURES = {
    "reward_mean": (1e-4, 0.0),
    "reward_std": (1e-4, 0.0),
    "grad_norm": (1e-4, 0.0),
    "new_tokens": (0.0, 0.0),
    "lr": (1e-9, 0.0),
    "kl": (1e-3, 1e-12),
    "loss": (0.0, 1e-6),
}


@pytest.fixture(scope="module")
def grpo_setup(embedded_dir, tmp_path_factory):
    from test_trainers import judged_episodes

    root = tmp_path_factory.mktemp("ddp-grpo")
    # 9 dialogue states in two scenarios (6 of neg-used-bike, 3 of com-promotion): one scenario is held out whole
    # (1 of its states evaluated), the other's states are trained on.
    judged_episodes(root / "episodes.jsonl", [(1, 9), (5, 2), (7, 3)])
    torch.manual_seed(0)  # the same untrained reward model (its score head is random) in every session
    RewardModel.create(RewardModelConfig(max_length=384, lora_layers=2)).save(root / "rm")
    # 3 states per step over 2 ranks: shares of 2 and 1 groups, so a rank weighted by anything but its
    # sequences would change the step.
    args = (
        f"grpo --reward-model {root / 'rm'} --episodes {root / 'episodes.jsonl'} --steps 2 --prompts-per-step 3 "
        "--group-size 2 --max-new-tokens 8 --max-prompt-tokens 320 --lr 5e-3 --lora-layers 2 --heldout-states 1 "
        "--eval-samples 1 --save-every 1 --no-tensorboard"
    ).split()
    one, two = root / "one", root / "two"
    run([*args, "--out", str(one)], 1)
    run([*args, "--out", str(two)], 2)
    return root, args, one, two


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_grpo_adapter_as_one_process(grpo_setup):
    _, _, one, two = grpo_setup
    assert_same_adapter(adapter(one), adapter(two))
    assert_same_metrics(metrics(one), metrics(two), GRPO_FIGURES)
    assert metrics(two)[0]["new_tokens"] > 0
    s1, s2 = (json.loads((out / "summary.json").read_text()) for out in (one, two))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s2["heldout_reward_before"] == pytest.approx(s1["heldout_reward_before"], rel=1e-4)


def run_apart(args: list[str], out: Path, wrapper: Path) -> None:
    """Two processes that share no disk: rank 1 runs in a mount namespace of its own where `out` is an empty
    folder (a tmpfs mounted over it), as on a second machine; rank 0 sees the real one. Needs root (unshare)."""
    wrapper.write_text(
        "#!/bin/bash\n"
        'if [ "$RANK" = "1" ]; then\n'
        f'  exec unshare -m bash -c \'mount -t tmpfs none "{out}" && exec "$@"\' rank1 '
        f'{sys.executable} -m benchmarks.cli "$@"\n'
        "fi\n"
        f'exec {sys.executable} -m benchmarks.cli "$@"\n'
    )
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", "--no-python", "bash", str(wrapper), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
def test_a_killed_two_process_grpo_run_resumes_with_two_or_one_process_to_the_same_adapter(grpo_setup, tmp_path):
    """The two-process resume runs without a shared disk (rank 1 sees an empty output folder): the main rank reads
    the checkpoint and hands every rank its step, optimizer, schedule and adapter. Before, rank 1 started over at
    step 0 while rank 0 resumed at step 1, and the ranks waited on each other's collectives."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a rank without the shared disk is made with unshare -m, which needs root")
    root, args, one, two = grpo_setup
    killed = root / "killed"
    run_until_checkpoint([*args, "--out", str(killed)], 2, killed, step=1)
    assert not (killed / "summary.json").exists()  # it was stopped mid-run, not after the end
    shutil.copytree(killed, root / "killed-1")
    run_apart([*args, "--out", str(killed)], killed, tmp_path / "rank.sh")
    run([*args, "--out", str(root / "killed-1")], 1)
    for resumed, reference in ((killed, two), (root / "killed-1", one)):
        assert_same_adapter(adapter(reference), adapter(resumed))
        assert_same_metrics(metrics(reference), metrics(resumed), GRPO_FIGURES)


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_bc_adapter_as_one_process(embedded_dir, tmp_path):
    from test_trainers import judged_episodes

    judged_episodes(tmp_path / "episodes.jsonl", [(1, 9), (5, 2)])  # 6 turns to learn from
    # Global batches of 5 and 1 over 2 ranks: shares of 3 and 2 examples with different reply-token counts,
    # then 1 and none (rank 1 still joins the all-reduce, with weight 0).
    args = (
        f"bc --episodes {tmp_path / 'episodes.jsonl'} --epochs 1 --batch-size 5 --max-length 320 --lora-layers 2 "
        "--save-every 1"
    ).split()
    run([*args, "--out", str(tmp_path / "one")], 1)
    run([*args, "--out", str(tmp_path / "two")], 2)
    assert_same_adapter(adapter(tmp_path / "one"), adapter(tmp_path / "two"))
    assert_same_metrics(metrics(tmp_path / "one"), metrics(tmp_path / "two"), {"loss": (1e-4, 0.0), "lr": (1e-9, 0.0)})
    assert len(metrics(tmp_path / "two")) == 2  # ceil(6 / 5) steps, one row each


# --- GRPO in the env under torchrun -----------------------------------------------------------------


def records(path: Path) -> list[dict]:
    """An episodes file's records without their write times, their ids without the run's id (which OUT/config.json
    records: two runs' ids differ by it)."""
    run_id = json.loads((path.parent / "config.json").read_text())["run_id"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("created_at")
        assert row["id"].startswith(f"{run_id}|"), row["id"]
        row["id"] = row["id"][len(run_id) + 1 :]
    return rows


def assert_same_records(a: list[dict], b: list[dict]) -> None:
    """Equal records, floats (the env's rewards) to 1e-5: the reward model scores other batches on each rank."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert same(ra, rb), ra["id"]


def same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return b == pytest.approx(a, rel=1e-4, abs=1e-5)
    return a == b


ENV_FIGURES = {
    "reward_mean": (1e-4, 0.0),
    "grad_norm": (1e-4, 0.0),
    "trained_utterances": (0.0, 0.0),
    "episodes": (0.0, 0.0),
    "new_tokens": (0.0, 0.0),
    "lr": (1e-9, 0.0),
    "kl": (1e-3, 1e-12),
    "loss": (0.0, 1e-6),
}


@pytest.mark.slow
def test_two_gloo_processes_play_and_train_grpo_in_the_env_as_one_process(embedded_dir, tmp_path):
    torch.manual_seed(0)  # the same untrained reward model (its score head is random) in every session
    RewardModel.create(RewardModelConfig(max_length=320, lora_layers=2)).save(tmp_path / "rm")
    # 3 starts per step over 2 ranks: 2 episodes and 1, so 4 groups against 2 (one per learner turn, seats
    # alternating); 2 held-out starts, one per rank. Turn credit against the scripted partner, 2 turns an episode.
    args = (
        f"grpo --rollout env --credit turn --partner scripted --reward-model {tmp_path / 'rm'} --steps 2 "
        "--prompts-per-step 3 --group-size 2 --max-turns 2 --max-new-tokens 8 --max-prompt-tokens 288 --lr 5e-3 "
        "--lora-layers 2 --heldout-states 2 --save-every 1 --no-tensorboard"
    ).split()
    one, two = tmp_path / "one", tmp_path / "two"
    run([*args, "--out", str(one)], 1)
    run([*args, "--out", str(two)], 2)
    assert_same_adapter(adapter(one), adapter(two))
    assert_same_metrics(metrics(one), metrics(two), ENV_FIGURES)
    # The main rank wrote every rank's dialogues, in start order: the file one process writes.
    for name in ("episodes.jsonl", "eval_before.jsonl", "eval_after.jsonl"):
        assert_same_records(records(one / name), records(two / name))
    played = records(two / "episodes.jsonl")
    assert [e["id"] for e in played] == [f"train|{s}|{i}" for s in (0, 1) for i in range(3)]
    assert all(e["meta"]["training"]["candidates"] for e in played)  # every episode had a learner turn, G candidates
    assert [e["id"] for e in records(two / "eval_after.jsonl")] == ["eval|0|after", "eval|1|after"]
    s1, s2 = (json.loads((out / "summary.json").read_text()) for out in (one, two))
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    for key in ("heldout_reward_before", "heldout_reward_after"):
        assert s2[key] == pytest.approx(s1[key], rel=1e-4)
