"""`TransformersEngine`: batched, left-padded `generate` on any causal LM; works on CPU and GPU.

The model may carry a LoRA adapter (peft); `load_adapter` swaps it in place, and the GRPO trainer can
hand its live peft model in directly (`TransformersEngine.from_model`) so rollouts use the newest weights
with no copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .engine import (
    MODES,
    Messages,
    Sample,
    SamplingParams,
    check_conversations,
    request_seed,
    request_seeds,
    truncate_at_stop,
)
from .models import EMBEDDED_NAME, default_device, default_dtype, resolve_model
from .played import end_ids
from .render import render_prompts

# `generate` merges the model's generation_config into every call, and some of its processors act whatever
# `do_sample` says (a repetition penalty, a minimum length that hides the end token, banned words...). The
# sampler must be exactly softmax(logits / T) with top-p (`SeededSampler`), so each is set to its neutral value.
NEUTRAL_GENERATE: dict[str, Any] = dict(
    do_sample=False,  # the sampler's draw is the argmax of its output (see SeededSampler)
    temperature=None,
    top_p=None,
    top_k=None,
    min_p=None,
    typical_p=None,
    epsilon_cutoff=None,
    eta_cutoff=None,
    repetition_penalty=None,
    encoder_repetition_penalty=None,
    no_repeat_ngram_size=None,
    encoder_no_repeat_ngram_size=None,
    bad_words_ids=None,
    min_length=None,
    min_new_tokens=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
    sequence_bias=None,
    forced_bos_token_id=None,
    forced_eos_token_id=None,
    exponential_decay_length_penalty=None,
    renormalize_logits=False,
    num_beams=1,
)


class TransformersEngine:
    def __init__(
        self,
        model: str = "embedded",
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
        max_prompt_tokens: int = 2048,
        mode: str = "generate",
    ) -> None:
        """mode: how tokens are produced (the samples are equally valid; the speed differs, see
        benchmarks/rollout_throughput.py): "generate", plain `generate` with a dynamic KV cache;
        "static", `generate` with a static KV cache, which transformers compiles (CUDA graphs) on a GPU;
        "continuous", transformers' continuous batching (`generate_batch`, paged KV cache)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or default_device()
        path = resolve_model(model)
        self.model_name = EMBEDDED_NAME if model in ("embedded", "") else model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        torch_dtype = getattr(torch, dtype or default_dtype(self.device))
        self.model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self._setup(batch_size, max_prompt_tokens, mode)
        if adapter:
            self.load_adapter(adapter)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        model_name: str,
        batch_size: int = 32,
        max_prompt_tokens: int = 2048,
        mode: str = "generate",
    ) -> TransformersEngine:
        """Wrap an already loaded model (e.g. the trainer's peft model); nothing is copied."""
        engine = cls.__new__(cls)
        engine.model, engine.tokenizer, engine.model_name = model, tokenizer, model_name
        engine.device = str(next(model.parameters()).device)
        engine._setup(batch_size, max_prompt_tokens, mode)
        return engine

    def _setup(self, batch_size: int, max_prompt_tokens: int, mode: str = "generate") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        # The positions the model was built for; a prompt plus its new tokens must fit in them.
        self.context_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.adapter_version = 0

    def load_adapter(self, path: str) -> None:
        from peft import PeftModel

        name = f"v{self.adapter_version + 1}"
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=name)
            self.model.set_adapter(name)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
        self.adapter_version += 1
        self.model_name = f"{self.model_name.split('+')[0]}+{path}"

    def encode(self, conversations: list[Messages], max_new_tokens: int = 0) -> list[list[int]]:
        """Prompt token ids per conversation, fitted by `agents.render` to max_prompt_tokens and to the
        model's context less max_new_tokens (the oldest dialogue lines are left out; the system turn, goal
        and closing line stay)."""
        return render_prompts(
            self.tokenizer, conversations, self.max_prompt_tokens, max_new_tokens, self.context_length
        )

    @torch.no_grad()  # not inference_mode: continuous batching updates tensors from its own thread
    def generate(
        self, conversations: list[Messages], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        check_conversations(conversations)
        prompts = self.encode(conversations, params.max_new_tokens)
        if self.mode == "continuous":  # transformers' continuous batching takes no per-request generator
            return self._generate_continuous(prompts, params)
        return self.generate_ids(prompts, params, request_seeds(conversations, params, seeds))

    @torch.no_grad()
    def generate_ids(
        self, prompts: list[list[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[list[Sample]]:
        """`params.n` samples for each prompt given as token ids, one seed per prompt: the one sampler of this
        engine, also for trainers that hold their prompts as ids (TRL's multi-turn rollout)."""
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one per prompt")
        # One row per sample, each with its own seed: a row's tokens depend on its prompt and seed alone.
        rows = [(i, request_seed(int(seeds[i]), j)) for i in range(len(prompts)) for j in range(params.n)]
        samples: list[Sample] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            samples += self._generate_rows([prompts[i] for i, _ in chunk], [s for _, s in chunk], params)
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _generate_rows(self, prompts: list[list[int]], seeds: list[int], params: SamplingParams) -> list[Sample]:
        # A static cache is compiled per shape: padding prompts to a multiple of 64 bounds the recompiles.
        multiple = 64 if self.mode == "static" else None
        # Decoder-only generation needs the prompts flush right: padded on the left (asked per call, so a tokenizer
        # shared with a trainer keeps its own padding side).
        batch = self.tokenizer.pad(
            {"input_ids": prompts}, return_tensors="pt", pad_to_multiple_of=multiple, padding_side="left"
        ).to(self.device)
        sampler = SeededSampler(seeds, params.temperature, params.top_p, self.device, params.logprobs)
        out = self.model.generate(
            **batch,
            **NEUTRAL_GENERATE,
            max_new_tokens=params.max_new_tokens,
            logits_processor=LogitsProcessorList([sampler]),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.end_ids),
            return_dict_in_generate=True,
            **({"stop_strings": list(params.stop), "tokenizer": self.tokenizer} if params.stop else {}),
            **({"cache_implementation": "static"} if self.mode == "static" else {}),
        )
        new_tokens = out.sequences[:, batch["input_ids"].shape[1] :]
        token_logprobs = sampler.chosen_logprobs(new_tokens) if params.logprobs else None
        return [
            self._sample(
                ids, token_logprobs[row].tolist() if token_logprobs is not None else None, params, prompts[row]
            )
            for row, ids in enumerate(new_tokens.tolist())
        ]

    def _generate_continuous(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        from transformers import GenerationConfig

        sampling = params.temperature > 0
        config = GenerationConfig(
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        inputs = [p for p in prompts for _ in range(params.n)]
        outputs = self.model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
        ordered = [outputs.get(f"req_{i}") for i in range(len(inputs))]
        failed = [i for i, o in enumerate(ordered) if o is None or o.error]
        if failed:
            raise RuntimeError(
                f"continuous batching failed on {len(failed)} of {len(inputs)} requests: "
                f"{next((o.error for o in ordered if o is not None and o.error), 'missing output')}"
            )
        samples = [
            self._sample(
                list(o.generated_tokens),
                list(o.logprobs) if params.logprobs and o.logprobs else None,
                params,
                inputs[k],
            )
            for k, o in enumerate(ordered)
        ]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    @property
    def end_ids(self) -> set[int]:
        """The ids that end a reply: the tokenizer's and the model's generation config's end of sequence."""
        return end_ids(self.tokenizer, self.model)

    def _sample(
        self, ids: list[int], logprobs: list[float] | None, params: SamplingParams, prompt: list[int]
    ) -> Sample:
        """A Sample from generated ids, cut after the token that ended it (an end id, or the token in which a
        stop string appeared), which it keeps: the trainer trains on the end the sampler produced."""
        ends = self.end_ids
        length = next((i + 1 for i, t in enumerate(ids) if t in ends), None)
        if params.stop:
            for i in range(length or len(ids)):
                if truncate_at_stop(self.tokenizer.decode(ids[: i + 1], skip_special_tokens=True), params.stop)[1]:
                    length = i + 1
                    break
        finish = "stop" if length is not None else "length"
        ids = ids[:length] if length is not None else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if params.stop:
            text, _ = truncate_at_stop(text, params.stop)
        return Sample(
            text=text,
            token_ids=ids,
            logprobs=logprobs[: len(ids)] if logprobs is not None else None,
            finish_reason=finish,
            prompt_token_ids=prompt,
        )


class SeededSampler(LogitsProcessor):
    """Samples every row from its own random stream, so a row's tokens do not depend on its batch.

    `generate(do_sample=True)` draws all rows from torch's one global generator: a sample then depends on
    its position in the batch and on every call before it. Here each row has a generator seeded with its
    request's seed, and the draw is the exponential race: argmax(p_i / E_i) with E_i ~ Exp(1) is a sample
    from p, so greedy decoding over this processor's output samples from the tempered, top-p
    distribution. Temperature 0 is greedy (no noise)."""

    def __init__(
        self, seeds: list[int], temperature: float, top_p: float, device: str, keep_logprobs: bool = False
    ) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds] if temperature > 0 else []
        self.temperature, self.top_p, self.keep_logprobs = temperature, top_p, keep_logprobs
        self._previous: torch.Tensor | None = None  # the last step's log-probs [rows, V]
        self._chosen: list[torch.Tensor] = []  # per step, the log-prob of the token taken [rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.keep_logprobs and self._previous is not None:  # the token taken last step is input_ids[:, -1]
            self._chosen.append(self._previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        logp = (
            scores.float().log_softmax(-1)
            if self.temperature <= 0
            else (scores.float() / self.temperature).log_softmax(-1)
        )
        if self.temperature > 0 and self.top_p < 1:
            sorted_logp, order = logp.sort(-1, descending=True)
            before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()  # mass of the tokens ranked above each
            drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
            logp = logp.masked_fill(drop, float("-inf")).log_softmax(-1)
        if self.keep_logprobs:
            self._previous = logp
        if self.temperature <= 0:
            return logp
        noise = torch.stack(
            [torch.empty(logp.shape[-1], device=logp.device).exponential_(generator=g) for g in self.generators]
        )
        return logp - noise.log()

    def chosen_logprobs(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """[rows, T] log-probs of the generated tokens under the sampling distribution."""
        steps = list(self._chosen)
        if self._previous is not None and len(steps) < new_tokens.shape[1]:
            steps.append(self._previous.gather(-1, new_tokens[:, len(steps) : len(steps) + 1]).squeeze(-1))
        return torch.stack(steps, 1)
