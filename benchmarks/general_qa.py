"""Does social training keep general question answering? `sotopia-env eval-general` runs EleutherAI's
lm-evaluation-harness on the base model and on the trained policy (the base with its LoRA adapter, through
lm-eval's own HF model and its `peft=` argument) and writes one table: accuracy and stderr per task, side by
side, and the difference. Sotopia-pi reports MMLU this way (base vs trained).

    sotopia-env eval-general --model embedded --adapter runs/grpo/adapter            # offline: the shipped task
    sotopia-env eval-general --model hf:Qwen/Qwen2.5-7B-Instruct --adapter runs/grpo/adapter --tasks mmlu

By default the task is `benchmarks/data/general_qa/social_mc.yaml`, ten multiple-choice questions in lm-eval's
task format with local JSON data, so nothing is downloaded; name lm-eval tasks (mmlu, arc_easy, ...) where the
data sets can be reached, or your own task YAML files. Files: OUT/general.md, OUT/general.csv, and lm-eval's
results per model in OUT/results_base.json and OUT/results_trained.json (a rerun with the same settings
reuses them).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sotopia_env.cli import config_error
from sotopia_env.jsonio import read_json, write_json_atomic, write_text_atomic

METRICS = ("acc", "acc_norm", "exact_match")  # the first a task reports is its row's metric


def shipped_task() -> str:
    return str(Path(str(resources.files("benchmarks") / "data" / "general_qa" / "social_mc.yaml")))


@dataclass
class EvalGeneralConfig:
    model: str = field(
        default="embedded", metadata={"help": "base policy spec: embedded or hf:ID_OR_PATH (no adapter here)"}
    )
    adapter: str | None = field(
        default=None, metadata={"help": "the trained policy's LoRA adapter folder: evaluated beside the base"}
    )
    tasks: list[str] = field(
        default_factory=lambda: [shipped_task()],
        metadata={"help": "lm-eval task names (mmlu, ...) or task YAML files; default: the shipped offline task"},
    )
    limit: int | None = field(default=None, metadata={"help": "at most this many questions per task (None: all)"})
    num_fewshot: int | None = field(default=None, metadata={"help": "few-shot examples (None: the task's default)"})
    batch_size: int = field(default=8)
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:0, ..."})
    dtype: str = field(default="float32", metadata={"help": "float32 (fastest on CPU), bfloat16, float16"})
    seed: int = field(default=0)
    out: str = field(default="runs/general", metadata={"help": "folder for general.md, general.csv and raw results"})

    def validate(self) -> None:
        from agents.spec import parse_spec

        spec = parse_spec(self.model)
        if spec.kind not in ("embedded", "hf") or spec.adapter:
            raise config_error(self, "model", "must be embedded or hf:ID_OR_PATH; give the adapter with --adapter")
        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise config_error(self, "adapter", "must be a peft adapter folder (with adapter_config.json)")
        if not self.tasks:
            raise config_error(self, "tasks", "name at least one task")
        for task in self.tasks:
            if task.endswith((".yaml", ".yml")) and not Path(task).is_file():
                raise config_error(self, "tasks", f"{task} is not a file")
        if self.limit is not None and self.limit < 1:
            raise config_error(self, "limit", "must be at least 1, or unset for every question")
        if self.batch_size < 1:
            raise config_error(self, "batch_size", "must be at least 1")


def task_spec(task: str) -> str | dict[str, Any]:
    """A task name as it is; a task YAML file as the config dict lm-eval takes, its relative data_files made
    absolute against the file's folder (lm-eval would read them from the working directory)."""
    if not task.endswith((".yaml", ".yml")):
        return task
    import yaml

    path = Path(task).resolve()
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {
            split: str(path.parent / f) if not Path(f).is_absolute() else f for split, f in files.items()
        }
    return config


def model_args(cfg: EvalGeneralConfig, adapter: str | None) -> dict[str, Any]:
    """lm-eval's HF model arguments for the base (adapter None) or the trained policy."""
    from agents.models import resolve_model
    from agents.spec import parse_spec

    spec = parse_spec(cfg.model)
    args: dict[str, Any] = {"pretrained": resolve_model(spec.model), "dtype": cfg.dtype}
    if adapter:
        args["peft"] = str(Path(adapter).resolve())
    return args


