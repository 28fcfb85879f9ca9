"""`TransformersEngine`: batched, left-padded `generate` on any causal LM; works on CPU and GPU.

The model may carry a LoRA adapter (peft); `load_adapter` swaps it in place, and the GRPO trainer can
hand its live peft model in directly (`TransformersEngine.from_model`) so rollouts use the newest weights
with no copy.
"""

from __future__ import annotations

from typing import Any

import torch

from .engine import Messages, Sample, SamplingParams, check_conversations, truncate_at_stop
from .models import EMBEDDED_NAME, chat_token_ids, default_device, default_dtype, resolve_model

MODES = ("generate", "static", "continuous")


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
    def from_model(cls, model: Any, tokenizer: Any, model_name: str, batch_size: int = 32, max_prompt_tokens: int = 2048,
                   mode: str = "generate") -> TransformersEngine:
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
        self.tokenizer.padding_side = "left"  # decoder-only generation needs the prompt flush right
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
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

    def encode(self, conversations: list[Messages]) -> list[list[int]]:
        """Chat-template token ids per conversation, history cut from the left to fit max_prompt_tokens."""
        out = []
        for conv in conversations:
            out.append(chat_token_ids(self.tokenizer, conv, add_generation_prompt=True)[-self.max_prompt_tokens :])
        return out

    @torch.no_grad()  # not inference_mode: continuous batching updates tensors from its own thread
    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        check_conversations(conversations)
        prompts = self.encode(conversations)
        results: list[list[Sample]] = []
        for start in range(0, len(prompts), self.batch_size):
            results += self._generate_batch(prompts[start : start + self.batch_size], params, start)
        return results

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, offset: int) -> list[list[Sample]]:
        if params.seed is not None:
            torch.manual_seed(params.seed + offset)
        if self.mode == "continuous":
            return self._generate_continuous(prompts, params)
        # A static cache is compiled per shape: padding prompts to a multiple of 64 bounds the recompiles.
        multiple = 64 if self.mode == "static" else None
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt", pad_to_multiple_of=multiple).to(self.device)
        sampling = params.temperature > 0
        out = self.model.generate(
            **batch,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_scores=params.logprobs,
            **({"cache_implementation": "static"} if self.mode == "static" else {}),
        )
        new_tokens = out.sequences[:, batch["input_ids"].shape[1] :]
        token_logprobs = None
        if params.logprobs:
            # log-softmax of the processed scores (temperature/top-p applied): the sampling distribution
            scores = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # [B*n, T, V]
            token_logprobs = scores.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        samples = [self._sample(ids, token_logprobs[row].tolist() if token_logprobs is not None else None, params)
                   for row, ids in enumerate(new_tokens.tolist())]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _generate_continuous(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        from transformers import GenerationConfig

        sampling = params.temperature > 0
        config = GenerationConfig(do_sample=sampling, temperature=params.temperature if sampling else None,
                                  top_p=params.top_p if sampling else None, top_k=None, max_new_tokens=params.max_new_tokens,
                                  eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        inputs = [p for p in prompts for _ in range(params.n)]
        outputs = self.model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
        ordered = [outputs.get(f"req_{i}") for i in range(len(inputs))]
        failed = [i for i, o in enumerate(ordered) if o is None or o.error]
        if failed:
            raise RuntimeError(f"continuous batching failed on {len(failed)} of {len(inputs)} requests: "
                               f"{next((o.error for o in ordered if o is not None and o.error), 'missing output')}")
        samples = [self._sample(list(o.generated_tokens), list(o.logprobs) if params.logprobs and o.logprobs else None, params)
                   for o in ordered]
        return [samples[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _sample(self, ids: list[int], logprobs: list[float] | None, params: SamplingParams) -> Sample:
        """A Sample from generated ids: cut at the first EOS/pad, decoded, cut at stop strings."""
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        length = next((i for i, t in enumerate(ids) if t in eos), None)
        finish = "stop" if length is not None else "length"
        ids = ids[:length] if length is not None else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if params.stop:
            text, stopped = truncate_at_stop(text, params.stop)
            finish = "stop" if stopped else finish
        return Sample(text=text, token_ids=ids, logprobs=logprobs[: len(ids)] if logprobs is not None else None, finish_reason=finish)
