"""Checkpoints (trainers.checkpoint) on a tiny LoRA model built from a config (no weights read): synced
before they are renamed into place, complete after a crash at any moment of a save, never written with
non-finite weights, loaded with weights_only=True; and a resume that finds no checkpoint keeps what it
would drop."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from sotopia_env.jsonio import append_jsonl, iter_jsonl
from trainers.checkpoint import load_checkpoint, resume_metrics, save_checkpoint
from trainers.online import _drop_steps_from


def tiny_policy() -> tuple:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return model, optimizer, schedule


def train_step(model, optimizer, schedule) -> None:
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()


def adapter(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_every_file_and_folder_of_a_checkpoint_is_synced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    model, optimizer, schedule = tiny_policy()
    events: list[tuple[str, str]] = []
    fsync, rename = os.fsync, os.rename

    def spy_fsync(fd: int) -> None:  # the real fsync runs; the spy notes which file or folder it was
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_rename(src, dst) -> None:
        events.append(("rename", f"{src} -> {dst}"))
        rename(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "rename", spy_rename)
    path = tmp_path / "checkpoint"
    save_checkpoint(path, model, optimizer, schedule, {"step": 1})
    into_place = events.index(("rename", f"{tmp_path / 'checkpoint.tmp'} -> {path}"))
    synced_before = {p for kind, p in events[:into_place] if kind == "fsync"}
    files = sorted(p.name for p in path.iterdir())
    assert {"adapter_model.safetensors", "trainer_state.pt", "state.json"} <= set(files)
    assert {str(tmp_path / "checkpoint.tmp" / name) for name in files} | {str(tmp_path / "checkpoint.tmp")} <= (
        synced_before
    )
    assert ("fsync", str(tmp_path)) in events[into_place:]  # the rename itself


class Crash(BaseException):
    """The process dying at one instant of a save: a fault these tests cannot cause for real at a chosen
    moment, so the k-th rename or removal raises this instead of running."""


class CrashAt:
    """Wraps functions so that the k-th call among all of them raises Crash instead of running."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def wrap(self, real):
        def call(*args, **kwargs):
            self.calls += 1
            if self.calls - 1 == self.k:
                raise Crash
            return real(*args, **kwargs)

        return call


@pytest.mark.parametrize("start", ["complete", "crashed between the renames"])
def test_a_crash_at_any_moment_of_a_save_leaves_a_complete_checkpoint(tmp_path, monkeypatch, start):
    model, optimizer, schedule = tiny_policy()
    path = tmp_path / "checkpoint"
    weights = {}
    for step in (1, 2):
        train_step(model, optimizer, schedule)
        weights[step] = adapter(model)

    def set_weights(step: int) -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in weights[step]:
                    p.copy_(weights[step][n])

    rename, rmtree = os.rename, shutil.rmtree
    for k in range(20):
        for leftover in tmp_path.iterdir():
            rmtree(leftover)
        set_weights(1)
        save_checkpoint(path, model, optimizer, schedule, {"step": 1})
        if start != "complete":
            rename(path, tmp_path / "checkpoint.old")
        set_weights(2)
        with monkeypatch.context() as m:
            crash = CrashAt(k)
            m.setattr(os, "rename", crash.wrap(rename))
            m.setattr(shutil, "rmtree", crash.wrap(rmtree))
            try:
                save_checkpoint(path, model, optimizer, schedule, {"step": 2})
                finished = True
            except Crash:
                finished = False
        fresh, fresh_optimizer, fresh_schedule = tiny_policy()
        state = load_checkpoint(path, fresh, fresh_optimizer, fresh_schedule)
        assert state is not None, f"no checkpoint after a crash at rename/removal {k} ({start})"
        loaded = adapter(fresh)
        assert all(torch.equal(loaded[n], weights[state["step"]][n]) for n in loaded), (k, state)
        if finished:
            assert state["step"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
            break
    else:
        pytest.fail("the save never finished")


def test_a_checkpoint_whose_adapter_holds_nan_is_not_written_and_the_last_one_stays(tmp_path):
    model, optimizer, schedule = tiny_policy()
    path = tmp_path / "checkpoint"
    save_checkpoint(path, model, optimizer, schedule, {"step": 1})
    name, param = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=rf"checkpoint of step 2: not saved, .*{name}' holds 1 NaN.* lower --lr"):
        save_checkpoint(path, model, optimizer, schedule, {"step": 2})
    assert load_checkpoint(path, *tiny_policy()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


class Payload:
    """A pickled object that is neither a tensor nor a plain value: unpickling it runs code of its choosing."""

    ran = False

    def __reduce__(self):
        return (_run, ())


def _run() -> None:
    Payload.ran = True


def test_a_trainer_state_holding_other_objects_is_refused_not_unpickled(tmp_path):
    model, optimizer, schedule = tiny_policy()
    path = tmp_path / "checkpoint"
    save_checkpoint(path, model, optimizer, schedule, {"step": 1})
    saved = torch.load(path / "trainer_state.pt", weights_only=True)  # what save_checkpoint writes loads so
    torch.save({**saved, "extra": Payload()}, path / "trainer_state.pt")
    with pytest.raises(ValueError, match=r"trainer_state\.pt: cannot load it with weights_only=True"):
        load_checkpoint(path, *tiny_policy())
    assert not Payload.ran


def test_a_resume_that_finds_no_checkpoint_keeps_a_copy_of_the_records_it_drops(tmp_path, capsys):
    metrics = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(metrics, {"step": step, "loss": 0.5})
    resume_metrics(metrics, 2)  # a checkpoint of step 2: step 3 runs again, no copy needed
    assert [r["step"] for r in iter_jsonl(metrics)] == [1, 2] and capsys.readouterr().err == ""
    resume_metrics(metrics, 0)  # no checkpoint at all
    [copy] = tmp_path.glob("metrics.jsonl.orphaned-*")
    assert [r["step"] for r in iter_jsonl(copy)] == [1, 2] and list(iter_jsonl(metrics)) == []
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {metrics}: 2 metric rows of steps 1..2 but no checkpoint") and str(copy) in err

    episodes = tmp_path / "episodes.jsonl"
    for step in (0, 1):
        append_jsonl(episodes, {"id": f"train|{step}|0", "meta": {"training": {"step": step}}})
    _drop_steps_from(episodes, 0)
    [copy] = tmp_path.glob("episodes.jsonl.orphaned-*")
    assert [r["id"] for r in iter_jsonl(copy)] == ["train|0|0", "train|1|0"] and list(iter_jsonl(episodes)) == []
    assert "2 training episodes of steps 1..2 but no checkpoint" in capsys.readouterr().err