def evaluate(cfg: EvalGeneralConfig, adapter: str | None) -> dict[str, Any]:
    """lm-eval's results dict for one model (reused from OUT when a run with the same settings wrote it)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    label = "trained" if adapter else "base"
    path = Path(cfg.out) / f"results_{label}.json"
    settings = {**asdict(cfg), "adapter": adapter, "label": label}
    if path.exists():
        saved = read_json(path)
        if saved.get("settings") == settings:
            return saved["results"]
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args(cfg, adapter),
        tasks=[task_spec(t) for t in cfg.tasks],
        num_fewshot=cfg.num_fewshot,
        batch_size=cfg.batch_size,
        device=cfg.device,
        limit=cfg.limit,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
        log_samples=False,
        # Indexing lm-eval's thousands of built-in task files takes most of a small run: only when a name needs it.
        task_manager=TaskManager(include_defaults=not all(t.endswith((".yaml", ".yml")) for t in cfg.tasks)),
    )
    kept = {"results": results["results"], "n-samples": results.get("n-samples", {})}
    write_json_atomic(path, {"settings": settings, "results": _plain(kept)})
    return _plain(kept)


def _plain(value: Any) -> Any:
    """lm-eval's numbers as plain JSON (numpy scalars, "N/A" stderr strings kept as text)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@dataclass
class Row:
    task: str
    metric: str
    base: float
    base_stderr: float | None
    trained: float | None = None
    trained_stderr: float | None = None
    n: int | None = None

    @property
    def difference(self) -> float | None:
        return None if self.trained is None else self.trained - self.base


def rows(base: dict[str, Any], trained: dict[str, Any] | None) -> list[Row]:
    """One row per task lm-eval reported (a group such as mmlu and each of its subtasks), on its first metric
    of METRICS."""
    out = []
    for task, numbers in base["results"].items():
        metric = next((m for m in METRICS if f"{m},none" in numbers), None)
        if metric is None:
            continue
        other = (trained or {}).get("results", {}).get(task, {})
        n = base.get("n-samples", {}).get(task, {}).get("effective")
        out.append(
            Row(
                task,
                metric,
                float(numbers[f"{metric},none"]),
                _number(numbers.get(f"{metric}_stderr,none")),
                _number(other.get(f"{metric},none")) if trained else None,
                _number(other.get(f"{metric}_stderr,none")) if trained else None,
                n,
            )
        )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def markdown(cfg: EvalGeneralConfig, table: list[Row]) -> str:
    trained = cfg.adapter is not None
    lines = [
        "# General question answering, base vs trained",
        "",
        f"lm-evaluation-harness, HF model `{cfg.model}`"
        + (f", trained adapter `{cfg.adapter}`" if trained else "")
        + f"; {cfg.num_fewshot if cfg.num_fewshot is not None else 'the tasks default'} few-shot"
        + (f", at most {cfg.limit} questions per task" if cfg.limit else "")
        + ". A difference within about two stderr of 0 is no evidence of a change.",
        "",
        "| task | metric | n | base | trained | trained - base |" if trained else "| task | metric | n | base |",
        "|---|---|---|---|---|---|" if trained else "|---|---|---|---|",
    ]
    for r in table:
        base = _with_stderr(r.base, r.base_stderr)
        row = f"| {r.task} | {r.metric} | {r.n if r.n is not None else ''} | {base} |"
        if trained:
            diff = "n/a" if r.difference is None else f"{r.difference:+.3f}"
            row += f" {_with_stderr(r.trained, r.trained_stderr)} | {diff} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _with_stderr(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")


def write_table(cfg: EvalGeneralConfig, table: list[Row]) -> str:
    out = Path(cfg.out)
    text = markdown(cfg, table)
    write_text_atomic(out / "general.md", text)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["task", "metric", "n", "base", "base_stderr", "trained", "trained_stderr", "difference"])
    for r in table:
        writer.writerow([r.task, r.metric, r.n, r.base, r.base_stderr, r.trained, r.trained_stderr, r.difference])
    write_text_atomic(out / "general.csv", buf.getvalue())
    return text


def eval_general_command(cfg: EvalGeneralConfig) -> int:
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    base = evaluate(cfg, None)
    trained = evaluate(cfg, cfg.adapter) if cfg.adapter else None
    print(write_table(cfg, rows(base, trained)))
    print(f"wrote {Path(cfg.out) / 'general.md'} and general.csv")
    return 0
