"""`LLMAgent`: an engine plus a prompt format. Observation -> chat messages -> reply -> `Action`.

The reply may be plain text (what the character says) or a JSON action. Parsing is tolerant: anything
that is not a clean action is repaired (speaker prefixes and quotes stripped, JSON fished out of prose,
unknown types falling back to speech) and the repair is recorded on the action, so the env writes it into
the episode. Nothing an engine returns can crash an episode; an engine *error* is raised, since the
caller decides whether to retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sotopia_env.actions import SPEECH_TYPES, Action, ActionType

from .engine import Engine, Messages, SamplingParams, request_seed

# Short on purpose: it is in every state, and a state must fit small token budgets (agents.render).
SYSTEM_PROMPT = (
    "Role-play your character and pursue your goal. Reply with only what your character says next, in one to "
    "three short sentences, without your name or quotes. To act without speaking, reply with JSON: "
    '{"action_type": "non-verbal communication" | "action" | "leave", "argument": "..."}.'
)

_JSON_OBJECT = re.compile(r"\{.*\}", re.S)
# A reply is one line: a policy's generation stops at the line's end (a model that goes on tends to write the
# partner's next line), so what is sampled is what the parser keeps, and what a trainer trains on is what was
# played. A JSON action must be on one line too.
REPLY_STOP = ("\n",)


def build_messages(observation: dict[str, Any], system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """The chat the policy sees for one observation; the reward model scores the same text."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": observation["prompt"]}]


def parse_reply(text: str, speaker: str | None = None, max_chars: int = 2000) -> Action:
    """Turn a model's reply into an Action; never raises. Repairs are listed in `Action.repairs`."""
    return parse_reply_span(text, speaker, max_chars)[0]


def parse_reply_span(text: str, speaker: str | None = None, max_chars: int = 2000) -> tuple[Action, tuple[int, int]]:
    """`parse_reply`, and where in `text` the action came from: (start, end) character offsets of the span the
    parser kept (a JSON action's object, or the speech it played, without the prefix, quotes and later lines it
    dropped). A trainer trains on the sampled tokens of that span only (`agents.played`)."""
    repairs: list[str] = []
    lead = len(text) - len(text.lstrip())
    raw = text.strip()
    start = lead  # `raw` is text[start : start + len(raw)] throughout
    match = _JSON_OBJECT.search(raw)
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and ("action_type" in data or "argument" in data):
            if match.group(0) != raw:
                repairs.append("took the JSON action out of surrounding text")
            try:
                action_type = ActionType.parse(data.get("action_type", "speak"))
            except ValueError:
                repairs.append(f"unknown action type {data.get('action_type')!r} treated as speak")
                action_type = ActionType.speak
            argument = data.get("argument", "")
            if not isinstance(argument, str):
                argument = json.dumps(argument)
                repairs.append("non-string argument turned into text")
            action = _finish(action_type, argument, repairs, max_chars)
            return action, (start + match.start(), start + match.end())
        repairs.append("reply looked like JSON but was not an action; treated as speech")
    offset = 0
    for line in raw.split("\n"):  # models sometimes continue with the partner's line: keep the first turn
        if line.strip():
            kept = line.strip()
            if kept != raw:
                repairs.append("kept only the first line of a multi-line reply")
            start += offset + (len(line) - len(line.lstrip()))
            raw = kept
            break
        offset += len(line) + 1
    if speaker:
        for name in {speaker, speaker.split()[0]}:
            for prefix in (f"{name} said:", f"{name}:"):
                if raw.lower().startswith(prefix.lower()):
                    rest = raw[len(prefix) :]
                    start += len(prefix) + len(rest) - len(rest.lstrip())
                    raw = rest.strip()
                    repairs.append("removed the speaker prefix")
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        start += 1 + len(inner) - len(inner.lstrip())
        raw = inner.strip()
        repairs.append("removed surrounding quotes")
    action = _finish(ActionType.speak, raw, repairs, max_chars)
    return action, (start, start + len(action.argument))


def _finish(action_type: ActionType, argument: str, repairs: list[str], max_chars: int) -> Action:
    if len(argument) > max_chars:
        argument = argument[:max_chars]
        repairs.append(f"cut to {max_chars} characters")
    if action_type in SPEECH_TYPES and not argument.strip():
        repairs.append("empty reply treated as none")
        return Action(ActionType.none, "", tuple(repairs))
    return Action(action_type, argument.strip(), tuple(repairs))


class LLMAgent:
    """A policy backed by an engine. `act_batch` sends all observations in one `generate` call."""

    def __init__(
        self,
        engine: Engine,
        params: SamplingParams | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        max_chars: int = 2000,
    ) -> None:
        self.engine = engine
        params = params or SamplingParams(max_new_tokens=64, temperature=0.7)
        # One line per reply (REPLY_STOP) unless the caller chose its own stops.
        self.params = params if params.stop else replace(params, stop=REPLY_STOP)
        self.system_prompt = system_prompt
        self.max_chars = max_chars
        self.calls = 0  # counts generate calls, to show batching

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def act(self, observation: dict[str, Any]) -> Action:
        return self.act_batch([observation])[0]

    def act_batch(
        self, observations: Sequence[dict[str, Any]], keys: Sequence[Sequence[Any]] | None = None
    ) -> list[Action]:
        """keys: what identifies each request, e.g. (episode id, turn, seat). With a run seed
        (`params.seed`) each request is then sampled with `request_seed(run seed, *key)`, so an episode's
        dialogue depends on the episode, not on which batch it shared."""
        if not observations:
            return []
        conversations = [build_messages(o, self.system_prompt) for o in observations]
        seeds = None
        if keys is not None and self.params.seed is not None:
            if len(keys) != len(observations):
                raise ValueError(f"got {len(keys)} request keys for {len(observations)} observations")
            seeds = [request_seed(self.params.seed, *key) for key in keys]
        self.calls += 1
        samples = self.engine.generate(conversations, self.params, seeds)
        return [parse_reply(s[0].text, o.get("name"), self.max_chars) for o, s in zip(observations, samples)]


class HumanAgent:
    """Asks a person at the terminal. `/leave`, `/nv <gesture>`, `/do <action>`, `/pass`; anything else is speech."""

    model_name = "human"

    def __init__(self, input_fn: Any = input, print_fn: Any = print) -> None:
        self.input_fn, self.print_fn = input_fn, print_fn

    def act(self, observation: dict[str, Any]) -> Action:
        self.print_fn("\n" + observation["prompt"])
        while True:
            try:
                line = self.input_fn("> ").strip()
            except EOFError:
                return Action(ActionType.leave)
            if line == "/leave":
                return Action(ActionType.leave)
            if line == "/pass":
                return Action(ActionType.none)
            for command, action_type in (("/nv ", ActionType.non_verbal), ("/do ", ActionType.action)):
                if line.startswith(command) and line[len(command) :].strip():
                    return Action(action_type, line[len(command) :].strip())
            if line:
                return Action(ActionType.speak, line)
            self.print_fn("(type what you say, or /leave, /pass, /nv <gesture>, /do <action>)")
