"""SIGKILL inside a validation, then `resume=auto`: that validation runs again (issue 29, item 7).

2 training batches per epoch, 3 epochs (validations after steps 2, 4 and 6), last.ckpt after every step, so
the checkpoint on disk when a validation is killed is the one written at the end of the step before it.
best.ckpt monitors val/loss with mode=max: the first validation (the highest loss) is the best one, so a
resumed run that skips it keeps another step's weights as "best". A kill in the final validation must
still end with val/loss, which deco.train returns to a sweeper.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from deco.train import train

ROOT = Path(__file__).resolve().parents[2]
RUN = ["query_num=16", "data.train.num_samples=8", "data.val.num_samples=4", "data.batch_size=4",
       "data.eval_batch_size=2", "data.num_workers=0", "data.max_length=128", "trainer.max_steps=-1",
       "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "logger=none",
       "callbacks.last_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.mode=max"]


def _validations(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], round(r["val/loss"], 5)) for r in rows if "val/loss" in r]


def _best(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    return run_dir, train(compose_config("train", RUN, run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("val_run", [0, 2])  # the first validation (the best one) and the final one
def test_a_validation_killed_by_sigkill_runs_again_on_resume(tmp_path, straight, val_run):
    straight_dir, straight_loss = straight
    killed = subprocess.run(
        [sys.executable, "-m", "deco.train", *RUN, "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection",
         "+callbacks.inject.kill_at_val_batch=1", f"+callbacks.inject.val_run={val_run}",
         f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * (val_run + 1)

    resumed_loss = train(compose_config("train", RUN, tmp_path))  # resume=auto
    assert resumed_loss is not None and resumed_loss == straight_loss
    expected = _validations(straight_dir)
    assert [s for s, _ in expected] == [2, 4, 6] and expected[0][1] > expected[2][1]  # mode=max: step 2 is best
    # every validation once (rows written before the kill are kept: the killed one had none yet)
    assert _validations(tmp_path) == expected
    best, straight_best = _best(tmp_path), _best(straight_dir)
    assert best["global_step"] == straight_best["global_step"] == 2
    assert all(torch.equal(best["state_dict"][k], v) for k, v in straight_best["state_dict"].items())
