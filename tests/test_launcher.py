"""The submitit launcher fans a sweep out into jobs (slow: each job is a fresh Python process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep_grouped_in_wandb(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "deco.train", "-m", "hydra/launcher=submitit_local", "projector=linear,avgpool",
         "query_num=16", "data.train.num_samples=16", "data.val.num_samples=4", "data.batch_size=4",
         "data.num_workers=0", "data.max_length=128", "trainer.max_steps=2", "logger=wandb",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0-linear-q16", "1-avgpool-q16"]
    assert len(list((tmp_path / ".submitit").glob("*/*_log.out"))) == 2  # both ran as submitit jobs
    for job in jobs:
        config = yaml.safe_load((tmp_path / job / "config.yaml").read_text())
        wandb_cfg = config["logger"]["wandb"]
        assert wandb_cfg["group"] == f"{tmp_path.parent.name}/{tmp_path.name}"  # one group per sweep
        assert wandb_cfg["name"] == f"{config['projector']['name']}-q16-s42"
        assert torch.load(tmp_path / job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
        assert list((tmp_path / job / "wandb").glob("offline-run-*"))
