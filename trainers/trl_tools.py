"""TRL's `GRPOTrainer(environment_factory=...)` over the text session: the learner acts through tools (`say`,
`gesture`, `act`, `leave`), the partner answers inside the tool, and `get_reward` gives the episode's reward.

    class SocialEnv(SocialToolEnv):
        config = SessionConfig(partner="embedded", reward="runs/rm/best", max_turns=8, reward_aggregate="sum")

    trainer = trl.GRPOTrainer(model=..., processing_class=tokenizer, environment_factory=SocialEnv,
                              train_dataset=tool_dataset(episode_starts(SocialEnv.config, 64)), args=...)

TRL makes one instance per rollout with no arguments (`SocialEnv()`), reuses instances across batches, and calls
`reset(**row)` with the dataset row: its `scenario`, `seed`, `seat` (and `characters`) name the episode start, and
the seat's first observation is returned, which TRL appends to the row's user message. Every other public method is
a tool: its reply is what the seat perceives after the partner's turn. `get_reward()` aggregates the env's rewards
of the learner's actions this episode as `config.reward_aggregate` says (sum, mean, or the discounted return with
`config.gamma`); TRL logs it as a reward column named after the class.

One reward per rollout is what `environment_factory` carries: the advantage is per sequence. For credit per turn
use `trainers.trl_env.EnvRollout` (TRL's `rollout_func`), or our own `sotopia-env grpo --rollout env --credit turn`.
The policy's chat template must render tool calls; for a ChatML model without one (SmolLM2) TRL's Qwen2.5 template
(`trl.chat_template_utils.qwen2_5_chat_template`) renders them with the same special tokens. A policy that speaks in
plain text and never emits a tool call (SmolLM2-135M: 0 of 8 samples did, with or without a demonstration) can still
play: `tokenizer.response_template = SPEECH_AS_SAY` has transformers' response parser read each reply as a
`say(text)` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from datasets import Dataset

from sotopia_env import EpisodeStart

from .interop import SessionConfig, SessionParts, load_parts, new_session

# A transformers response template (ChatML) that reads a whole plain-text reply as one call of the `say` tool.
SPEECH_AS_SAY = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "close_pattern": r"<\|im_end\|>\s*",
            "content": "text",
            "repeats": True,
            "transform": {"type": "function", "function": {"name": "say", "arguments": {"text": "{content}"}}},
        },
    },
}

TOOL_PROMPT = (
    "You are role-playing a character in a conversation. Act only through the tools: say(text) to speak, "
    "gesture(text) for body language, act(text) for a physical action, leave() to end the conversation. Each tool "
    "returns what happens next. Pursue your character's goal.\n\n"
)


class SocialToolEnv:
    """One episode per rollout: a learner seat against the partner, in TRL's `environment_factory` shape."""

    config: ClassVar[SessionConfig] = SessionConfig()

    def __init__(self, config: SessionConfig | None = None, parts: SessionParts | None = None) -> None:
        self._config = config or type(self).config
        self._session = new_session(self._config, parts or load_parts(self._config))

    def reset(self, **row: Any) -> str:
        """Start the episode the dataset row names; returns the seat's first observation."""
        self._session.reset(EpisodeStart.from_dict(row))
        return self._session.opening

    def say(self, text: str) -> str:
        """Say something to the other character.

        Args:
            text: What your character says, in one to three sentences.

        Returns:
            What happens next in the conversation, as your character perceives it.
        """
        return self._play("speak", text)

    def gesture(self, text: str) -> str:
        """Communicate without words (a gesture, a look, body language).

        Args:
            text: The gesture, e.g. "smiles and nods".

        Returns:
            What happens next in the conversation, as your character perceives it.
        """
        return self._play("non-verbal communication", text)

    def act(self, text: str) -> str:
        """Do a physical action the other character can see.

        Args:
            text: The action, e.g. "hands over the keys".

        Returns:
            What happens next in the conversation, as your character perceives it.
        """
        return self._play("action", text)

    def leave(self) -> str:
        """Leave the conversation; it ends.

        Returns:
            The end of the conversation.
        """
        return self._play("leave", "")

    def get_reward(self) -> float:
        """The episode's reward: the env's rewards of the learner's actions, aggregated as configured."""
        return self._session.episode_reward(self._config.reward_aggregate, self._config.gamma)

    def _play(self, action_type: str, text: str) -> str:
        if self._session.done:
            raise ValueError("the conversation is over; no more actions")
        out = self._session.step({"action_type": action_type, "argument": text})
        return f"{out.message}\nThe conversation is over." if out.done else out.message


def tool_dataset(starts: Sequence[EpisodeStart], prompt: str = TOOL_PROMPT) -> Dataset:
    """A train dataset for `SocialToolEnv`: per start, a user message with the instructions (the env appends the
    seat's first observation at reset) and the start's fields, which TRL passes to `reset`."""
    rows = []
    for start in starts:
        fields = start.to_dict()
        fields["characters"] = list(start.characters) if start.characters else None
        rows.append({"prompt": [{"role": "user", "content": prompt}], **fields})
    return Dataset.from_list(rows)
