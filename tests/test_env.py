from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

import sotopia_env
from sotopia_env import (
    Action,
    ActionType,
    RewardContext,
    ScriptedPolicy,
    SocialGymEnv,
    SocialParallelEnv,
    SocialVectorEnv,
)
from sotopia_env.env import RECORDED_SETTINGS
from sotopia_env.episode import read_episodes
from sotopia_env.replay import utterance_states

SCENARIO = "neg-used-bike"
PAIR = ("ben_kowalski", "amara_okafor")


def start(env: SocialParallelEnv | None = None, **kwargs):
    env = env or SocialParallelEnv(**kwargs)
    obs, infos = env.reset(seed=0, options={"scenario": SCENARIO, "characters": PAIR})
    return env, obs, infos


def test_pettingzoo_parallel_api_test_passes_as_constructed_in_both_turn_modes():
    # The defaults: PettingZoo's test sends every live agent's sampled action each step, the waiting one's too.
    parallel_api_test(SocialParallelEnv(), num_cycles=60)
    parallel_api_test(SocialParallelEnv(turn_mode="simultaneous"), num_cycles=60)


def test_each_observation_names_its_own_character_and_the_name_lies_in_the_space():
    env, obs, _ = start()
    assert (obs["agent_0"]["name"], obs["agent_1"]["name"]) == ("Ben Kowalski", "Amara Okafor")
    obs, *_ = env.step({"agent_0": "Hi, it's $480."})
    assert obs["agent_1"]["name"] == "Amara Okafor" and obs["agent_1"]["your_turn"] == 1
    assert all(env.observation_space(a)["name"].contains(o["name"]) for a, o in obs.items())


def test_records_and_actions_share_one_definition_of_speech():
    from sotopia_env.episode import Turn

    spoken = {t.sotopia_name for t in ActionType if Action(t, "x").is_speech}
    assert spoken == {"speak", "non-verbal communication", "action"}
    assert {t.sotopia_name for t in ActionType if Turn(0, "agent_0", "A", t.sotopia_name).is_speech} == spoken


def test_observations_lie_in_their_space_through_an_episode_the_last_one_included():
    env, obs, _ = start(max_turns=6)
    text = "Ünïcödé — “quotes”, emoji 😀, tabs\tand\nnewlines, and a control \x07 char"
    for turn in range(6):
        for agent, o in obs.items():
            assert env.observation_space(agent).contains(o), (agent, turn)
        active = env.active_agents[0]
        obs, *_ = env.step({active: text})
    assert env.episode.end_reason == "turn_limit"
    assert all(env.observation_space(a).contains(o) for a, o in obs.items())
    assert env.episode.turns[-1].repairs == ["replaced 1 unsupported character(s) with U+FFFD"]


def test_actions_sampled_from_the_action_space_for_every_live_agent_are_played_for_the_active_one_only():
    env, *_ = start(max_turns=30)
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(i)
    steps = 0
    while env.agents:
        active = env.active_agents[0]
        actions = {a: env.action_space(a).sample() for a in env.agents}
        _, _, _, _, infos = env.step(actions)
        steps += 1
        sampled = ActionType(int(actions[active]["action_type"]))
        if (
            sampled in (ActionType.speak, ActionType.non_verbal, ActionType.action)
            and not actions[active]["argument"].strip()
        ):
            sampled = ActionType.none  # an empty utterance is recorded as doing nothing
        [turn] = [t for t in env.episode.turns if t.index == steps - 1]
        assert (turn.agent, turn.action_type) == (active, sampled.sotopia_name)
        waiting = next(a for a in infos if a != active)
        waiting_type = ActionType(int(actions[waiting]["action_type"]))
        assert infos[waiting]["ignored_action"] == (waiting_type is not ActionType.none)
    assert len(env.episode.turns) == steps > 1


