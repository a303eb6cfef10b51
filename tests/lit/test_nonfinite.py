"""A NaN gradient with a finite loss: detected before clipping spreads it, never saved, messages tell the truth."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_RUN, compose_config
from deco.lit.checkpointing import AtomicCheckpointIO, NonFiniteWeightsError
from deco.train import train

FAST = [*TINY_RUN, "data.train.num_samples=24", "stage=pretrain", "query_num=16", "trainer.max_steps=4",
        "callbacks.last_checkpoint.every_n_train_steps=1", "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection",
        "+callbacks.inject.nan_grad_at_step=2"]  # gradient clipping at 1.0 (trainer=cpu) spreads one NaN to all


def _ckpt(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _finite(checkpoint: dict) -> bool:
    weights = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
    moments = [t for s in checkpoint["optimizer_states"][0]["state"].values() for t in (s["exp_avg"], s["exp_avg_sq"])]
    return all(bool(torch.isfinite(t).all()) for t in weights + moments)


def test_nan_gradient_stops_naming_the_step_and_last_ckpt_stays_finite(tmp_path):
    with pytest.raises(SystemExit, match=r"Training stopped: gradient norm is nan at global step 2 .*with a finite "
                                         r"loss; the weights were not updated"):
        train(compose_config("train", FAST, tmp_path))
    checkpoint = _ckpt(tmp_path)
    assert checkpoint["global_step"] == 2  # written after step 2 (the last good one), nothing after the NaN
    assert _finite(checkpoint)


def test_nan_gradient_skip_drops_only_that_step(tmp_path):
    train(compose_config("train", [*FAST, "fault.on_nan=skip"], tmp_path))
    checkpoint = _ckpt(tmp_path)
    assert checkpoint["global_step"] == 4
    assert _finite(checkpoint)
    adam_steps = {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3.0}  # 4 steps, one of them skipped


def test_non_finite_weights_are_never_saved(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)
    poisoned = {"global_step": 2, "state_dict": {"w": torch.tensor([1.0, float("inf"), 0.0]), "n": torch.ones(1)}}
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to save .* at global step 2: 1 weight tensors hold "
                                                    r"NaN/inf \(e.g. w\); the previous checkpoint is kept"):
        io.save_checkpoint(poisoned, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
