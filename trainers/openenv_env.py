"""The env as an OpenEnv environment: Pydantic action, observation and state, the server-side `Environment` (one
text session per WebSocket session: the partner and the reward model run here, on the server), the app
(`create_app`), and the typed client (an `EnvClient`).

    sotopia-env serve-env --partner embedded --reward runs/rm/best --max-concurrent-envs 64 --port 8000

    from trainers.openenv_env import SotopiaSocialAction, SotopiaSocialEnv
    with SotopiaSocialEnv(base_url="http://127.0.0.1:8000").sync() as env:
        result = env.reset(scenario="neg-used-bike", seed=3, seat=1)    # the learner's seat chosen at reset
        result = env.step(SotopiaSocialAction(argument="I can do $90."))
        result.reward, result.done, result.observation.text             # the env's reward of that utterance

Reset arguments: `seed`, `episode_id` and an `EpisodeStart`'s fields (`scenario`, `seat`, `characters`); without a
scenario one is drawn from the served split by the seed. Each step's `reward` is the env's reward of the learner's
utterance (0 for `leave`/`none`), the observation is what that seat may see: `text` (what happened since its last
action: the partner's lines, then the closing line; at reset the whole first observation), `prompt` (the seat's
whole observation), and the structured fields. An action the env refuses (an unknown action type, an utterance
over the limit, a step after the end) is answered with an error naming the problem; the session stays usable.

Sessions step on threads of their own; an LLM partner's requests and a reward model's contexts from all sessions
are batched (`agents.batching`), so the model sees batches as in a vector env.
"""

from __future__ import annotations

import functools
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from openenv.core import EnvClient
from openenv.core.client_types import StepResult
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, EnvironmentMetadata, Observation, State
from pydantic import Field

from agents.batching import BatchedPolicy, BatchedReward
from sotopia_env import EpisodeStart, split

from .interop import ServeEnvConfig, SessionConfig, SessionParts, load_parts, new_session

ENV_NAME = "sotopia_social"
ActionName = Literal["speak", "non-verbal communication", "action", "leave", "none"]


class SotopiaSocialAction(Action):
    """What the learner does on its turn: Sotopia's action types; `argument` is the utterance, gesture or deed."""

    action_type: ActionName = Field(default="speak", description="speak, non-verbal communication, action, leave, none")
    argument: str = Field(default="", description="what is said or done; empty for leave and none")


class SotopiaSocialObservation(Observation):
    """What the learner's seat may see after a reset or a step (`reward` and `done` are OpenEnv's own fields)."""

    text: str = Field(default="", description="what happened since the seat last acted (at reset: all of `prompt`)")
    prompt: str = Field(default="", description="the seat's whole observation, as an LLM policy reads it")
    name: str = Field(default="", description="the seat's character's name")
    character: str = Field(default="", description="the seat's character id")
    scenario: str = Field(default="", description="the scenario id")
    seat: int = Field(default=0, description="the learner's seat (0 or 1); the partner holds the other")
    turn: int = Field(default=0, description="the turn number, both seats counted")
    your_turn: bool = Field(default=False)
    history: list[dict[str, Any]] = Field(default_factory=list, description="speaker, action_type, argument per act")
    end_reason: str = Field(default="", description="leave, silence or turn_limit once the episode ended")
    episode_return: float = Field(default=0.0, description="the sum of the learner's rewards so far this episode")


class SotopiaSocialState(State):
    """The session's episode: its start, the learner's rewards so far, whether it ended."""

    scenario: str | None = None
    seat: int | None = None
    characters: list[str] | None = None
    rewards: list[float] = Field(default_factory=list)
    done: bool = False
    end_reason: str = ""


