"""Checkpoints: complete state round-trips, incomplete directories are ignored, old ones are pruned, and a
checkpoint of other records or a changed config is refused as a permanent error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.job_config import DistillConfig
from contract.rundir import RunDir, list_checkpoints
from worker.context import BadJobInput, is_permanent
from worker.training import checkpoint as ckpt
from worker.training.curriculum import CurriculumSampler
from worker.training.losses import SpanWeighting


def _state(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, object, SpanWeighting]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are not saved (LoRA bases, say)
    weighting = SpanWeighting("learnable")
    params = [p for p in model.parameters() if p.requires_grad] + list(weighting.parameters())
    opt = torch.optim.AdamW(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched, weighting


def _train_a_bit(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object, w: SpanWeighting) -> None:
    for _ in range(3):
        loss = w(model(torch.randn(5, 4)).pow(2).mean(), model(torch.randn(5, 4)).abs().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()  # type: ignore[attr-defined]


def _save(out: Path, step: int, parts: tuple, sampler: CurriculumSampler, keep: int = 3) -> Path:
    model, opt, sched, w = parts
    return ckpt.save_checkpoint(
        out,
        step,
        model=model,
        optimizer=opt,
        scheduler=sched,
        weighting=w,
        sampler_state=sampler.state_dict(),
        meta={"job_id": "j1", "dataset_hash": "h"},
        keep=keep,
    )


def test_round_trip_restores_everything(tmp_path: Path) -> None:
    parts = _state(0)
    _train_a_bit(*parts)
    sampler = CurriculumSampler([0.1, 0.5, 0.9], "none", seed=1, batch_size=2)
    sampler.next_batch()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = _save(tmp_path, 7, parts, sampler)
    expected_rng = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    expected_batch = sampler.next_batch()

    fresh = _state(1)  # different init: everything must come from the checkpoint
    model, opt, sched, w = fresh
    meta, sampler_state = ckpt.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, weighting=w)
    assert meta["step"] == 7 and meta["complete"] is True and meta["job_id"] == "j1"
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected_rng
    restored = CurriculumSampler([0.1, 0.5, 0.9], "none", seed=1, batch_size=2)
    restored.load_state_dict(sampler_state)
    assert restored.next_batch() == expected_batch
    for (name, a), b in zip(parts[0].state_dict().items(), model.state_dict().values(), strict=True):
        if name != "0.bias":
            assert torch.equal(a, b), name
    assert not torch.equal(parts[0][0].bias, model[0].bias)  # frozen: left as the model has it
    assert torch.equal(parts[3].log_vars, w.log_vars)
    assert sched.state_dict()["last_epoch"] == 3  # type: ignore[attr-defined]
    assert opt.state_dict()["state"].keys() == parts[1].state_dict()["state"].keys()
    # Continuing from the restored state (frozen weights come from the base model, as with LoRA) is identical.
    with torch.no_grad():
        model[0].bias.copy_(parts[0][0].bias)
    torch.manual_seed(9)
    _train_a_bit(*parts)
    torch.manual_seed(9)
    _train_a_bit(*fresh)
    assert all(torch.equal(a, b) for a, b in zip(parts[0].parameters(), model.parameters(), strict=True))


def test_incomplete_checkpoints_are_ignored(tmp_path: Path) -> None:
    parts = _state()
    sampler = CurriculumSampler([0.0, 1.0], "sorted", seed=0, batch_size=1)
    good = _save(tmp_path, 2, parts, sampler)
    crashed = RunDir(tmp_path).checkpoint(4)  # a directory without meta.json (crash mid-copy)
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"partial")
    unfinished = RunDir(tmp_path).checkpoint(5)
    unfinished.mkdir()
    (unfinished / "meta.json").write_text(json.dumps({"step": 5, "complete": False}))
    assert ckpt.find_latest_checkpoint(tmp_path) == good
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]


def test_only_the_newest_are_kept_and_temp_dirs_cleaned(tmp_path: Path) -> None:
    parts = _state()
    sampler = CurriculumSampler([0.0, 1.0], "sorted", seed=0, batch_size=1)
    stale = RunDir(tmp_path).checkpoints / ".tmp-step-00000001-999999"
    stale.mkdir(parents=True)
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, parts, sampler, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert not stale.exists()
    assert sorted(p.name for p in RunDir(tmp_path).checkpoints.iterdir()) == [
        "step-00000003",
        "step-00000004",
    ]
    _save(tmp_path, 4, parts, sampler, keep=2)  # re-saving a step replaces it
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    parts = _state()
    path = _save(tmp_path, 1, parts, CurriculumSampler([0.0], "none", seed=0, batch_size=1))
    other = torch.nn.Sequential(torch.nn.Linear(4, 8))
    opt = torch.optim.AdamW(other.parameters())
    with pytest.raises(BadJobInput, match="does not match"):
        ckpt.load_checkpoint(
            path,
            model=other,
            optimizer=opt,
            scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
            weighting=SpanWeighting(),
        )


def test_dataset_hash_is_order_independent_and_content_sensitive() -> None:
    a = {"id": "a", "messages": [{"role": "user", "text": "hi"}], "spans": [], "split": "train"}
    b = {"id": "b", "messages": [{"role": "user", "text": "yo"}], "spans": [], "split": "eval"}
    assert ckpt.dataset_hash([a, b]) == ckpt.dataset_hash([b, a])
    edited = {**b, "messages": [{"role": "user", "text": "yo!"}]}
    assert ckpt.dataset_hash([a, edited]) != ckpt.dataset_hash([a, b])
    assert ckpt.code_version()


def test_resume_check_names_what_changed() -> None:
    config = DistillConfig.model_validate({"student_model": "org/student", "training": {"max_steps": 10}})
    meta = {"dataset_hash": "h", "world_size": 1, "config": config.model_dump(mode="json")}
    longer = config.model_copy(update={"training": config.training.model_copy(update={"max_steps": 20})})
    ckpt.check_resumable(meta, longer, "h", 1)  # max_steps may change on resume
    with pytest.raises(BadJobInput, match="different records") as other_records:
        ckpt.check_resumable(meta, config, "other", 1)
    assert is_permanent(other_records.value)
    seed = config.model_copy(update={"training": config.training.model_copy(update={"seed": 7})})
    with pytest.raises(BadJobInput, match=r"config changed in training\.seed, world_size$"):
        ckpt.check_resumable(meta, seed, "h", 2)
