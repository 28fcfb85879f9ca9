"""docs/interop.md's snippets run as written, one per trainer contract: each block is read from the page and executed
against the real framework (OpenEnv's client and a served env, verifiers' own evaluation loop in .venv-verifiers
against a real `vllm serve`, TRL's GRPOTrainer, skyrl-gym's make), and what it returns is checked against the env."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from agents.text_session import TextSession
from benchmarks.preference import address_reward
from sotopia_env import EpisodeStart, ScriptedPolicy

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "interop.md"
DOC_URL = "http://127.0.0.1:8000"


def block(name: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    marker = f"<!-- test: {name} "
    assert marker in text, f"docs/interop.md lost the marker of the {name} snippet"
    found = re.search(r"```python\n(.*?)```", text[text.index(marker) :], re.S)
    assert found is not None
    return found.group(1)


def run_block(name: str, url: str | None = None) -> dict:
    code = block(name) if url is None else block(name).replace(DOC_URL, url)
    namespace: dict = {"__name__": f"docs_interop_{name}"}
    exec(compile(code, f"docs/interop.md ({name})", "exec"), namespace)
    return namespace


def test_the_skyrl_snippet_plays_a_turn_with_the_envs_reward():
    ns = run_block("skyrl")
    assert ns["out"]["reward"] == 10.0 and not ns["out"]["done"]  # "Could you ...?" addresses the partner
    assert "I see." in ns["out"]["observations"][0]["content"]


@pytest.mark.slow
def test_the_openenv_snippet_plays_an_episode_against_a_served_env(tmp_path):
    from conftest import free_port

    from trainers.interop import ServeEnvConfig
    from trainers.openenv_env import spawn_server, wait_healthy

    cfg = ServeEnvConfig(
        partner="scripted:Hello. What brings you here?|I see.", reward="benchmarks.preference:address_reward"
    )
    cfg = replace(cfg, port=free_port())
    process = spawn_server(cfg, tmp_path / "server.log")
    url = f"http://127.0.0.1:{cfg.port}"
    try:
        wait_healthy(url, timeout_s=120, process=process)
        ns = run_block("openenv", url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = ns["result"]
    assert result.done and result.observation.end_reason == "leave"  # the scripted partner ran out of lines
    assert result.observation.episode_return == 20.0  # two learner turns, each addressing the partner


@pytest.mark.slow
def test_the_trl_snippet_trains_with_the_env_as_environment_factory():
    ns = run_block("trl")
    trainer = ns["trainer"]
    assert sorted(t.__name__ for t in trainer.tools) == ["act", "gesture", "leave", "say"]
    envs = trainer.environments  # the last batch's rollouts, one env each
    starts = {EpisodeStart.from_dict(row) for row in trainer.train_dataset}
    assert len(envs) == 2 and all(env._session.start in starts for env in envs)  # reset(**row) started each
    assert all(env._session.rewards for env in envs)  # the replies reached the env as say() calls
    logged = [log for log in trainer.state.log_history if "rewards/SocialEnv/mean" in log]
    assert [log["step"] for log in logged] == [1, 2]  # two GRPOTrainer steps, each logging the env's rewards
    episode_rewards = [env.get_reward() for env in envs]
    assert logged[-1]["rewards/SocialEnv/mean"] == pytest.approx(sum(episode_rewards) / len(envs))
    assert any(r > 0 for r in episode_rewards)  # the env's rewards, not zeros, reached TRL's reward column


VERIFIERS_PYTHON = ROOT / ".venv-verifiers" / "bin" / "python"
PARTNER = ("Hello. What brings you here?", "I see. What do you suggest?", "Fine, go on.")
REPORT = """
import json
rows = [
    {"info": r["info"], "reward": r["reward"], "metrics": r["metrics"],
     "replies": [step["completion"][-1]["content"] for step in r["trajectory"]],
     "step_rewards": [step["reward"] for step in r["trajectory"]]}
    for r in results["outputs"]
]
def judge(episode):  # an episode judge: its scores become named metrics
    return {agent: {"goal": float(len(episode.turns))} for agent in episode.agents}
judged = vf.load_environment("sotopia-social", partner="scripted:Hi.", max_turns=2, num_examples=1, judge=judge)
out = judged.evaluate_sync(
    vf.ClientConfig(api_base_url=URL, api_key_var="OPENAI_API_KEY"), model="smollm2",
    sampling_args={"max_tokens": 8}, num_examples=1,
)
print("ROWS " + json.dumps({"rows": rows, "judged": out["outputs"][0]["metrics"]}))
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_the_verifiers_snippet_returns_the_envs_rewards_through_its_own_evaluation_loop(server):
    assert VERIFIERS_PYTHON.exists(), "no .venv-verifiers: run scripts/setup.sh (it calls scripts/setup_verifiers.sh)"
    url = server.base_url
    code = block("verifiers").replace(DOC_URL + "/v1", url) + f"URL = {url!r}\n" + REPORT
    done = subprocess.run(
        [str(VERIFIERS_PYTHON), "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "none"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("ROWS ")]
    report = json.loads(line[len("ROWS ") :])
    assert len(report["rows"]) == 3
    for row in report["rows"]:
        info = json.loads(row["info"]) if isinstance(row["info"], str) else row["info"]
        session = TextSession(ScriptedPolicy(PARTNER), address_reward, max_turns=6)
        session.reset(EpisodeStart.from_dict(info))
        expected = [session.step(reply).reward for reply in row["replies"]]
        assert session.done  # the rollout ended where the env's episode ended
        assert row["step_rewards"] == expected and row["reward"] == sum(expected)
    assert report["judged"]["judge_goal"] >= 1  # the judge's score as a metric: the episode's turns