class SotopiaSocialEnvironment(Environment[SotopiaSocialAction, SotopiaSocialObservation, SotopiaSocialState]):
    """One OpenEnv session: a text session over `SocialGymEnv` whose partner and reward function are shared by all
    sessions of the server."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, cfg: SessionConfig | None = None, parts: SessionParts | None = None) -> None:
        super().__init__()
        self.cfg = cfg or SessionConfig()
        self.parts = parts or load_parts(self.cfg)
        self.session = new_session(self.cfg, self.parts)
        self._state = SotopiaSocialState()

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        scenario: str | None = None,
        seat: int = 0,
        characters: list[str] | None = None,
        **kwargs: Any,
    ) -> SotopiaSocialObservation:
        if kwargs:
            raise ValueError(
                f"unknown reset argument(s) {sorted(kwargs)}; reset takes seed, episode_id, scenario, seat, characters"
            )
        if scenario is None:
            ids = sorted(s.id for s in split(self.cfg.split, self.parts.scenarios))
            scenario = random.Random(seed).choice(ids)
        start = EpisodeStart(scenario, seed, seat, tuple(characters) if characters is not None else None)
        self.session.reset(start, episode_id)
        episode = self.session.episode
        self._state = SotopiaSocialState(
            episode_id=episode.id,
            scenario=scenario,
            seat=seat,
            characters=[c.id for c in episode.characters],
        )
        return self._observation(self.session.opening, None)

    def step(
        self, action: SotopiaSocialAction, timeout_s: float | None = None, **kwargs: Any
    ) -> SotopiaSocialObservation:
        out = self.session.step({"action_type": action.action_type, "argument": action.argument})
        self._state.step_count += 1
        self._state.rewards = list(self.session.rewards)
        self._state.done = out.done
        self._state.end_reason = out.info.get("sotopia_episode", {}).get("end_reason", "")
        return self._observation(out.message, out.reward)

    @property
    def state(self) -> SotopiaSocialState:
        return self._state

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=ENV_NAME,
            description="Sotopia social scenarios: the learner talks to a partner policy; each utterance is rewarded "
            "by the env's per-utterance reward model",
            version="0.1.0",
        )

    def _observation(self, text: str, reward: float | None) -> SotopiaSocialObservation:
        obs, info = self.session.obs, self.session.info
        return SotopiaSocialObservation(
            text=text,
            prompt=obs["prompt"],
            name=obs["name"],
            character=info["character"],
            scenario=info["scenario"],
            seat=obs["seat"],
            turn=obs["turn"],
            your_turn=bool(obs["your_turn"]),
            history=[dict(h) for h in obs["history"]],
            end_reason=self._state.end_reason if self.session.done else "",
            episode_return=self.session.episode_reward(),
            reward=reward,
            done=self.session.done,
        )


def make_app(cfg: ServeEnvConfig) -> Any:
    """The FastAPI app (OpenEnv's `create_app`) serving `cfg`'s env: one session per connection, up to
    `max_concurrent_envs`, on parts loaded once; an LLM partner and a reward model with a batch form are batched
    across sessions."""
    session_cfg = cfg.session()
    parts = load_parts(session_cfg)
    wait = cfg.batch_wait_ms / 1000
    if hasattr(parts.partner, "act_batch"):  # an LLM policy: one generate call for the sessions waiting on it
        parts = SessionParts(**{**vars(parts), "partner": BatchedPolicy(parts.partner, cfg.max_concurrent_envs, wait)})
    if hasattr(parts.reward_fn, "batch"):  # a reward model: one scoring pass for the sessions' utterances
        parts = SessionParts(
            **{**vars(parts), "reward_fn": BatchedReward(parts.reward_fn, cfg.max_concurrent_envs, wait)}
        )
    factory = functools.partial(SotopiaSocialEnvironment, session_cfg, parts)
    return create_app(
        factory,
        SotopiaSocialAction,
        SotopiaSocialObservation,
        env_name=ENV_NAME,
        max_concurrent_envs=cfg.max_concurrent_envs,
    )


def serve_env_command(cfg: ServeEnvConfig) -> int:
    import uvicorn

    app = make_app(cfg)
    print(f"sotopia-env serve-env: OpenEnv server on http://{cfg.host}:{cfg.port} (WebSocket /ws)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", ws_max_size=16 * 1024 * 1024)
    return 0


class SotopiaSocialEnv(EnvClient[SotopiaSocialAction, SotopiaSocialObservation, SotopiaSocialState]):
    """The typed OpenEnv client: `reset(**start)`, `step(SotopiaSocialAction)`, `state()` over one WebSocket
    session (async; `.sync()` for a blocking one)."""

    def _step_payload(self, action: SotopiaSocialAction) -> dict[str, Any]:
        return action.model_dump()

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[SotopiaSocialObservation]:
        observation = SotopiaSocialObservation(
            **payload.get("observation", {}), reward=payload.get("reward"), done=payload.get("done", False)
        )
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> SotopiaSocialState:
        return SotopiaSocialState(**payload)


def spawn_server(cfg: ServeEnvConfig, log_path: str | Path) -> subprocess.Popen:
    """`sotopia-env serve-env` with `cfg` in a process (and session) of its own, its output appended to `log_path`;
    wait for it with `wait_healthy`."""
    argv = [sys.executable, "-m", "benchmarks.cli", "serve-env"]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value is not None:
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
    log = open(log_path, "ab")  # noqa: SIM115 - the server process owns it
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(base_url: str, timeout_s: float = 120.0, process: subprocess.Popen | None = None) -> float:
    """Seconds until `GET {base_url}/health` answers; raises if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the env server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no env server answered at {base_url} within {timeout_s:.0f}s")
