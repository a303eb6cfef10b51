"""Per-step overhead (make bench figure 1): per-step metrics are passed to `self.log` only on logging steps,
and what is written does not change (the same records, steps, keys and values as logging on every step);
StepSeed's cheaper CPU seeding draws the same numbers."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_RUN, compose_config

from deco.lit import callbacks, module

OVERRIDES = [*TINY_RUN, "data.train.num_samples=20", "trainer.max_steps=4", "trainer.log_every_n_steps=2"]


def _records(out):
    from deco.train import train

    train(compose_config("train", OVERRIDES, out))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


def test_gated_logging_writes_what_every_step_logging_wrote(tmp_path, monkeypatch):
    calls = []
    original = callbacks.logs_this_step

    def counted(trainer):
        calls.append(original(trainer))
        return calls[-1]

    monkeypatch.setattr(module, "logs_this_step", counted)
    gated = _records(tmp_path / "gated")
    # the predicate is Lightning's: true on steps 2 and 4 of 4
    assert calls == [False, True, False, True]

    monkeypatch.setattr(module, "logs_this_step", lambda trainer: True)
    monkeypatch.setattr(callbacks, "logs_this_step", lambda trainer: True)
    every_step = _records(tmp_path / "every_step")

    assert [r["step"] for r in gated] == [r["step"] for r in every_step] == [2, 4]
    for mine, theirs in zip(gated, every_step):
        assert set(mine) == set(theirs)
        assert {"train/tokens_per_s", "train/step_time_s"} <= set(mine)
        assert any(k.startswith("train/lr_") for k in mine)
        for key in mine:
            if key.startswith("train/lr_") or key == "train/loss":
                assert mine[key] == pytest.approx(theirs[key]), key


def test_step_seed_draws_what_torch_manual_seed_draws():
    """StepSeed seeds the CPU generator directly on CPU-only machines (torch.manual_seed costs ~0.5 ms
    there, queueing lazy CUDA/XPU seeds); the draws are the same."""
    from types import SimpleNamespace

    import torch

    from deco.lit.checkpointing import StepSeed, step_seed

    trainer = SimpleNamespace(global_rank=1, current_epoch=2)
    StepSeed(7).on_train_batch_start(trainer, None, None, 3)
    mine = torch.rand(5)
    torch.manual_seed(step_seed(7, 1, 2, 3))
    assert torch.equal(mine, torch.rand(5))