def test_the_waiting_agents_action_is_ignored_and_reported_and_strict_turns_raises():
    env, *_ = start()
    obs, rewards, _, _, infos = env.step({"agent_0": "Hi, it's $480.", "agent_1": "I talk over you."})
    assert [h["argument"] for h in obs["agent_0"]["history"]] == ["Hi, it's $480."]
    assert [t.agent for t in env.episode.turns] == ["agent_0"]
    assert infos["agent_1"]["ignored_action"] is True and infos["agent_0"]["ignored_action"] is False
    _, _, _, _, infos = env.step({"agent_0": Action(ActionType.none), "agent_1": "Too much."})
    assert infos["agent_0"]["ignored_action"] is False  # a waiting 'none' is not an ignored action

    strict, *_ = start(strict_turns=True)
    with pytest.raises(ValueError, match="agent 'agent_1' acted out of turn; it is 'agent_0's turn"):
        strict.step({"agent_0": "Hi.", "agent_1": "I talk over you."})
    assert strict.episode.turns == []
    strict.step({"agent_0": "Hi.", "agent_1": Action(ActionType.none)})  # 'none' from the waiting agent is fine
    assert [t.argument for t in strict.episode.turns] == ["Hi."]


def test_action_type_mask_lets_the_active_agent_take_any_action_and_the_waiting_one_only_none():
    env, obs, _ = start()
    assert obs["agent_0"]["action_type_mask"].tolist() == [1, 1, 1, 1, 1]
    assert obs["agent_1"]["action_type_mask"].tolist() == [0, 0, 0, 0, 1]  # speak, non-verbal, action, leave, none
    obs, *_ = env.step({"agent_0": "Hi."})
    assert obs["agent_0"]["action_type_mask"].tolist() == [0, 0, 0, 0, 1]
    assert obs["agent_1"]["action_type_mask"].tolist() == [1, 1, 1, 1, 1]
    obs["agent_1"]["action_type_mask"][:] = 0  # a caller editing its copy changes nothing in the env
    _, fresh, _ = start()
    assert fresh["agent_0"]["action_type_mask"].tolist() == [1, 1, 1, 1, 1]
    _, sim, _ = start(turn_mode="simultaneous")
    assert sim["agent_0"]["action_type_mask"].tolist() == sim["agent_1"]["action_type_mask"].tolist() == [1] * 5


@pytest.mark.parametrize(
    ("kwargs", "moves", "end_reason"),
    [
        ({}, [{"agent_0": "Hello"}, {"agent_1": {"action_type": "leave"}}], "leave"),
        ({"max_silent_turns": 2}, [{"agent_0": None}, {"agent_1": None}], "silence"),
        ({"max_turns": 3}, [{"agent_0": "a"}, {"agent_1": "b"}, {"agent_0": "c"}], "turn_limit"),
    ],
)
def test_the_last_observation_of_an_ended_episode_gives_nobody_a_turn(kwargs, moves, end_reason):
    env, *_ = start(**kwargs)
    for move in moves:
        obs, _, _, _, infos = env.step(move)
    assert env.episode.end_reason == end_reason
    for agent in ("agent_0", "agent_1"):
        assert obs[agent]["your_turn"] == 0
        assert obs[agent]["action_type_mask"].tolist() == [0, 0, 0, 0, 0]
        assert "what do you do next?" not in obs[agent]["prompt"] and "Wait for" not in obs[agent]["prompt"]
        assert obs[agent]["prompt"].endswith(f"The conversation is over after {len(moves)} of {env.max_turns} turns.")
        assert infos[agent]["active_agents"] == []
    assert env.active_agents == []


def test_an_episode_records_its_settings_and_replays_to_the_prompts_its_agents_saw():
    long_line = "I have thought about this a lot. " * 75  # 2,475 characters: over the default limit of 2,000
    env, obs, _ = start(max_utterance_chars=3000, max_turns=5, max_silent_turns=3, strict_turns=True)
    assert env.episode.meta == {
        "turn_mode": "round-robin",
        "max_turns": 5,
        "max_silent_turns": 3,
        "max_utterance_chars": 3000,
        "strict_turns": True,
    }
    assert set(env.episode.meta) == set(RECORDED_SETTINGS)
    seen = []
    for agent, line in [("agent_0", long_line), ("agent_1", "That is a lot."), ("agent_0", long_line)]:
        seen.append(obs[agent]["prompt"])
        obs, *_ = env.step({agent: line})
    episode = env.episode.model_validate_json(env.episode.model_dump_json())  # as read back from a file
    states = utterance_states(episode)
    assert [s.prompt for s in states] == seen
    assert [s.action.argument for s in states] == [long_line, "That is a lot.", long_line]
    assert "It is turn 2 of 5." in states[2].prompt


