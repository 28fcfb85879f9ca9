"""`RewardModel`: a sequence-regression head plus LoRA over the policy's own (dialogue state, utterance) text.

The input is the chat the policy sees (`agents.llm_agent.build_messages`) with the utterance as the
assistant's reply, tokenized with the chat template and fitted to `max_length` by `agents.render` (the
system turn, scenario, goal, closing line and utterance stay; the oldest dialogue lines are left out). The
model is `AutoModelForSequenceClassification(num_labels=1)` with a peft LoRA adapter (the score head trained
in full), saved with its config. It is trained on the labels themselves (0..10, already normalised by
`sotopia-env label`), so its scores are read as they come.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from agents.llm_agent import build_messages
from agents.lora import with_lora
from agents.models import default_device, resolve_model
from agents.render import render_chat
from sotopia_env.jsonio import complete_folder, read_json, write_json_atomic


@dataclass
class RewardModelConfig:
    base: str = "embedded"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_layers: int | None = None  # LoRA on the top N transformer layers only (None: all layers)
    max_length: int = 512  # tokens per (state, utterance); the oldest dialogue lines are left out beyond it


class RewardModel:
    def __init__(self, model: Any, tokenizer: Any, config: RewardModelConfig) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.path: str | None = None  # the folder it was loaded from, for messages
        self.device = str(next(model.parameters()).device)
        self._cache: OrderedDict[str, float] = OrderedDict()
        self.cache_size = 100_000

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def create(cls, config: RewardModelConfig | None = None, device: str | None = None) -> RewardModel:
        from transformers import AutoTokenizer

        config = config or RewardModelConfig()
        path = resolve_model(config.base)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = _base_classifier(path)
        model.config.pad_token_id = tokenizer.pad_token_id
        model = with_lora(
            model, rank=config.lora_r, alpha=config.lora_alpha, top_layers=config.lora_layers, task_type="SEQ_CLS"
        ).to(device or default_device())
        return cls(model, tokenizer, config)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> RewardModel:
        from transformers import AutoTokenizer

        path = complete_folder(path) or Path(path)  # `<path>.old` after a crash between a save's two renames
        if not (path / "rm_config.json").exists():
            raise FileNotFoundError(
                f"{path} is not a saved reward model (no rm_config.json); train one with sotopia-env train-rm"
            )
        config = RewardModelConfig(**read_json(path / "rm_config.json"))
        base = resolve_model(config.base)
        # `save` writes the tokenizer beside the adapter; a folder of adapter and config alone reads the base's.
        tokenizer = AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").exists() else base)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = _base_classifier(base)
        model.config.pad_token_id = tokenizer.pad_token_id
        model = with_lora(model, adapter=path, trainable=False).to(device or default_device()).eval()
        rm = cls(model, tokenizer, config)
        rm.path = str(path)
        return rm

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        write_json_atomic(path / "rm_config.json", asdict(self.config))

    # --- inputs -------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str | list[dict[str, str]]], utterances: Sequence[str]) -> list[list[int]]:
        """Token ids of (state, utterance) pairs; a state is an observation prompt or a chat message list."""
        out = []
        for prompt, utterance in zip(prompts, utterances):
            messages = build_messages({"prompt": prompt}) if isinstance(prompt, str) else list(prompt)
            # Header, goal, closing line and utterance stay; old dialogue lines go first (agents.render). An
            # utterance longer than half the budget is cut at its end.
            budget = self.config.max_length
            out.append(render_chat(self.tokenizer, messages, budget, reply=utterance, reply_budget=budget // 2).ids)
        return out

    def forward(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores [B] for token id lists (gradients flow when called outside no_grad)."""
        batch = self.tokenizer.pad({"input_ids": [list(x) for x in ids]}, return_tensors="pt", padding_side="right").to(
            self.device
        )
        return self.model(**batch).logits.squeeze(-1)

    # --- scoring --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[str | list[dict[str, str]]], utterances: Sequence[str], batch_size: int = 16
    ) -> list[float]:
        """Batched scores, longest-first to pad little, with an LRU cache of earlier (state, utterance) pairs."""
        if len(prompts) != len(utterances):
            raise ValueError(f"got {len(prompts)} states but {len(utterances)} utterances")
        keys = [hashlib.sha1(json.dumps([p, u]).encode()).hexdigest() for p, u in zip(prompts, utterances)]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            was_training = self.model.training
            self.model.eval()
            ids = self.encode([prompts[i] for i in todo], [utterances[i] for i in todo])
            order = sorted(range(len(todo)), key=lambda j: -len(ids[j]))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                values = self.forward([ids[j] for j in chunk]).float().tolist()
                for j, v in zip(chunk, values):
                    self._cache[keys[todo[j]]] = v
            self.model.train(was_training)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [self._cache[k] for k in keys]

    def clear_cache(self) -> None:
        """Call after changing the weights (training) so stale scores are not served."""
        self._cache.clear()

    # --- wrappers -------------------------------------------------------------------------------------

    def as_env_reward(self) -> EnvReward:
        """The env's per-utterance reward function: scores (the prompt the speaker saw, what it said); its
        `batch` form scores many contexts in one batched pass (vector envs, trainers' candidates)."""
        return EnvReward(self)

    def as_trl_reward(self):  # noqa: ANN201
        """A TRL-style reward function `(prompts, completions, **kwargs) -> list[float]`.

        Prompts may be strings (observation prompts) or chat message lists; completions strings or
        [{"role": "assistant", "content": ...}] lists, as TRL passes them for conversational data.
        """

        def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            return self.score(prompts, texts)

        reward.__name__ = "sotopia_reward_model"
        return reward


class EnvReward:
    """A `RewardModel` as the env's `UtteranceReward` (sotopia_env.env): one context, or a batch of them."""

    def __init__(self, model: RewardModel) -> None:
        self.model = model
        self.description = f"reward model {model.path or '(not saved)'}"  # how errors name it

    def __call__(self, context: Any) -> float:  # a sotopia_env.RewardContext
        return self.batch([context])[0]

    def batch(self, contexts: Sequence[Any]) -> list[float]:
        return self.model.score([c.prompt for c in contexts], [c.action.argument for c in contexts])


def _base_classifier(path: str) -> Any:
    """The base LM with a one-output score head. The head is new by design (created here, then trained, or
    replaced by the saved one on load), so transformers' "newly initialized" load report is silenced."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(level)
