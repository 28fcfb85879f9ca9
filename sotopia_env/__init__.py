"""sotopia-env: Sotopia social scenarios as PettingZoo / Gymnasium environments."""

from gymnasium.envs.registration import register, registry

from .actions import Action, ActionType
from .env import EpisodeJudge, RewardContext, SocialParallelEnv, UtteranceReward, score_contexts, step_envs
from .episode import Episode, Turn, read_episodes, to_hf_dataset, to_sotopia_episode_log, write_episode
from .gym_env import SocialGymEnv, SocialVectorEnv
from .policy import Policy, ScriptedPolicy
from .scenarios import (
    Character,
    Relationship,
    Role,
    Scenario,
    ScenarioFileError,
    is_hard,
    library_characters,
    library_pairings,
    library_scenarios,
    load_characters,
    load_scenarios,
    split,
)
from .start import EpisodeStart, other_agent, other_seat

ENV_ID = "sotopia_env/Social-v0"
if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="sotopia_env.gym_env:SocialGymEnv")


def parallel_env(**kwargs) -> SocialParallelEnv:
    """PettingZoo's conventional constructor name."""
    return SocialParallelEnv(**kwargs)


__all__ = [
    "ENV_ID",
    "Action",
    "ActionType",
    "Character",
    "Episode",
    "EpisodeJudge",
    "EpisodeStart",
    "Policy",
    "Relationship",
    "RewardContext",
    "Role",
    "Scenario",
    "ScenarioFileError",
    "ScriptedPolicy",
    "SocialGymEnv",
    "SocialParallelEnv",
    "SocialVectorEnv",
    "Turn",
    "UtteranceReward",
    "library_pairings",
    "is_hard",
    "library_characters",
    "library_scenarios",
    "load_characters",
    "load_scenarios",
    "other_agent",
    "other_seat",
    "parallel_env",
    "read_episodes",
    "score_contexts",
    "split",
    "step_envs",
    "to_hf_dataset",
    "to_sotopia_episode_log",
    "write_episode",
]
