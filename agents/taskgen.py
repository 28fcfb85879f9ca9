"""`sotopia-env generate-tasks`: new social scenarios from keywords, written by a model (Sotopia-π, step 1).

    sotopia-env generate-tasks --n 100 --model openai:gpt-4o@https://api.openai.com/v1 --out tasks/gen

Each request samples a category and a few keywords of it (agents/data/social_keywords.txt) and asks the model
for one scenario as JSON under `SCENARIO_SCHEMA` (guided decoding on vLLM, `response_format` json_schema on
OpenAI-compatible servers; the transformers engine cannot constrain, so every answer is validated anyway).
An answer becomes a `Scenario` or is rejected, counted by reason (`REASONS`):
- not_json: no JSON object in the reply; invalid: it does not validate as a scenario;
- missing_goal, identical_goals: a role without a goal, or both roles with the same goal;
- secret_in_situation: a role's secret is stated in the shared situation (most of its word 3-shingles are);
- near_duplicate: word 3-shingle Jaccard similarity to the shipped library or an accepted scenario at or
  above `max_similarity`.
Accepted scenarios are tagged `hard` by the library's rule (`scenarios.is_hard`) and get `pairings` character
pairs drawn from the shipped characters. OUT is a library (scenarios.jsonl, characters.jsonl, pairings.json)
that `collect --library OUT`, `benchmark --library OUT` and `scenarios --file OUT/scenarios.jsonl` load. Every
request's outcome is appended to OUT/requests.jsonl, so a rerun resumes with the next request and the same
samples; OUT/summary.json counts them: accepted + each rejection reason + unused (answered after the quota was
met) = requests.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sotopia_env.cli import config_error
from sotopia_env.jsonio import append_jsonl, iter_jsonl, write_json_atomic, write_jsonl_atomic
from sotopia_env.scenarios import (
    ASYMMETRY_TAG,
    CATEGORIES,
    CONFLICT_TAG,
    Relationship,
    Role,
    Scenario,
    is_hard,
    library_characters,
    library_scenarios,
    make_pairings,
)

from .engine import Engine, Messages, SamplingParams, request_seed

REASONS = (
    "not_json",
    "invalid",
    "missing_goal",
    "identical_goals",
    "secret_in_situation",
    "near_duplicate",
)
SHINGLE = 3  # words per shingle in the similarity measure


@dataclass
class TaskGenConfig:
    n: int = field(metadata={"help": "number of scenarios to accept"})
    out: str = field(metadata={"help": "library folder: scenarios.jsonl, characters.jsonl, pairings.json"})
    model: str = field(
        default="vllm:embedded", metadata={"help": "model spec (use a strong model, e.g. openai:gpt-4o@URL)"}
    )
    keywords: int = field(default=3, metadata={"help": "keywords sampled per request"})
    max_similarity: float = field(
        default=0.5, metadata={"help": "reject at or above this word 3-shingle Jaccard to an existing scenario"}
    )
    pairings: int = field(default=5, metadata={"help": "character pairings drawn per accepted scenario"})
    max_requests: int | None = field(default=None, metadata={"help": "give up after this many requests (default 5n)"})
    batch_size: int = field(
        default=16, metadata={"help": "requests per generate call (concurrent on OpenAI-compatible servers)"}
    )
    request_timeout_s: float = field(
        default=120.0,
        metadata={
            "help": "seconds an OpenAI-compatible server may take to answer one request before it is retried "
            "(raise it for a slow or busy server)"
        },
    )
    temperature: float = field(default=1.0)
    max_new_tokens: int = field(default=512)
    seed: int = field(default=0)

    def validate(self) -> None:
        rules = [
            ("n", self.n >= 1, "must be at least 1"),
            ("keywords", self.keywords >= 1, "must be at least 1"),
            ("max_similarity", 0 < self.max_similarity <= 1, "must be in (0, 1]"),
            ("pairings", self.pairings >= 1, "must be at least 1"),
            ("max_requests", self.max_requests is None or self.max_requests >= self.n, "must be at least --n"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("request_timeout_s", self.request_timeout_s > 0, "must be more than 0 seconds"),
            ("temperature", self.temperature >= 0, "must be >= 0"),
            ("max_new_tokens", self.max_new_tokens >= 64, "must be at least 64 (a scenario is a few sentences)"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)


# --- keywords and the request ------------------------------------------------------------------


def load_keywords(path: str | Path | None = None) -> dict[str, list[str]]:
    """Keywords by category from a file of "[category]" headers and one keyword per line ("#" comments)."""
    text = (
        Path(path).read_text(encoding="utf-8")
        if path
        else (resources.files("agents") / "data" / "social_keywords.txt").read_text(encoding="utf-8")
    )
    out: dict[str, list[str]] = {}
    current = None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = header.group(1)
            if current not in CATEGORIES:
                raise ValueError(f"keywords line {lineno}: unknown category {current!r}; use one of {CATEGORIES}")
            out.setdefault(current, [])
        elif current is None:
            raise ValueError(f"keywords line {lineno}: a keyword before any [category] header")
        else:
            out[current].append(line)
    return out


def sample_request(keywords: dict[str, list[str]], count: int, seed: int, index: int) -> tuple[str, list[str]]:
    """(category, keywords) of request `index`: the same for the same seed and index, so a rerun resumes."""
    rng = random.Random(request_seed(seed, "taskgen", index))
    category = rng.choice(sorted(keywords))
    return category, rng.sample(keywords[category], min(count, len(keywords[category])))


SCENARIO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "situation": {"type": "string", "minLength": 20, "maxLength": 600},
        "relationship": {"type": "string", "enum": [r.value for r in Relationship]},
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "goal_1": {"type": "string", "minLength": 10, "maxLength": 300},
        "goal_2": {"type": "string", "minLength": 10, "maxLength": 300},
        "secret_1": {"type": "string", "maxLength": 200},
        "secret_2": {"type": "string", "maxLength": 200},
        "goals_conflict": {"type": "boolean"},
        "information_asymmetry": {"type": "boolean"},
    },
    "required": [
        "situation",
        "relationship",
        "category",
        "goal_1",
        "goal_2",
        "secret_1",
        "secret_2",
        "goals_conflict",
        "information_asymmetry",
    ],
    "additionalProperties": False,
}


def task_messages(category: str, keywords: list[str]) -> Messages:
    user = "\n".join(
        [
            f"Write one social scenario of the category '{category}' involving: {', '.join(keywords)}.",
            "Two people meet in the situation. Each has a private goal the other does not know; the goals "
            "must differ and should be hard to satisfy at once. A secret, when a person has one, is private "
            "and must not be stated in the situation (leave it empty otherwise).",
            "Reply with a JSON object: situation (what both people know, 1-3 sentences, no names), "
            f"relationship (one of {', '.join(r.value for r in Relationship)}), category, goal_1, goal_2 (each "
            "an instruction to that person, e.g. 'Convince the other to ...'), secret_1, secret_2, "
            "goals_conflict (true when one person's success is the other's loss), information_asymmetry (true "
            "when one person knows something the other needs).",
        ]
    )
    system = "You design role-play scenarios for studying social skills. Answer with the JSON object only."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# --- checking an answer ------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def shingles(text: str, size: int = SHINGLE) -> set[tuple[str, ...]]:
    """The set of `size`-word windows of a text (the whole text as one when it is shorter)."""
    w = words(text)
    return {tuple(w[i : i + size]) for i in range(max(1, len(w) - size + 1))} if w else set()


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def scenario_text(scenario: Scenario) -> str:
    """What near-duplicate detection compares: the situation and both goals."""
    return " ".join([scenario.situation, *(r.goal for r in scenario.roles)])


def secret_stated(secret: str, situation: str) -> bool:
    """Whether most (at least half) of a secret's word 3-shingles appear in the situation."""
    mine = shingles(secret)
    return bool(mine) and len(mine & shingles(situation)) / len(mine) >= 0.5