def test_gymnasium_env_checker_passes_and_make_works():
    env = gymnasium.make(sotopia_env.ENV_ID, max_turns=8)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=3)
    obs, reward, terminated, truncated, info = env.step("I can do $90 if you deliver it.")
    assert isinstance(reward, float) and not terminated and not truncated
    assert obs["history"][0]["argument"] == "I can do $90 if you deliver it."
    assert len(obs["history"]) == 2 and obs["history"][1]["speaker"] == 1  # the partner answered


def test_each_agent_sees_its_own_goal_and_secret_never_the_partners():
    env, obs, _ = start()
    scenario = env.scenario
    buyer_secret = scenario.roles[1].secret
    assert buyer_secret and scenario.roles[0].goal in obs["agent_0"]["prompt"]
    assert scenario.roles[1].goal not in obs["agent_0"]["prompt"]
    assert buyer_secret not in obs["agent_0"]["prompt"]
    assert buyer_secret in obs["agent_1"]["prompt"] and scenario.roles[1].goal in obs["agent_1"]["prompt"]
    ben, amara = env.pair
    assert ben.secret in obs["agent_0"]["prompt"] and ben.secret not in obs["agent_1"]["prompt"]
    assert amara.secret not in obs["agent_0"]["prompt"]
    # strangers: the partner's occupation is not revealed
    assert amara.occupation not in obs["agent_0"]["prompt"]


def test_round_robin_turns_and_structured_fields():
    env, obs, _ = start()
    assert obs["agent_0"]["your_turn"] == 1 and obs["agent_1"]["your_turn"] == 0
    obs, rewards, term, trunc, infos = env.step({"agent_0": "Hi, it's $480."})
    assert obs["agent_1"]["your_turn"] == 1 and obs["agent_1"]["turn"] == 1
    assert obs["agent_1"]["history"] == ({"speaker": 0, "action_type": 0, "argument": "Hi, it's $480."},)
    assert 'Ben Kowalski said: "Hi, it\'s $480."' in obs["agent_1"]["prompt"]
    assert rewards == {"agent_0": 0.0, "agent_1": 0.0}  # no reward_fn: zero
    assert infos["agent_1"]["active_agents"] == ["agent_1"]


def test_reward_fn_scores_the_speaker_with_the_state_it_acted_on():
    seen: list[RewardContext] = []

    def reward(ctx: RewardContext) -> float:
        seen.append(ctx)
        return float(len(ctx.action.argument))

    env, obs, _ = start(reward_fn=reward)
    _, rewards, *_ = env.step({"agent_0": "12345"})
    assert rewards == {"agent_0": 5.0, "agent_1": 0.0}
    _, rewards, *_ = env.step({"agent_1": {"action_type": "non-verbal communication", "argument": "nods"}})
    assert rewards == {"agent_0": 0.0, "agent_1": 4.0}
    _, rewards, *_ = env.step({"agent_0": Action(ActionType.none)})
    assert rewards["agent_0"] == 0.0 and len(seen) == 2  # 'none' is not scored
    assert seen[1].prompt.endswith("what do you do next?") and "12345" in seen[1].prompt
    assert [t.argument for t in seen[1].history] == ["12345"]
    assert env.episode.turns[1].reward == 4.0


def test_leave_terminates_and_episode_info_is_reported():
    env, *_ = start(judge=lambda ep: {a: {"goal": 7.0} for a in ep.agents})
    env.step({"agent_0": "Hello"})
    obs, rewards, term, trunc, infos = env.step({"agent_1": {"action_type": "leave", "argument": "ignored"}})
    assert term == {"agent_0": True, "agent_1": True} and trunc == {"agent_0": False, "agent_1": False}
    assert env.agents == []
    assert infos["agent_0"]["sotopia_episode"]["end_reason"] == "leave"
    assert infos["agent_1"]["sotopia_episode"]["judge_scores"] == {"goal": 7.0}
    assert env.episode.judge_scores["agent_0"] == {"goal": 7.0}


