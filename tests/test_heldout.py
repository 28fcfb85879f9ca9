"""Held out means held out, the same way everywhere: GRPO's offline states keep whole scenarios apart like the env
modes do, and the reward model's split keeps each dialogue on one side also for rows that carry no episode id
(Sotopia-RL's files). Model-free: the states come from scripted dialogues."""

from __future__ import annotations

import json

from sotopia_env import SocialParallelEnv, split
from sotopia_env.observation import dialogue_of, scenario_of
from trainers.grpo_config import GRPOConfig
from trainers.heldout import split_scenarios
from trainers.offline import split_states
from trainers.online import scenario_split
from trainers.train_reward_model import split_rows


def scripted_states(scenarios: list[str], turns: int = 3) -> list[tuple[str, str]]:
    """(scenario id, prompt) of every state of a short scripted dialogue in each scenario, both seats."""
    states = []
    for sid in scenarios:
        env = SocialParallelEnv("all", max_turns=turns + 1)
        obs, _ = env.reset(seed=0, options={"scenario": sid})
        for t in range(turns):
            seat = f"agent_{t % 2}"
            states.append((sid, obs[seat]["prompt"]))
            obs, *_ = env.step({seat: f"Line {t} of {sid}."})
    return states


def test_offline_states_hold_whole_scenarios_out_deduplicated(tmp_path):
    scenarios = sorted(s.id for s in split("hard"))[:10]
    states = scripted_states(scenarios)
    path = tmp_path / "prompts.jsonl"
    # Every state twice (a file merged from two runs): a duplicate must not land on both sides.
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for _, p in states + states))
    cfg = GRPOConfig(prompts=str(path), heldout_states=4, prompts_per_step=2)
    train, held = split_states(cfg)
    assert len({s.prompt for s in train}) == len(train) and len({s.prompt for s in held}) == len(held)
    assert not {s.prompt for s in train} & {s.prompt for s in held}
    assert not {s.scenario for s in train} & {s.scenario for s in held}
    assert len(held) == 4 and len(train) + len(held) <= len(states)
    # The scenario of a prompt is its scenario line: the same for both seats and every turn of a scenario.
    by_line = {}
    for sid, prompt in states:
        by_line.setdefault(scenario_of(prompt), set()).add(sid)
    assert all(len(ids) == 1 for ids in by_line.values()) and len(by_line) == len(scenarios)
    # The speaker is the one the prompt asks, so the env's parse (a "Name:" prefix dropped) is the trainer's.
    assert all(s.speaker and f"You are {s.speaker};" in s.prompt for s in train + held)


def test_every_mode_holds_out_the_same_scenarios_of_a_split():
    cfg = GRPOConfig(split="hard", seed=3)
    online_train, online_held = scenario_split(cfg)
    assert (online_train, online_held) == split_scenarios([s.id for s in split("hard")], 3)
    train, held = split_states(GRPOConfig(split="hard", seed=3, heldout_states=6))  # scripted offline states
    assert {s.scenario for s in held} <= set(online_held) and {s.scenario for s in train} <= set(online_train)


def test_the_reward_models_split_keeps_a_dialogue_whole_without_episode_ids():
    """Sotopia-RL's files carry no episode id: rows of one dialogue, from either seat, go to one side."""
    states = scripted_states(sorted(s.id for s in split("hard"))[:8], turns=4)
    rows = [{"prompt": p, "utterance": "x", "label": 1.0} for _, p in states]
    train, held = split_rows(rows, 0.25, seed=0)
    sides = {}
    for side, part in (("train", train), ("held", held)):
        for r in part:
            sides.setdefault(dialogue_of(r["prompt"]), set()).add(side)
    assert len(sides) == 8 and all(len(s) == 1 for s in sides.values()) and held and train
