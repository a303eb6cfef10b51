"""Faults: torn checkpoint writes, NaN losses, preemption signals, W&B without a key or network."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, compose_config
from deco.lit.checkpointing import AtomicCheckpointIO
from deco.lit.launch import fsdp_strategy, sweep_group, wandb_logger
from deco.train import PREEMPTED_EXIT_CODE, train

ROOT = Path(__file__).resolve().parents[2]
FAST = [*TINY_RUN, "data.train.num_samples=24", "stage=pretrain", "query_num=16",  # 6 batches per epoch
        "callbacks.last_checkpoint.every_n_train_steps=1"]
INJECT = "+callbacks.inject._target_=deco.lit.fault_injection.FaultInjection"


def _ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# --- atomic checkpoint writes -------------------------------------------------------------------

def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def torn_save(obj, f):  # writes half a file, then the process "dies"
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the temp file is gone


def test_sigkill_while_saving_never_corrupts_last_ckpt(tmp_path):
    """A process rewrites a ~16 MB last.ckpt in a loop; SIGKILL it mid-write, the file still loads."""
    script = textwrap.dedent(f"""
        import torch
        from deco.lit.checkpointing import AtomicCheckpointIO
        io, step = AtomicCheckpointIO(), 0
        while True:
            step += 1
            io.save_checkpoint({{"global_step": step, "w": torch.full((4_000_000,), float(step))}},
                               "{tmp_path}/last.ckpt")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.7)  # several more saves; the kill lands at an arbitrary point of one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] >= 1
    assert torch.equal(checkpoint["w"], torch.full((4_000_000,), float(checkpoint["global_step"])))


# --- non-finite loss ------------------------------------------------------------------------------

def test_nan_loss_exits_nonzero_naming_the_step_and_keeps_the_checkpoint_before_it(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "deco.train", *FAST, "trainer.max_steps=5", INJECT, "+callbacks.inject.nan_at_step=2",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Training stopped: loss is nan at global step 2 (epoch 0, batch 2)" in result.stderr
    checkpoint = _ckpt(run_dir)  # loads: written atomically
    assert checkpoint["global_step"] == 2  # the state before the NaN step, nothing written after it
    assert _all_finite(checkpoint["state_dict"])


def test_nan_loss_skip_drops_the_batch_and_goes_on(tmp_path):
    with pytest.warns(UserWarning, match=r"loss is nan at global step 1 .*skipping this optimizer step"):
        train(compose_config("train", [*FAST, "fault.on_nan=skip", INJECT, "+callbacks.inject.nan_at_step=1"], tmp_path))
    checkpoint = _ckpt(tmp_path)
    # Lightning counts the skipped step (global_step, LR schedule) but nothing was updated in it:
    # AdamW's own step count is one lower, and every weight stayed finite.
    assert checkpoint["global_step"] == 3
    adam_steps = {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}
    assert adam_steps == {2.0}
    assert _all_finite(checkpoint["state_dict"])


def test_on_nan_rejects_unknown_policy(tmp_path):
    with pytest.raises(SystemExit, match="fault.on_nan=ignore is not supported; choose one of: stop, skip"):
        train(compose_config("train", [*FAST, "fault.on_nan=ignore"], tmp_path))


# --- preemption -----------------------------------------------------------------------------------

def test_sigterm_saves_a_checkpoint_exits_143_and_resumes(tmp_path):
    cfg = compose_config("train", [*FAST, "trainer.max_steps=4", "callbacks.last_checkpoint.every_n_train_steps=100",
                                   INJECT, "+callbacks.inject.signal_at_step=1"], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train(cfg)
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    assert _ckpt(tmp_path)["global_step"] == 2  # the batch in flight finished, then the save

    train(compose_config("train", [*FAST, "trainer.max_steps=4", "callbacks.last_checkpoint.every_n_train_steps=100"],
                         tmp_path))  # resume=auto, with the run's own checkpoint settings
    assert _ckpt(tmp_path)["global_step"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_requeue_signal_saves_then_hands_over_to_the_previous_handler(tmp_path):
    """Under submitit, SIGUSR2's handler requeues the job; it must run after last.ckpt is written."""
    seen = []

    def submitit_like(signum, frame):
        seen.append((signum, _ckpt(tmp_path)["global_step"]))

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        cfg = compose_config("train", [*FAST, "callbacks.last_checkpoint.every_n_train_steps=100", INJECT,
                                       "+callbacks.inject.signal_at_step=1", "+callbacks.inject.signal_name=SIGUSR2"],
                             tmp_path)
        with pytest.raises(SystemExit) as exit_info:
            train(cfg)
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored after the run
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    assert seen == [(signal.SIGUSR2, 2)]


# --- W&B, sweeps, FSDP config ----------------------------------------------------------------------

@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_without_key_logs_offline_quickly(no_wandb_key, tmp_path):
    start = time.perf_counter()
    logger = wandb_logger(project="deco-test", save_dir=str(tmp_path), name="avgpool-q16-s0", group="g")
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.experiment.finish()
    elapsed = time.perf_counter() - start
    assert logger._offline and elapsed < 60
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_with_key_but_no_server_goes_offline(no_wandb_key, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused at once
    start = time.perf_counter()
    logger = wandb_logger(project="deco-test", save_dir=str(tmp_path), reach_timeout_s=1.0)
    assert logger._offline and time.perf_counter() - start < 5


def test_sweep_group_names_multiruns_only():
    assert sweep_group("RunMode.MULTIRUN", "multirun/train/2026-11-25_21-00-00") == "train/2026-11-25_21-00-00"
    assert sweep_group("RunMode.RUN", "multirun/train/2026-11-25_21-00-00") is None


def test_fsdp_strategy_wraps_the_named_layers():
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    strategy = fsdp_strategy(["transformers.models.llama.modeling_llama.LlamaDecoderLayer"])
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and LlamaDecoderLayer in policy._module_classes
    with pytest.raises(ValueError, match="cannot import transformers.NoSuchLayer"):
        fsdp_strategy(["transformers.NoSuchLayer"])