def test_silence_terminates_and_turn_limit_truncates():
    env, *_ = start(max_silent_turns=2)
    env.step({"agent_0": Action(ActionType.none)})
    _, _, term, trunc, _ = env.step({"agent_1": Action(ActionType.none)})
    assert all(term.values()) and not any(trunc.values()) and env.episode.end_reason == "silence"
    env, *_ = start(max_turns=3)
    for agent in ("agent_0", "agent_1", "agent_0"):
        _, _, term, trunc, _ = env.step({agent: "words"})
    assert all(trunc.values()) and not any(term.values()) and env.episode.end_reason == "turn_limit"


def test_simultaneous_mode_takes_both_actions_each_step():
    env, obs, _ = start(turn_mode="simultaneous")
    assert obs["agent_0"]["your_turn"] == obs["agent_1"]["your_turn"] == 1
    obs, *_ = env.step({"agent_0": "A", "agent_1": "B"})
    assert [h["argument"] for h in obs["agent_0"]["history"]] == ["A", "B"]
    with pytest.raises(ValueError, match=r"no action for \['agent_1'\]"):
        env.step({"agent_0": "only me"})


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        ({"mia": "hi"}, ValueError, r"unknown agent\(s\) \['mia'\]"),
        ({"agent_1": "hi"}, ValueError, r"no action for \['agent_0'\]"),
        ({"agent_0": 42}, TypeError, "agent 'agent_0': an action must be a string"),
        ({"agent_0": "x" * 2001}, ValueError, "2001 characters is over the limit of 2000"),
        ({"agent_0": {"action_type": "shout", "argument": "HEY"}}, ValueError, "unknown action type 'shout'"),
        ({"agent_0": {"action_type": 9}}, ValueError, "out of range"),
        ({"agent_0": {"argument": "no type"}}, ValueError, "needs 'action_type'"),
        ({"agent_0": {"action_type": "speak", "argument": 5}}, TypeError, "argument must be a string"),
        ({}, ValueError, r"no action for \['agent_0'\]"),
        (["agent_0", "hi"], TypeError, "dict of agent -> action"),
    ],
)
def test_bad_step_input_raises_a_clear_error_and_loses_nothing(actions, error, match):
    env, *_ = start()
    env.step({"agent_0": "first words"})
    env.step({"agent_1": "reply"})
    before = env.episode.model_copy(deep=True)
    with pytest.raises(error, match=match):
        env.step(actions)
    assert env.episode.turns == before.turns
    obs, *_ = env.step({"agent_0": "still fine"})  # the episode goes on
    assert len(obs["agent_0"]["history"]) == 3


def test_step_after_the_end_and_before_reset_raise():
    env = SocialParallelEnv()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({"agent_0": "hi"})
    env, *_ = start()
    env.step({"agent_0": {"action_type": "leave"}})
    with pytest.raises(RuntimeError, match="episode is over; call reset"):
        env.step({"agent_1": "hi"})
    gym_env = SocialGymEnv()
    gym_env.reset(seed=0)
    gym_env.step({"action_type": "leave", "argument": ""})
    with pytest.raises(RuntimeError, match="episode is over"):
        gym_env.step("hello?")


def test_reset_options_are_checked():
    env = SocialParallelEnv()
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        env.reset(options={"scenario": "nope"})
    with pytest.raises(ValueError, match="unknown character 'ghost'"):
        env.reset(options={"scenario": SCENARIO, "characters": ("ghost", "amara_okafor")})
    with pytest.raises(ValueError, match="cannot talk to itself"):
        env.reset(options={"scenario": SCENARIO, "characters": ("amara_okafor", "amara_okafor")})


