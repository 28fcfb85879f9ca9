"""A known preference for measuring learning: an utterance that addresses the partner ("you", "your", ...)
scores 10, any other 0.

The GRPO learning tests and the learning benchmark (`benchmarks/online_grpo.py --learning`) reward the policy with a
`RewardModel` trained on this label over the embedded policy's own samples, and check that GRPO raises it. The samples must be the policy's own: a reward model
trained on hand-written lines tells those apart but scores the policy's temperature-1 text almost flat (seen
2026-11-23), and GRPO then has nothing to learn from. About half of the base policy's samples address the
partner, so a group of G samples usually holds both kinds.

The states are dialogue states of the brief library (`BRIEF_LIBRARY`: 15 scenarios in the seven categories,
six characters with one-line profiles, written for this), so prompts stay short (180-260 SmolLM2 tokens). The
rows (`PREFERENCE_ROWS`: 240 states x 4 samples, 453 of 960 address the partner) and the reward model trained on
them (`PREFERENCE_RM`, held-out Pearson 0.98) are committed: the model only learns the rule after 100-150
updates (Pearson 0.36 at step 48, 0.73 at 96, 0.95 at 144 of batch 8), which took 33 s on an H200 (480 updates)
and, by the CPU's seconds per update, would take an hour or more on the 2-core CPU the tests run on. This module makes both again (an H200 made the committed
ones, 2026-12-04, with exactly this command; float32 sampling, as on the CPU):

    python -m benchmarks.preference --out benchmarks/data/address_rows.jsonl --states 240 --samples 4 \
        --train-rm runs/address_rm          # then copy runs/address_rm/best/{adapter_*,rm_config.json}
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
BRIEF_LIBRARY = DATA / "brief_library"
PREFERENCE_ROWS = DATA / "address_rows.jsonl"
PREFERENCE_RM = DATA / "address_rm"  # the reward model trained on PREFERENCE_ROWS (adapter and config; base tokenizer)

_ADDRESS = re.compile(r"\b(you|your|yours|yourself|you're|you've|you'll|you'd)\b", re.IGNORECASE)
# What a scripted partner says in the states the rows are sampled at: plain lines that leave the reply open.
PARTNER_LINES = (
    "Hello. What brings you here?",
    "I see. What do you suggest?",
    "Hmm, tell me more.",
    "That is not what I expected.",
    "Fine, go on.",
)


def addresses_partner(text: str) -> bool:
    return _ADDRESS.search(text) is not None


def preference_label(text: str) -> float:
    """The known preference: 10 when the utterance addresses the partner, else 0."""
    return 10.0 if addresses_partner(text) else 0.0


def address_reward(context: Any) -> float:
    """The known preference as the env's reward function (`sotopia_env.UtteranceReward`): what `PREFERENCE_RM`
    learned, computed by the rule itself. Torch-free, for tests and for envs with no model stack."""
    return preference_label(context.action.argument)


def preference_states(count: int, seed: int = 0, library: str | Path = BRIEF_LIBRARY, max_turns: int = 4) -> list[str]:
    """Observation prompts of `count` dialogue states: a scenario and pairing drawn by the seed, 0 to
    max_turns - 1 scripted turns before it, the prompt of whichever seat is to speak."""
    from agents.runner import load_pool
    from sotopia_env import SocialParallelEnv

    scenarios, characters, pairings = load_pool(library)
    env = SocialParallelEnv(scenarios=scenarios, characters=characters, pairings=pairings, max_turns=max_turns)
    rng = random.Random(seed)
    ids = sorted(scenarios)
    states = []
    for _ in range(count):
        obs, _ = env.reset(seed=rng.randrange(1 << 30), options={"scenario": rng.choice(ids)})
        turns = rng.randrange(max_turns)
        for t in range(turns):
            obs, *_ = env.step({f"agent_{t % 2}": rng.choice(PARTNER_LINES)})
        states.append(obs[f"agent_{turns % 2}"]["prompt"])
    return states


def sample_rows(
    states: list[str], samples: int, seed: int = 0, max_new_tokens: int = 24, max_prompt_tokens: int = 320
) -> list[dict[str, Any]]:
    """`samples` replies of the embedded policy (temperature 1, as GRPO samples) to each state, parsed as the
    env parses them and labelled by the preference: reward-model training rows, one episode id per state."""
    from agents.engine import SamplingParams, request_seed
    from agents.llm_agent import build_messages, parse_reply
    from agents.transformers_engine import TransformersEngine

    # float32 everywhere, the policy the CPU tests train (a GPU would otherwise pick bfloat16).
    engine = TransformersEngine("embedded", dtype="float32", batch_size=32, max_prompt_tokens=max_prompt_tokens)
    params = SamplingParams(n=samples, max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
    seeds = [request_seed(seed, "preference", i) for i in range(len(states))]
    out = engine.generate([build_messages({"prompt": s}) for s in states], params, seeds)
    rows = []
    for i, (state, group) in enumerate(zip(states, out)):
        for sample in group:
            utterance = parse_reply(sample.text).argument
            rows.append({"episode_id": f"state-{i}", "prompt": state, "utterance": utterance})
            rows[-1]["label"] = preference_label(utterance)
    return rows


# How the preference's reward model is trained (the committed one; benchmarks/online_grpo.py --train-rm).
RM_TRAINING: dict[str, Any] = dict(epochs=6, batch_size=8, lr=1e-3, max_length=288, lora_layers=6, eval_every=48)


# The GRPO settings the learning tests and the learning benchmark run with (plus each mode's own sizes). Sized for
# the suite's budget on a 2-core CPU: 4 steps at lr 4.5e-3 since 2026-12-05. Three seeds there (docs/figures.md,
# "GRPO learning by mode"): offline +3.46..+4.05, turn +2.42..+3.87, episode +0.59..+5.69 against the tests' +1.0
# margin (the tests run seed 0; episode credit's seed 2 barely moves in 4 steps, and gained +1.82 at 8 steps and
# lr 2.5e-3). The H200 runs in benchmarks/results/preference_learning_h200.log used 12 steps at lr 1.5e-3.
LEARNING: dict[str, Any] = dict(
    steps=4,
    group_size=4,
    max_new_tokens=24,
    max_prompt_tokens=288,
    lr=4.5e-3,
    lora_layers=8,
    seed=0,
    tensorboard=False,
)


def learning_config(mode: str, out: str | Path, reward_model: str | Path = PREFERENCE_RM, **overrides: Any):
    """The GRPOConfig of a learning run in `mode` ("offline", "turn" or "episode"), as the learning tests and
    `benchmarks/online_grpo.py --learning` run it: LEARNING (with `overrides`) on the brief library, 8 held-out
    states or episodes, and the mode's sizes for 16 trained utterances a step: offline 4 states x G=4 (4 samples per
    held-out state), turn 2 starts x 2 learner turns x G=4 candidates, episode 2 starts x G=4 episodes x 2 learner
    turns (max_turns 4, a scripted partner)."""
    from trainers.grpo import GRPOConfig

    if mode == "offline":
        sizes: dict[str, Any] = dict(prompts_per_step=4, eval_samples=4)
    else:
        sizes = dict(rollout="env", credit=mode, partner="scripted", max_turns=4, prompts_per_step=2)
    return GRPOConfig(
        reward_model=str(reward_model),
        library=str(BRIEF_LIBRARY),
        out=str(out),
        heldout_states=8,
        **sizes,
        **{**LEARNING, **overrides},
    )


def train_preference_rm(
    out: str | Path, data: str | Path = PREFERENCE_ROWS, seed: int = 0, progress: bool = False, **overrides: Any
) -> dict[str, Any]:
    """Train the preference's reward model into `out` (the best adapter in out/best); returns the summary."""
    from trainers.train_reward_model import RMTrainConfig, train_reward_model

    cfg = RMTrainConfig(data=str(data), out=str(out), seed=seed, **{**RM_TRAINING, **overrides})
    return train_reward_model(cfg, progress=progress)


