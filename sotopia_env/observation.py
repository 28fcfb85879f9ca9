"""What each agent may know, rendered as a text prompt, and the observation space that holds it.

Partial observability: an agent sees the situation, its own character, goal and secrets, what the
relationship lets it know of the partner, and the dialogue so far. Never the partner's goal or secret.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import cache

import numpy as np
from gymnasium import spaces

from .actions import Action, ActionType, text_charset
from .scenarios import MAX_NAME_CHARS, Character, Relationship, Scenario

# The prompt is the situation, two profiles and up to max_turns x 2 utterances: bounded by the env's
# limits, checked when the env is built (`prompt_chars_bound`).
PROMPT_OVERHEAD_CHARS = 20_000
NO_DIALOGUE = "(nothing yet)"  # the dialogue part of the prompt before anyone has acted


def describe_self(character: Character) -> str:
    parts = [f"You are {character.name}, {character.age}, {character.occupation} ({character.pronouns})."]
    if character.personality:
        parts.append(f"Personality: {character.personality}")
    if character.values:
        parts.append(f"Values: {', '.join(character.values)}.")
    if character.decision_style:
        parts.append(f"Decision style: {character.decision_style}")
    if character.public_info:
        parts.append(f"Background: {character.public_info}")
    return "\n".join(parts)


def describe_partner(partner: Character, relationship: Relationship) -> str:
    """What the relationship lets an agent know about the other character (Sotopia's visibility rule)."""
    if relationship is Relationship.stranger:
        return f"The other person is {partner.first_name}, a stranger to you."
    if relationship is Relationship.know_by_name:
        return f"The other person is {partner.name}; you know them by name only."
    text = (
        f"The other person is {partner.name}, {partner.age}, {partner.occupation} ({partner.pronouns}); "
        f"your relationship: {relationship.value.replace('_', ' ')}."
    )
    if relationship is not Relationship.acquaintance:
        text += f"\nWhat you know of them: {partner.personality} {partner.public_info}".rstrip()
    return text


def prompt_header(scenario: Scenario, characters: Sequence[Character], seat: int) -> str:
    """The part of an agent's prompt that stays fixed for the whole episode."""
    me, partner = characters[seat], characters[1 - seat]
    role = scenario.roles[seat]
    lines = [
        f"Scenario: {scenario.situation}",
        "",
        describe_self(me),
        "",
        describe_partner(partner, scenario.relationship),
    ]
    secrets = [s for s in (me.secret, role.secret) if s]
    if secrets:
        lines += ["", "Your secret (do not reveal it unless it serves your goal): " + " ".join(secrets)]
    lines += ["", f"Your goal: {role.goal}", "", DIALOGUE_START]
    return "\n".join(lines)


DIALOGUE_START = "Conversation so far:\n"  # ends the header; the dialogue lines follow
_LINE_START = re.compile(r"\n(?=Turn \d+: )")


def split_prompt(prompt: str) -> tuple[str, list[str], str] | None:
    """(header, dialogue lines, closing line) of an observation prompt; None for text of another shape.

    Readers with a token budget keep the header and the closing line and drop the oldest lines
    (`agents.render`); this is the one place that knows how the prompt is laid out."""
    start = prompt.find(DIALOGUE_START)
    if start < 0:
        return None
    head_end = start + len(DIALOGUE_START)
    rest = prompt[head_end:]
    cut = rest.rfind("\n\n")
    if cut < 0:
        return None
    body = rest[:cut]
    lines = [] if body in ("", NO_DIALOGUE) else _LINE_START.split(body)
    return prompt[:head_end], lines, rest[cut:]


_SPEAKER = re.compile(r"You are (.+?); what do you do next\?$")


def speaker_of(prompt: str) -> str | None:
    """The name of the character an observation prompt asks to act ("... You are Dana Levi; what do you do
    next?"), or None for a prompt of another shape or one that asks nobody (the other seat's turn, the end)."""
    parts = split_prompt(prompt)
    match = _SPEAKER.search(parts[2].strip()) if parts else None
    return match.group(1) if match else None


def scenario_of(prompt: str) -> str | None:
    """The scenario line that opens an observation prompt ("Scenario: ..."): the same for every state of every
    dialogue in that scenario, so held-out sets can keep whole scenarios apart. None for text of another shape."""
    parts = split_prompt(prompt)
    if parts is None or not parts[0].startswith("Scenario: "):
        return None
    return parts[0].split("\n", 1)[0]


def dialogue_of(prompt: str) -> str | None:
    """What identifies an observation prompt's dialogue whichever seat observes it: the scenario line and the two
    characters' first names. None for text of another shape."""
    scenario = scenario_of(prompt)
    me = speaker_of(prompt) or (re.search(r"^You are ([^,]+),", prompt, re.M) or [None, None])[1]
    partner = re.search(r"^The other person is ([^,;.]+)", prompt, re.M)
    if scenario is None or not me or partner is None:
        return None
    names = sorted(name.split()[0] for name in (me, partner.group(1)))
    return f"{scenario}|{names[0]}|{names[1]}"


# Header lines a tight token budget may drop, after the old dialogue lines: profile details. The scenario,
# who you are, who the partner is, your secret and your goal always stay.
PROFILE_DETAIL_PREFIXES = ("Personality: ", "Values: ", "Decision style: ", "Background: ", "What you know of them: ")


def compact_header(header: str) -> str:
    """The header without its profile details (`PROFILE_DETAIL_PREFIXES`)."""
    return "\n".join(line for line in header.split("\n") if not line.startswith(PROFILE_DETAIL_PREFIXES))


def history_line(index: int, speaker_name: str, action: Action) -> str:
    return f"Turn {index}: {action.render(speaker_name)}"


TURN_LINE = "\n\nIt is turn "  # opens the closing line while the dialogue goes on; the turn number follows


def footer_tails(characters: Sequence[Character], seat: int, max_turns: int) -> tuple[str, str]:
    """What follows `TURN_LINE` and the turn number in this seat's closing line: (on its turn, while it waits).
    Fixed for an episode, so the env renders them at reset and each step only puts the turn number in."""
    return (
        f" of {max_turns}. You are {characters[seat].name}; what do you do next?",
        f" of {max_turns}. Wait for {characters[1 - seat].first_name}.",
    )


def prompt_footer(
    characters: Sequence[Character], seat: int, turn: int, max_turns: int, your_turn: bool, ended: bool = False
) -> str:
    if ended:  # nobody acts again: no question a model could answer as if the dialogue went on
        return f"\n\nThe conversation is over after {turn} of {max_turns} turns."
    return f"{TURN_LINE}{turn}{footer_tails(characters, seat, max_turns)[0 if your_turn else 1]}"


# `action_type_mask`: 1 where an action of that type takes effect this step. The agent whose turn it is
# may take any; the one who waits only `none` (anything else is ignored); nobody acts once it is over.
MASK_ANY = np.ones(len(ActionType), dtype=np.int8)
MASK_WAIT = np.array([int(t is ActionType.none) for t in ActionType], dtype=np.int8)
MASK_ENDED = np.zeros(len(ActionType), dtype=np.int8)


@cache
def _charset_space() -> spaces.Text:
    return spaces.Text(max_length=1, min_length=0, charset=text_charset())


def text_space(max_length: int) -> spaces.Text:
    """A fresh `Text` space over the shared charset: every length copies one space, so the charset's index
    (a set, a tuple and a dict of some 58k characters) is built once in a process, not once per length, and
    the garbage collector has one set to walk instead of one per length."""
    space = copy.copy(_charset_space())
    space.max_length = max_length
    space._np_random = None  # each copy gets its own generator when seeded
    return space


def observation_space(max_turns: int, max_utterance_chars: int, n_agents: int = 2) -> spaces.Dict:
    max_history = max_turns * n_agents
    prompt_chars = PROMPT_OVERHEAD_CHARS + max_history * (max_utterance_chars + 80)
    return spaces.Dict(
        {
            "prompt": text_space(prompt_chars),
            "name": text_space(MAX_NAME_CHARS),  # the observer's character: who speaks when it is their turn
            "turn": spaces.Discrete(max_turns + 1),
            "seat": spaces.Discrete(n_agents),
            "your_turn": spaces.Discrete(2),
            "action_type_mask": spaces.MultiBinary(len(ActionType)),
            "history": spaces.Sequence(
                spaces.Dict(
                    {
                        "speaker": spaces.Discrete(n_agents),
                        "action_type": spaces.Discrete(len(ActionType)),
                        "argument": text_space(max_utterance_chars),
                    }
                )
            ),
        }
    )


def action_space(max_utterance_chars: int) -> spaces.Dict:
    """The structured action; a plain string passed to `step` is shorthand for a `speak`."""
    return spaces.Dict(
        {
            "action_type": spaces.Discrete(len(ActionType)),
            "argument": text_space(max_utterance_chars),
        }
    )
