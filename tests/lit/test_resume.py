"""Exact resume: data order, position and RNG restored so a killed-and-resumed run ends bitwise equal.

The end-to-end test SIGKILLs a `python -m deco.train` subprocess at the start of step 2 (the
checkpoint of step 2 is on disk, step 3's batch is already fetched), resumes it with
`resume=auto` in the same run dir and compares every weight and optimizer tensor with an
uninterrupted run after 6 steps. The run uses LoRA (dropout 0.05, so the RNG matters), crosses
an epoch boundary (4 batches per epoch) and validates at the epoch end (which starts a
DataLoader and would shift a global RNG stream).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from deco.lit.checkpointing import resolve_ckpt_path, step_seed
from deco.lit.sampling import GlobalBatchSampler, ResumableDataLoader, accumulation_for
from conftest import compose_config
from deco.train import train

ROOT = Path(__file__).resolve().parents[2]


class Range(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def micro_batches(n: int, batch: int, world: int, accumulate: int, epoch: int = 0) -> list[list[list[int]]]:
    """[rank][micro-batch] -> sample indices, read through the real DataLoader."""
    out = []
    for rank in range(world):
        sampler = GlobalBatchSampler(Range(n), batch, num_replicas=world, rank=rank, accumulate=accumulate, seed=7)
        sampler.set_epoch(epoch)
        out.append([b.tolist() for b in ResumableDataLoader(Range(n), sampler)])
    return out


def test_global_batch_layout_is_independent_of_device_count():
    one = micro_batches(40, 4, world=1, accumulate=4)[0]  # 2 steps x 4 micro-batches (8 samples dropped)
    two = micro_batches(40, 4, world=2, accumulate=2)
    four = micro_batches(40, 4, world=4, accumulate=1)
    assert len(one) == 8 and all(len(r) == 4 for r in two) and all(len(r) == 2 for r in four)
    for step in range(2):
        expected = one[4 * step:4 * step + 4]  # micro-batch j of this step on one device
        assert [two[j // 2][2 * step + j % 2] for j in range(4)] == expected
        assert [four[j][step] for j in range(4)] == expected
    flat = [i for b in one for i in b]
    assert len(set(flat)) == 32 and set(flat) <= set(range(40))
    # A new epoch is a new permutation; the same epoch is the same one.
    assert micro_batches(40, 4, 1, 4, epoch=1)[0] != one
    assert micro_batches(40, 4, 1, 4, epoch=0)[0] == one


def test_loader_resumes_with_the_next_batch():
    sampler = GlobalBatchSampler(Range(24), 4, seed=3)
    loader = ResumableDataLoader(Range(24), sampler)
    full = [b.tolist() for b in loader]
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(2)]
    assert loader.position() == {"epoch": 0, "batches": 2}

    fresh = ResumableDataLoader(Range(24), GlobalBatchSampler(Range(24), 4, seed=3))
    fresh.resume({"epoch": 0, "batches": 2}, epoch=0)  # what LoaderPosition does on resume
    assert seen + [b.tolist() for b in fresh] == full
    assert len(fresh) == 6  # the epoch length Lightning sees does not shrink on resume
    assert fresh.position() == {"epoch": 0, "batches": 6}
    assert [b.tolist() for b in fresh] == full  # the skip applies once
    fresh.resume({"epoch": 0, "batches": 2}, epoch=1)  # saved at an epoch's end: the next one starts whole
    fresh.sampler.set_epoch(1)
    assert len([b for b in fresh]) == 6


def test_accumulation_for_global_batch():
    assert accumulation_for(256, 16, 8) == 2
    assert accumulation_for(256, 16, 1) == 16
    with pytest.raises(ValueError, match="data.global_batch_size=100 must be a multiple of .* = 16 x 8 = 128"):
        accumulation_for(100, 16, 8)


def test_resolve_ckpt_path(tmp_path):
    assert resolve_ckpt_path("auto", None, tmp_path) is None  # nothing yet: fresh start
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resolve_ckpt_path("auto", None, tmp_path) == str(last)
    assert resolve_ckpt_path(None, None, tmp_path) is None
    assert resolve_ckpt_path("auto", str(last), "/elsewhere") == str(last)
    with pytest.raises(FileNotFoundError, match="ckpt_path=/no/such.ckpt"):
        resolve_ckpt_path("auto", "/no/such.ckpt", tmp_path)
    with pytest.raises(ValueError, match="resume=sometimes"):
        resolve_ckpt_path("sometimes", None, tmp_path)


def test_step_seed_is_a_function_of_the_position():
    assert step_seed(42, 0, 1, 5) == step_seed(42, 0, 1, 5)
    seeds = {step_seed(42, r, e, b) for r in range(2) for e in range(2) for b in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


RUN = ["stage=finetune_lora", "query_num=16", "data.train.num_samples=16", "data.val.num_samples=4",
       "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "data.max_length=128",
       "trainer.max_steps=6", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "logger=none",
       "callbacks.last_checkpoint.every_n_train_steps=1"]


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_sigkilled_run_resumes_to_bitwise_equal_weights(tmp_path):
    killed_dir = tmp_path / "killed"
    result = subprocess.run(
        [sys.executable, "-m", "deco.train", *RUN, "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection",
         "+callbacks.inject.kill_at_step=2", f"hydra.run.dir={killed_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert _state(killed_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert not list((killed_dir / "checkpoints").glob(".*.tmp"))

    resumed = train(compose_config("train", [*RUN, "resume=auto"], killed_dir))  # noqa: F841
    straight_dir = tmp_path / "straight"
    train(compose_config("train", RUN, straight_dir))

    a, b = _state(killed_dir / "checkpoints" / "last.ckpt"), _state(straight_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    unequal = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not unequal, f"{len(unequal)} tensors differ, e.g. {unequal[:3]}"
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a[key][name], opt_b[key][name]), (key, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    # Both runs validated once, at the end of epoch 0, on the same weights.
    assert a["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1
