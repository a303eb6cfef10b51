"""SIGTERM wherever it lands (a training step, validation, the epoch boundary), then `resume=auto`: bitwise equal.

Each interrupted run is resumed in its own run dir and compared, tensor by tensor (weights, AdamW
moments, LR schedule), with one uninterrupted run. 4 batches per epoch, 2 validation batches (or 1,
so that a signal in it lands on the epoch boundary), LoRA dropout so the RNG matters.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_config
from deco.train import PREEMPTED_EXIT_CODE, train

RUN = ["stage=finetune_lora", "query_num=16", "data.train.num_samples=16", "data.val.num_samples=8",
       "data.batch_size=4", "data.num_workers=0", "data.max_length=128", "trainer.max_steps=6",
       "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "logger=none",
       "callbacks.last_checkpoint.every_n_train_steps=100"]
INJECT = "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection"
WHERE = {
    "training_step": ["data.eval_batch_size=4", "+callbacks.inject.signal_at_step=1"],
    "validation": ["data.eval_batch_size=4", "+callbacks.inject.signal_at_val_batch=0"],
    "epoch_boundary": ["data.eval_batch_size=8", "+callbacks.inject.signal_at_val_batch=0"],  # its last val batch
}


def _val_steps(run_dir) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "val/loss" in r]


def _state(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("straight")
    train(compose_config("train", [*RUN, "data.eval_batch_size=4"], run_dir))
    return {**_state(run_dir), "val_steps": _val_steps(run_dir)}


@pytest.mark.parametrize("where", list(WHERE))
def test_sigterm_then_resume_is_bitwise_equal(tmp_path, straight, where):
    with pytest.raises(SystemExit) as exit_info:
        train(compose_config("train", [*RUN, INJECT, *WHERE[where]], tmp_path))
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    train(compose_config("train", [*RUN, WHERE[where][0]], tmp_path))  # resume=auto
    resumed = _state(tmp_path)
    assert resumed["global_step"] == straight["global_step"] == 6
    unequal = [k for k in straight["state_dict"] if not torch.equal(resumed["state_dict"][k], straight["state_dict"][k])]
    assert not unequal, f"{len(unequal)} of {len(straight['state_dict'])} tensors differ, e.g. {unequal[:3]}"
    opt_a, opt_b = resumed["optimizer_states"][0]["state"], straight["optimizer_states"][0]["state"]
    for key in opt_b:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[key][name], opt_b[key][name]), (key, name)
    assert resumed["lr_schedulers"] == straight["lr_schedulers"]
    assert _val_steps(tmp_path) == straight["val_steps"] == [4]  # an interrupted validation ran again


def test_sigkill_after_the_epoch_end_save_resumes_bitwise(tmp_path, straight):
    """Killed at the start of epoch 1: last.ckpt is the one saved in on_train_epoch_end of epoch 0."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "deco.train", *RUN, "data.eval_batch_size=4", INJECT,
                             "+callbacks.inject.kill_at_step=4", f"hydra.run.dir={tmp_path}"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == -9, result.stderr[-2000:]
    assert _state(tmp_path)["global_step"] == 4
    train(compose_config("train", [*RUN, "data.eval_batch_size=4"], tmp_path))
    resumed = _state(tmp_path)
    assert resumed["global_step"] == 6  # before the fix: 4 (the resumed epoch trained nothing)
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())
