"""Ask a model for JSON, validate it, retry a bounded number of times, and cache what passed.

The judge and the utterance attributor both need this: many requests in one batched `generate`, a JSON
schema for guided decoding where the engine supports it, validation where it does not, and a cache so a
rerun of the same requests costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.engine import Engine, Messages, Sample, SamplingParams
from agents.render import PromptTooLong
from sotopia_env.jsonio import append_jsonl, iter_jsonl

Validator = Callable[[Any], list[str]]  # problems; empty when the answer is usable


@dataclass
class Request:
    key: str  # cache key: must change whenever the prompt or the model would
    messages: Messages
    schema: dict[str, Any]
    validate: Validator


@dataclass
class Outcome:
    value: Any = None
    error: str = ""  # set when every attempt failed
    attempts: int = 0
    cached: bool = False


def extract_json(text: str) -> Any:
    """The JSON object in a reply (models wrap it in prose or code fences). NaN and Infinity, which JSON has
    not and Python's json would accept, make it an invalid answer: it is asked again, never cached."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    return json.loads(text[start : end + 1], parse_constant=_not_a_number)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class JSONCache:
    """Validated answers by key, in a JSONL file (appended atomically, read once)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, Any] = {}
        if self.path and self.path.exists():
            self.entries = {r["key"]: r["value"] for r in iter_jsonl(self.path)}

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        self.entries[key] = value
        if self.path:
            append_jsonl(self.path, {"key": key, "value": value})


def generate_fitting(
    engine: Engine, requests: list[Request], params: SamplingParams
) -> tuple[list[tuple[Request, list[Sample]]], list[tuple[Request, str]]]:
    """(request, samples) for the requests the engine can take, and (request, why not) for those whose
    prompt cannot fit its context with params.max_new_tokens: one such request does not cost the others
    their answers."""
    refused: list[tuple[Request, str]] = []
    while requests:
        try:
            return list(zip(requests, engine.generate([r.messages for r in requests], params))), refused
        except PromptTooLong as exc:
            refused.append((requests[exc.index], exc.reason))
            requests = requests[: exc.index] + requests[exc.index + 1 :]
    return [], refused


def ask_json(
    engine: Engine,
    requests: list[Request],
    cache: JSONCache,
    max_attempts: int = 3,
    max_new_tokens: int = 768,
    seed: int = 0,
) -> dict[str, Outcome]:
    """Answers for all requests. The first attempt is greedy (temperature 0); a retry samples at 0.3 so a
    deterministic engine does not repeat the same invalid answer. A request whose prompt cannot fit the
    engine's context with max_new_tokens fails at once with the engine's reason (a retry cannot fit it)."""
    outcomes: dict[str, Outcome] = {}
    pending = []
    for req in requests:
        hit = cache.get(req.key)
        if hit is not None:
            outcomes[req.key] = Outcome(value=hit, cached=True)
        else:
            pending.append(req)
            outcomes[req.key] = Outcome()
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        by_schema: dict[str, list[Request]] = {}
        for req in pending:  # one generate call per distinct schema (guided decoding takes one per call)
            by_schema.setdefault(json.dumps(req.schema, sort_keys=True), []).append(req)
        failed = []
        for group in by_schema.values():
            params = SamplingParams(
                max_new_tokens=max_new_tokens,
                temperature=0.0 if attempt == 1 else 0.3,
                seed=seed + attempt,
                json_schema=group[0].schema,
            )
            answered, refused = generate_fitting(engine, group, params)
            for req, reason in refused:
                outcomes[req.key].attempts, outcomes[req.key].error = attempt, reason[:500]
            for req, samples in answered:
                outcome = outcomes[req.key]
                outcome.attempts = attempt
                try:
                    value = extract_json(samples[0].text)
                    problems = req.validate(value)
                except (ValueError, json.JSONDecodeError) as exc:
                    problems = [f"unparseable answer: {exc}"]
                if problems:
                    outcome.error = "; ".join(problems)[:500]
                    failed.append(req)
                else:
                    outcome.value, outcome.error = value, ""
                    cache.put(req.key, value)
        pending = failed
    return outcomes