def test_the_seed_decides_the_scenario_and_characters_drawn():
    def setup(seed: int) -> tuple[str, str, str, str]:
        obs, infos = SocialParallelEnv().reset(seed=seed)
        return (
            infos["agent_0"]["scenario"],
            infos["agent_0"]["character"],
            infos["agent_1"]["character"],
            obs["agent_0"]["prompt"],
        )

    assert setup(11) == setup(11)
    assert len({setup(seed) for seed in range(8)}) == 8  # the seed is used, not ignored


def test_a_failing_judge_is_recorded_and_the_episode_still_written(tmp_path):
    def judge(episode):
        raise RuntimeError("judge server down")

    path = tmp_path / "episodes.jsonl"
    env, *_ = start(judge=judge, episodes_path=path)
    env.step({"agent_0": {"action_type": "leave"}})
    [episode] = read_episodes(path)
    assert episode.judge_failures == ["RuntimeError: judge server down"] and episode.end_reason == "leave"


def test_gym_env_learner_in_second_seat_gets_partner_opening():
    env = SocialGymEnv(partner=ScriptedPolicy(["Opening line."]), learner_seat=1)
    obs, info = env.reset(seed=0)
    assert obs["seat"] == 1 and obs["your_turn"] == 1 and obs["history"][0]["argument"] == "Opening line."
    obs, reward, terminated, truncated, info = env.step("My reply.")
    assert terminated and info["sotopia_episode"]["end_reason"] == "leave"  # partner ran out of lines and left


def test_vector_env_batches_partner_calls_and_autoresets_next_step():
    calls: list[int] = []

    class CountingPartner(ScriptedPolicy):
        def act_batch(self, observations):
            calls.append(len(observations))
            return [self.act(o) for o in observations]

    venv = SocialVectorEnv(3, partner=CountingPartner(["one", "two"]), max_turns=20)
    obs, _ = venv.reset(seed=5)
    assert len(obs["prompt"]) == 3 and venv.observation_space.contains(obs)
    _, _, term, _, infos = venv.step(["a", "b", "c"])
    assert calls == [3] and not term.any()
    _, _, term, _, infos = venv.step(["a", "b", "c"])
    assert not term.any() and calls == [3, 3]
    _, _, term, _, infos = venv.step(["a", "b", "c"])
    assert term.all() and calls == [3, 3, 3]  # out of lines: the partner left, in one batched call
    assert all(ep.end_reason == "leave" for ep in venv.episodes)
    obs, rewards, term, trunc, _ = venv.step(["ignored"] * 3)  # next-step autoreset
    assert not term.any() and all(len(h) == 0 for h in obs["history"])
    venv.action_space.seed(2)
    batched = venv.action_space.sample()  # the batched dict form: {"action_type": array, "argument": tuple}
    obs, *_ = venv.step(batched)
    for i, episode in enumerate(venv.episodes):
        learner_turn = episode.turns[0]
        sampled = ActionType(int(batched["action_type"][i]))
        argument = batched["argument"][i]
        if sampled in (ActionType.leave, ActionType.none) or not argument.strip():
            argument = ""
        assert learner_turn.agent == "agent_0" and learner_turn.argument == argument


def _rendered_from_record(env: SocialParallelEnv, agent: str) -> dict:
    """The observation `agent` should get now, rendered from the episode record with the observation module's
    functions one by one: no per-episode cache, no dialogue text kept between steps."""
    from sotopia_env import observation as obs_lib

    seat, pair, turns = env.possible_agents.index(agent), env.pair, env.episode.turns
    perceived = [t for t in turns if t.action_type != "none"]
    actions = [Action(ActionType.parse(t.action_type), t.argument) for t in perceived]
    seats = [env.possible_agents.index(t.agent) for t in perceived]
    lines = [obs_lib.history_line(i, t.character, a) for i, (t, a) in enumerate(zip(perceived, actions))]
    your_turn, ended, turn = agent in env.active_agents, not env.agents, len({t.index for t in turns})
    footer = obs_lib.prompt_footer(pair, seat, turn, env.max_turns, your_turn, ended)
    mask = obs_lib.MASK_ENDED if ended else obs_lib.MASK_ANY if your_turn else obs_lib.MASK_WAIT
    return {
        "prompt": obs_lib.prompt_header(env.scenario, pair, seat) + ("\n".join(lines) or obs_lib.NO_DIALOGUE) + footer,
        "name": pair[seat].name,
        "turn": turn,
        "seat": seat,
        "your_turn": int(your_turn),
        "action_type_mask": mask.tolist(),
        "history": tuple(
            {"speaker": s, "action_type": int(a.action_type), "argument": a.argument} for s, a in zip(seats, actions)
        ),
    }


