"""OpenEnv: `sotopia-env serve-env` on loopback (one server for the module: the embedded partner, the preference reward
model), played by openenv-core's own clients: several episodes at once, each step's reward equal to what
`SocialGymEnv` gives for the same seed and actions; a bad action is answered with an error and the session goes on;
OpenEnv's own discovery and `validate` (the folder and the running server) accept the environment."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from benchmarks.preference import BRIEF_LIBRARY, PREFERENCE_RM
from sotopia_env import EpisodeStart

pytest.importorskip("openenv", reason="openenv-core is in the dev extra (scripts/setup.sh)")

from conftest import free_port  # noqa: E402
from openenv.core import GenericEnvClient  # noqa: E402

from trainers.interop import ServeEnvConfig, load_parts, new_session  # noqa: E402
from trainers.openenv_env import SotopiaSocialAction, SotopiaSocialEnv, spawn_server, wait_healthy  # noqa: E402

pytestmark = pytest.mark.slow

# The brief library (prompts of about 200 tokens, which the preference reward model was trained on) keeps the
# partner's and the reward model's passes short.
CFG = ServeEnvConfig(
    partner="embedded",
    reward=str(PREFERENCE_RM),
    library=str(BRIEF_LIBRARY),
    max_turns=4,
    max_new_tokens=16,
    max_concurrent_envs=8,
    seed=0,
)
STARTS = [
    EpisodeStart("b-bike-price", seed=11, seat=0, characters=("ana", "tom")),
    EpisodeStart("b-rent-raise", seed=12, seat=1, characters=("lin", "sam")),
    EpisodeStart("b-movie-night", seed=13, seat=1),
]
LINES = ["Could you tell me what you need?", "Let us find a fair price."]  # the preference: 10 and about 0


@pytest.fixture(scope="module")
def env_server(tmp_path_factory):
    from dataclasses import replace

    cfg = replace(CFG, port=free_port())
    process = spawn_server(cfg, tmp_path_factory.mktemp("env_server") / "server.log")
    base_url = f"http://127.0.0.1:{cfg.port}"
    try:
        wait_healthy(base_url, timeout_s=300, process=process)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def play(base_url: str, start: EpisodeStart, episode_id: str) -> list[float]:
    async with SotopiaSocialEnv(base_url=base_url, message_timeout_s=300) as env:
        result = await env.reset(episode_id=episode_id, **start.to_dict())
        assert result.observation.seat == start.seat and result.observation.text == result.observation.prompt
        rewards = []
        for line in LINES:
            result = await env.step(SotopiaSocialAction(argument=line))
            rewards.append(result.reward)
            assert result.observation.reward == result.reward
            if result.done:
                break
        state = await env.state()
        assert state.rewards == rewards and state.episode_id == episode_id
        return rewards


def test_concurrent_episodes_through_the_server_earn_what_the_gym_env_gives(env_server):
    async def all_at_once() -> list[list[float]]:
        return await asyncio.gather(*(play(env_server, s, f"openenv-test-{k}") for k, s in enumerate(STARTS)))

    served = asyncio.run(all_at_once())
    session = new_session(CFG.session(), load_parts(CFG.session()))  # the same partner and reward model, in-process
    for k, (start, rewards) in enumerate(zip(STARTS, served)):
        session.reset(start, episode_id=f"openenv-test-{k}")
        expected = []
        for line in LINES[: len(rewards)]:
            expected.append(session.step(line).reward)
        assert rewards == pytest.approx(expected, abs=1e-4), f"episode {k}"
    assert any(r > 5 for rs in served for r in rs) and any(r < 5 for rs in served for r in rs)  # the RM tells apart


def test_a_bad_action_is_answered_with_an_error_and_the_session_goes_on(env_server):
    async def misbehave() -> None:
        async with GenericEnvClient(base_url=env_server, message_timeout_s=300) as env:
            await env.reset(**STARTS[0].to_dict())
            with pytest.raises(RuntimeError, match="VALIDATION_ERROR"):
                await env.step({"action_type": "dance", "argument": "a jig"})
            with pytest.raises(RuntimeError, match="over the limit of 2000"):
                await env.step({"action_type": "speak", "argument": "x" * 2001})
            with pytest.raises(RuntimeError, match="unknown reset argument"):
                await env.reset(scenario="b-bike-price", mood="grumpy")
            result = await env.reset(**STARTS[0].to_dict())
            result = await env.step({"action_type": "leave"})
            assert result.reward == 0.0 and result.done  # the session still plays: leaving earns 0 and ends it

    asyncio.run(misbehave())


def test_openenv_discovery_and_validate_accept_the_environment(env_server):
    from openenv.auto._discovery import get_discovery

    info = get_discovery().discover(use_cache=False)["sotopia_social"]
    assert info.get_client_class() is SotopiaSocialEnv and info.get_action_class() is SotopiaSocialAction
    cli = [sys.executable, "-m", "openenv.cli"]
    local = subprocess.run([*cli, "validate", "sotopia_social", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(local.stdout)["passed"], local.stdout
    running = subprocess.run([*cli, "validate", "--url", env_server], capture_output=True, text=True, timeout=60)
    report = json.loads(running.stdout)
    assert report["passed"] and report["mode"] == "simulation", running.stdout