def main(argv: list[str] | None = None) -> None:
    from sotopia_env.jsonio import write_jsonl_atomic

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(PREFERENCE_ROWS))
    parser.add_argument("--states", type=int, default=240)
    parser.add_argument("--samples", type=int, default=4, help="policy samples per state")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--library", default=str(BRIEF_LIBRARY))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-rm", default=None, help="then train the reward model into this folder")
    parser.add_argument("--rm-epochs", type=int, default=RM_TRAINING["epochs"])
    parser.add_argument("--rm-lr", type=float, default=RM_TRAINING["lr"])
    parser.add_argument("--rm-lora-layers", type=int, default=RM_TRAINING["lora_layers"], help="0: all layers")
    parser.add_argument("--rm-eval-every", type=int, default=RM_TRAINING["eval_every"], help="steps")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if Path(args.out).exists():
        print(f"{args.out} exists: training on it")
    else:
        states = preference_states(args.states, args.seed, args.library)
        rows = sample_rows(states, args.samples, args.seed, args.max_new_tokens)
        write_jsonl_atomic(args.out, rows)
        positive = sum(r["label"] > 0 for r in rows)
        print(
            f"{len(rows)} rows ({positive} address the partner) from {len(states)} states in "
            f"{time.perf_counter() - started:.0f}s -> {args.out}",
            flush=True,
        )
    if args.train_rm:
        started = time.perf_counter()
        overrides = dict(
            epochs=args.rm_epochs,
            lr=args.rm_lr,
            lora_layers=args.rm_lora_layers or None,
            eval_every=args.rm_eval_every,
        )
        summary = train_preference_rm(args.train_rm, args.out, args.seed, **overrides)
        print(json.dumps({**summary, **overrides, "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