@pytest.mark.parametrize(
    ("kwargs", "moves"),
    [
        (  # round-robin to the turn limit: every action type, and a waiting agent talking over the active one
            {"max_turns": 6},
            [
                {"agent_0": "Hi, it's $480.", "agent_1": "I talk over you."},
                {"agent_1": {"action_type": "non-verbal communication", "argument": "frowns"}},
                {"agent_0": None},
                {"agent_1": Action(ActionType.action, "checks the brakes")},
                {"agent_0": "   "},
                {"agent_1": "Ünïcödé \x07 fine, $400."},
            ],
        ),
        (  # simultaneous, ended by a leave
            {"turn_mode": "simultaneous"},
            [
                {"agent_0": "Hello.", "agent_1": "Hi."},
                {"agent_0": None, "agent_1": "Well?"},
                {"agent_0": {"action_type": "leave"}, "agent_1": "Wait!"},
            ],
        ),
    ],
)
def test_observations_through_an_episode_equal_ones_rendered_from_its_record_one_function_at_a_time(kwargs, moves):
    # The env keeps the dialogue text, headers and closing lines between steps; a stale or misplaced piece
    # (a wrong turn number, the other seat's closing line, a line joined twice) shows up here.
    env, obs, _ = start(**kwargs)
    for move in [*moves, None]:
        for agent, observation in obs.items():
            got = {**observation, "action_type_mask": observation["action_type_mask"].tolist()}
            assert got == _rendered_from_record(env, agent), (agent, len(env.episode.turns))
        if move is None:
            break
        obs, *_ = env.step(move)
    assert not env.agents


def test_every_text_space_keeps_its_own_length_over_one_shared_charset():
    env = SocialParallelEnv(max_turns=4, max_utterance_chars=50)
    obs_space, act_space = env.observation_space("agent_0"), env.action_space("agent_1")
    texts = [
        obs_space["prompt"],
        obs_space["name"],
        obs_space["history"].feature_space["argument"],
        act_space["argument"],
    ]
    assert [t.max_length for t in texts[1:]] == [sotopia_env.scenarios.MAX_NAME_CHARS, 50, 50]
    assert texts[0].max_length > 20_000 and all(t.min_length == 0 for t in texts)
    assert len({id(t.character_set) for t in texts}) == 1  # one charset index in the process, not one per length
    assert texts[2].contains("x" * 50) and not texts[2].contains("x" * 51)
    assert obs_space["name"].contains("Amara Okafor") and not obs_space["name"].contains(
        "A" * (texts[1].max_length + 1)
    )


def test_reset_renders_each_scenario_pair_and_turn_limit_afresh_when_the_env_plays_many():
    # The env renders a (scenario, pair)'s prompt headers once and reuses them; swapping the seats, another
    # scenario, or another turn limit must not get the texts of an earlier episode.
    env = SocialParallelEnv()
    draws = [(SCENARIO, PAIR, 20), (SCENARIO, PAIR[::-1], 20), ("neg-apartment-rent", PAIR, 20), (SCENARIO, PAIR, 7)]
    for scenario, pair, max_turns in [*draws, *draws]:
        env.max_turns = max_turns
        obs, _ = env.reset(options={"scenario": scenario, "characters": pair})
        for agent in env.possible_agents:
            got = {**obs[agent], "action_type_mask": obs[agent]["action_type_mask"].tolist()}
            assert got == _rendered_from_record(env, agent), (scenario, pair, max_turns, agent)
