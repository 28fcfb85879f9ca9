"""The trainers' log-prob pass (forward and backward through the LoRA policy), three ways side by side in one run.

    python -m benchmarks.logprob_pass [--prompt-tokens 288] [--completion-tokens 24] [--repeats 3] [--json ...]

The batch is the one episode credit trains in the learning tests: 2 starts x G=4 episodes x 2 learner turns = 16
utterances, each a prompt of up to `--prompt-tokens` (a spread of lengths, as real dialogue states have) and a
reply of up to `--completion-tokens`. The G episodes of a start share their first learner turn's prompt; their
second turns have prompts of their own. Rows:

- full logits: every prompt + reply as one sequence with the LM head on every position (the trainers' pass before
  2026-12-04, and what a causal LM computes when given `labels`);
- plain: every prompt + reply as one sequence, the LM head on the reply positions only (`sequence_logprobs`);
- shared: each distinct prompt once, its KV cache given to its replies (`grouped_logprobs`, uneven groups: 2
  prompts with 4 replies and 8 with one).

Each is timed `--repeats` times after a warm-up; the median is reported, with its ratio to the first row. The
embedded SmolLM2 with the GRPO tests' LoRA (8 top layers), float32 on a CPU, bfloat16 on a GPU. A benchmark: it
measures and prints; nothing passes or fails.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from typing import Any

from sotopia_env.jsonio import write_json_atomic


def full_logits(model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> list[Any]:
    """Log-probs of the replies with the LM head run on every position (right padding, as before)."""
    from trainers.logprobs import padded, token_logprobs

    ids, mask = padded([p + c for p, c in zip(prompts, completions)], pad_id, next(model.parameters()).device, False)
    logits = model(input_ids=ids, attention_mask=mask).logits
    return [
        token_logprobs(logits[i, len(p) - 1 : len(p) - 1 + len(c)], c, 1.0)
        for i, (p, c) in enumerate(zip(prompts, completions))
    ]


def episode_batch(prompt_tokens: int, completion_tokens: int, vocab: int, seed: int = 0) -> tuple[list, list]:
    """(prompts, groups): 2 shared first-turn prompts with 4 replies each, 8 second-turn prompts with one."""
    rng = random.Random(seed)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(100, vocab) for _ in range(n)]

    prompts, groups = [], []
    for _ in range(2):  # starts: the first learner turn, the same state in all 4 episodes
        prompts.append(tokens(rng.randint(prompt_tokens * 3 // 4, prompt_tokens)))
        groups.append([tokens(rng.randint(completion_tokens // 2, completion_tokens)) for _ in range(4)])
    for _ in range(8):  # the second learner turn: each episode's own history by now
        prompts.append(tokens(rng.randint(prompt_tokens * 3 // 4, prompt_tokens)))
        groups.append([tokens(rng.randint(completion_tokens // 2, completion_tokens))])
    return prompts, groups


def main(argv: list[str] | None = None) -> None:
    import torch

    from agents.lora import lora_policy
    from trainers.logprobs import grouped_logprobs, sequence_logprobs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=288)
    parser.add_argument("--completion-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model, tokenizer = lora_policy("embedded", top_layers=8)
    model.train()
    prompts, groups = episode_batch(args.prompt_tokens, args.completion_tokens, len(tokenizer))
    flat_prompts = [p for p, g in zip(prompts, groups) for _ in g]
    flat_completions = [c for g in groups for c in g]
    ways = {
        "full logits": lambda: full_logits(model, flat_prompts, flat_completions, 0),
        "plain": lambda: sequence_logprobs(model, flat_prompts, flat_completions, 0),
        "shared": lambda: grouped_logprobs(model, prompts, groups, 0),
    }

    def once(fn: Any) -> float:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        torch.cat(fn()).sum().backward()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in ways}
    for fn in ways.values():
        once(fn)  # warm-up
    for _ in range(args.repeats):  # interleaved, so drift in the machine's speed touches every way alike
        for name, fn in ways.items():
            times[name].append(once(fn))
    first = statistics.median(times["full logits"])
    rows = [
        {"way": name, "median_s": statistics.median(ts), "times_s": ts, "speedup": first / statistics.median(ts)}
        for name, ts in times.items()
    ]
    device = str(next(model.parameters()).device)
    print(
        f"16 utterances (2 prompts x 4 replies + 8 x 1), prompts <= {args.prompt_tokens} tokens, replies <= "
        f"{args.completion_tokens}, forward + backward, {device}, {platform.machine()}\n"
        "| way | median s | speed-up over full logits |\n|---|---|---|"
    )
    for r in rows:
        print(f"| {r['way']} | {r['median_s']:.2f} | {r['speedup']:.2f}x |")
    if args.json:
        write_json_atomic(args.json, {"machine": f"{platform.machine()}, {device}", "rows": rows})


if __name__ == "__main__":
    main()