def extract_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def check_answer(text: str, scenario_id: str, source: str) -> tuple[Scenario | None, str, str]:
    """(the scenario, "", "") for a usable answer, else (None, rejection reason, detail)."""
    value = extract_object(text)
    if value is None:
        return None, "not_json", text[:200]
    goals = [str(value.get("goal_1") or "").strip(), str(value.get("goal_2") or "").strip()]
    if not all(goals):
        return None, "missing_goal", f"goals {goals!r}"
    if " ".join(words(goals[0])) == " ".join(words(goals[1])):
        return None, "identical_goals", goals[0][:200]
    situation = str(value.get("situation") or "")
    secrets = [str(value.get("secret_1") or "").strip(), str(value.get("secret_2") or "").strip()]
    for secret in secrets:
        if secret and secret_stated(secret, situation):
            return None, "secret_in_situation", secret[:200]
    tags = [
        t
        for t, on in ((CONFLICT_TAG, value.get("goals_conflict")), (ASYMMETRY_TAG, value.get("information_asymmetry")))
        if on is True
    ]
    try:
        scenario = Scenario(
            id=scenario_id,
            situation=situation,
            relationship=value.get("relationship", "stranger"),
            roles=(Role(goal=goals[0], secret=secrets[0]), Role(goal=goals[1], secret=secrets[1])),
            category=value.get("category") or "",
            tags=tuple(tags),
            source=source,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return None, "invalid", problems[:200]
    if is_hard(scenario):
        scenario = scenario.model_copy(update={"tags": (*scenario.tags, "hard")})
    return scenario, "", ""


# --- the run ----------------------------------------------------------------------------------


def scenario_id(seed: int, request: int) -> str:
    return f"gen-{seed}-{request:05d}"


def generate_tasks(cfg: TaskGenConfig, engine: Engine, progress: bool = True) -> dict[str, Any]:
    """Generate until `cfg.n` scenarios are accepted or `max_requests` are spent; resumes from OUT."""
    from tqdm import tqdm

    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, scenarios_path = out / "requests.jsonl", out / "scenarios.jsonl"
    log = list(iter_jsonl(log_path))
    accepted = [Scenario.model_validate(r) for r in iter_jsonl(scenarios_path)]
    keywords = load_keywords()
    existing = [shingles(scenario_text(s)) for s in [*library_scenarios().values(), *accepted]]
    max_requests = cfg.max_requests or 5 * cfg.n
    source = f"generated:{engine.model_name}"
    params = SamplingParams(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, top_p=1.0, json_schema=SCENARIO_SCHEMA
    )
    with tqdm(total=cfg.n, initial=min(len(accepted), cfg.n), desc="tasks", unit="task", disable=not progress) as bar:
        index = len(log)
        ids = {s.id for s in accepted}
        while scenario_id(cfg.seed, index) in ids:  # accepted, then a crash before its log line: log it now
            append_jsonl(log_path, {"request": index, "outcome": "accepted", "id": scenario_id(cfg.seed, index)})
            index += 1
        while len(accepted) < cfg.n and index < max_requests:
            # Ask for what is still missing, with room for rejections, within the request budget.
            batch = list(range(index, min(index + cfg.batch_size, max_requests)))
            requests = [sample_request(keywords, cfg.keywords, cfg.seed, i) for i in batch]
            seeds = [request_seed(cfg.seed, "taskgen", i) for i in batch]
            replies = engine.generate([task_messages(c, k) for c, k in requests], params, seeds=seeds)
            for i, (category, kws), samples in zip(batch, requests, replies):
                finish = samples[0].finish_reason
                record: dict[str, Any] = {"request": i, "category": category, "keywords": kws}
                # tokens: None where the engine got no token ids back (an OpenAI-compatible server, by default)
                record.update(finish_reason=finish, tokens=len(samples[0].token_ids) or None)
                if len(accepted) >= cfg.n:
                    record["outcome"] = "unused"  # the batch overshot: answered after the quota was met
                    append_jsonl(log_path, record)
                    continue
                scenario, reason, detail = check_answer(samples[0].text, scenario_id(cfg.seed, i), source)
                if scenario is not None:
                    mine = shingles(scenario_text(scenario))
                    closest = max((jaccard(mine, other) for other in existing), default=0.0)
                    if closest >= cfg.max_similarity:
                        scenario, reason, detail = None, "near_duplicate", f"Jaccard {closest:.2f}"
                if scenario is None:
                    if finish == "length":  # guided decoding never finished the object
                        detail = f"cut at {cfg.max_new_tokens} tokens (raise --max-new-tokens): {detail}"
                    record.update(outcome="rejected", reason=reason, detail=detail)
                else:
                    append_jsonl(scenarios_path, scenario)  # before its log line: see the resume above
                    accepted.append(scenario)
                    existing.append(shingles(scenario_text(scenario)))
                    record.update(outcome="accepted", id=scenario.id)
                    bar.update(1)
                append_jsonl(log_path, record)
            index = batch[-1] + 1
    return write_summary(cfg, out, accepted)


def write_summary(cfg: TaskGenConfig, out: Path, accepted: list[Scenario]) -> dict[str, Any]:
    """Characters, pairings and the summary of everything in OUT (so a resumed run's summary covers all)."""
    characters = library_characters()
    write_jsonl_atomic(out / "characters.jsonl", characters.values())
    pairings = make_pairings([s.id for s in accepted], sorted(characters), cfg.pairings, seed=cfg.seed)
    write_json_atomic(out / "pairings.json", pairings)
    log = list(iter_jsonl(out / "requests.jsonl"))
    rejected = Counter(r["reason"] for r in log if r.get("outcome") == "rejected")
    summary = {
        "accepted": len(accepted),
        "hard": sum(s.hard for s in accepted),
        "requests": len(log),  # = accepted + every rejection + unused
        "rejected": {reason: rejected.get(reason, 0) for reason in REASONS},
        "unused": sum(r.get("outcome") == "unused" for r in log),
        "by_category": dict(Counter(s.category for s in accepted)),
        "library": str(out),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def generate_tasks_command(cfg: TaskGenConfig) -> int:
    from .spec import make_engine, parse_spec

    spec = parse_spec(cfg.model)
    if spec.kind in ("scripted", "human"):
        raise config_error(cfg, "model", "must name a model (embedded, hf:, vllm: or openai:), not a scripted policy")
    # A batch's requests all in flight at once on a server, each with its own timeout.
    server = {"timeout_s": cfg.request_timeout_s, "max_concurrency": cfg.batch_size} if spec.kind == "openai" else {}
    try:
        summary = generate_tasks(cfg, make_engine(spec, **server))
    except ConnectionError as exc:  # the OpenAI engine's ServerUnavailable; a timeout has a fix of its own here
        import openai

        if isinstance(exc.__cause__, openai.APITimeoutError):
            raise ConnectionError(f"{exc}; or give each request more time with --request-timeout-s") from exc
        raise
    print(json.dumps(summary, indent=1))
    if summary["accepted"] < cfg.n:
        print(
            f"only {summary['accepted']} of {cfg.n} scenarios after {summary['requests']} requests; rerun with a "
            "larger --max-requests (it resumes) or a stronger --model"
        )
    return 0
