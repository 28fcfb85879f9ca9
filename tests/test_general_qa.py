"""`sotopia-env eval-general` (benchmarks/general_qa.py): EleutherAI's lm-evaluation-harness, for real, on the shipped
ten-question task (lm-eval's task format, local JSON data), the embedded model against the same model with an adapter
trained here by behaviour cloning (trainers.bc), as Sotopia-pi compares its base and trained agents."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.general_qa import EvalGeneralConfig, Row, markdown, rows, shipped_task, task_spec


def test_the_shipped_task_is_ten_questions_whose_data_path_is_made_absolute():
    spec = task_spec(shipped_task())
    data = spec["dataset_kwargs"]["data_files"]["test"]
    assert spec["task"] == "sotopia_social_mc" and spec["output_type"] == "multiple_choice"
    questions = [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines()]
    assert len(questions) == 10 and all(0 <= q["answer"] < len(q["choices"]) == 4 for q in questions)
    assert task_spec("mmlu") == "mmlu"  # a name goes to lm-eval as it is


def test_the_table_puts_base_and_trained_side_by_side_with_the_difference():
    base = {"results": {"mmlu": {"acc,none": 0.25, "acc_stderr,none": 0.01}, "x": {"bleu,none": 3}}}
    base["n-samples"] = {"mmlu": {"effective": 400}}
    trained = {"results": {"mmlu": {"acc,none": 0.3, "acc_stderr,none": 0.02}}}
    [row] = rows(base, trained)  # a task without an accuracy-like metric is left out
    assert row == Row("mmlu", "acc", 0.25, 0.01, 0.3, 0.02, 400) and row.difference == pytest.approx(0.05)
    text = markdown(EvalGeneralConfig(adapter=None), rows(base, None))
    assert "| mmlu | acc | 400 | 0.250 ± 0.010 |" in text and "trained" not in text.split("\n", 3)[3]
    with pytest.raises(ValueError, match=r"EvalGeneralConfig.model = 'embedded\+lora:x'.*--adapter"):
        EvalGeneralConfig(model="embedded+lora:x").validate()


@pytest.fixture(scope="module")
def bc_adapter(embedded_dir, tmp_path_factory) -> Path:
    """A trained policy: a LoRA adapter behaviour-cloned on the replies of two judged episodes."""
    from test_trainers import judged_episodes

    from trainers.bc import BCConfig, train_bc

    tmp = tmp_path_factory.mktemp("bc")
    judged_episodes(tmp / "episodes.jsonl", [(9, 8), (8, 9)])
    cfg = BCConfig(
        episodes=str(tmp / "episodes.jsonl"), out=str(tmp / "bc"), batch_size=2, max_length=320, lora_layers=2, lr=2e-3
    )
    summary = train_bc(cfg, progress=False)
    assert summary["steps"] >= 2
    return tmp / "bc" / "adapter"


@pytest.mark.slow
def test_eval_general_runs_lm_eval_on_base_and_a_trained_adapter_and_writes_one_table(bc_adapter, tmp_path, capsys):
    adapter = bc_adapter
    out = tmp_path / "general"
    assert main(["eval-general", "--adapter", str(adapter), "--out", str(out), "--batch-size", "16"]) == 0
    with open(out / "general.csv", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert row["task"] == "sotopia_social_mc" and row["metric"] == "acc" and row["n"] == "10"
    base, trained = float(row["base"]), float(row["trained"])
    for value in (base, trained):
        assert value * 10 == pytest.approx(round(value * 10))  # a share of ten questions
    assert float(row["difference"]) == pytest.approx(trained - base)
    assert math.isfinite(float(row["base_stderr"])) and "| sotopia_social_mc | acc | 10 |" in capsys.readouterr().out
    base_run = json.loads((out / "results_base.json").read_text())
    trained_run = json.loads((out / "results_trained.json").read_text())
    assert base_run["settings"]["adapter"] is None and trained_run["settings"]["adapter"] == str(adapter)
    # A rerun with the same settings reuses both results: lm-eval is not run again.
    import lm_eval

    original, lm_eval.simple_evaluate = lm_eval.simple_evaluate, None
    try:
        assert main(["eval-general", "--adapter", str(adapter), "--out", str(out), "--batch-size", "16"]) == 0
    finally:
        lm_eval.simple_evaluate = original
