"""Checkpoints that survive kills, and the pieces that make a resumed run match an uninterrupted one.

- `AtomicCheckpointIO` writes every Lightning checkpoint to a temporary file in the target
  directory, fsyncs it and renames it over the target: a kill at any moment leaves either the
  previous complete file or the new complete file, never a truncated `last.ckpt`.
  Weights that hold NaN/inf are never saved (`NonFiniteWeightsError`, the previous file stays).
  Loads are always `weights_only=True`: a checkpoint that needs arbitrary code is refused.
- `resolve_ckpt_path` turns `ckpt_path=` / `resume=auto` into the checkpoint `trainer.fit` resumes.
- `ValidationResume` makes a checkpoint saved just before a validation resume into that validation.
- `StepSeed` reseeds torch's RNG before every training batch from (seed, rank, epoch, batch
  index). Dropout masks and any other random draw inside a step are then a function of the
  step's position, which the checkpoint restores, so no RNG state has to be carried over (and
  RNG draws outside the training step, e.g. when a validation DataLoader starts, cannot shift
  the training stream between a killed-and-resumed and an uninterrupted run).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from deco.models.formats.common import safe_torch_load
from deco.utils.io import atomic_write

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoints/last.ckpt"


class NonFiniteWeightsError(RuntimeError):
    """A checkpoint about to be saved holds NaN/inf weights; it was not written."""


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of `state` that hold a NaN or inf."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local writes are temp file + fsync + rename, and never of non-finite weights."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict") or {})
        if bad:
            raise NonFiniteWeightsError(
                f"refusing to save {path} at global step {checkpoint.get('global_step')}: {len(bad)} weight tensors "
                f"hold NaN/inf (e.g. {', '.join(bad[:3])}); the previous checkpoint is kept as it was"
            )
        if storage_options is not None or "://" in str(path):  # remote filesystems: Lightning's own path
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        _fsync_dir(path.parent)  # make the rename itself durable

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        """Always weights_only=True (explicit, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off):
        a checkpoint that needs arbitrary code is refused with deco's message, nothing in it runs."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return safe_torch_load(path, map_location="cpu" if map_location is None else map_location)

    def remove_checkpoint(self, path) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def resolve_ckpt_path(resume: str | None, ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint to resume from.

    `ckpt_path` (an explicit file) wins and must exist. Otherwise `resume=auto` picks
    `<output_dir>/checkpoints/last.ckpt` when it exists and starts fresh when it does not;
    `resume=null` always starts fresh.
    """
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return str(ckpt_path)
    if resume in (None, False, "none", "null", "never"):
        return None
    if resume != "auto":
        raise ValueError(f"resume={resume} is not supported; use resume=auto, resume=null or ckpt_path=<file>")
    last = Path(output_dir) / LAST_CHECKPOINT
    if last.is_file():
        log.info("resume=auto: continuing from %s", last)
        return str(last)
    log.info("resume=auto: no %s yet, starting a fresh run", last)
    return None


def step_seed(seed: int, rank: int, epoch: int, batch_idx: int) -> int:
    """A 63-bit seed that is a pure function of the training position."""
    return int(np.random.SeedSequence([seed, rank, epoch, batch_idx]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class StepSeed(L.Callback):
    """Reseed torch (CPU and CUDA) before each training batch from the batch's position."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        seed = step_seed(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)
        if _accelerator_available():
            torch.manual_seed(seed)
        else:  # the same CPU seed; torch.manual_seed also queues lazy CUDA/XPU seeding (~0.5 ms a step)
            torch.default_generator.manual_seed(seed)


def _zero_current(progress: dict) -> None:
    """Zero every `current` counter below `progress` (what Lightning does when an epoch starts)."""
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            progress[key] = {k: 0 for k in value}
        elif isinstance(value, dict):
            _zero_current(value)


class EpochEndResume(L.Callback):
    """Resume a checkpoint written after an epoch had finished at the start of the next epoch.

    With `max_steps` set, Lightning treats such a resume as a restart inside the finished epoch, so
    the next epoch starts with its batch counter already at the end and trains nothing (a run that
    stopped at max_steps or was preempted between epochs then skips a whole epoch). This puts the
    per-epoch counters where an uninterrupted run has them when the next epoch begins.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        fit = (checkpoint.get("loops") or {}).get("fit_loop")
        if not fit:
            return
        epoch = fit["epoch_progress"]["current"]
        if epoch["ready"] == epoch["started"] == epoch["processed"] == epoch["completed"] + 1:
            # Saved in on_train_epoch_end (ModelCheckpoint, a kill right after): training and validation
            # of the epoch are done, only its completion count is not; count it, as the loop would have.
            for part in ("total", "current"):
                fit["epoch_progress"][part]["completed"] = fit["epoch_progress"][part]["processed"]
        if not epoch["ready"] == epoch["started"] == epoch["processed"] == epoch["completed"] > 0:
            return  # the epoch was unfinished: Lightning's restart logic applies
        for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress",
                    "epoch_loop.automatic_optimization.optim_progress"):
            if key in fit:
                _zero_current(fit[key])
        if "epoch_loop.batch_progress" in fit:
            fit["epoch_loop.batch_progress"]["is_last_batch"] = False
        val = fit.get("epoch_loop.val_loop.batch_progress")
        if val:
            val["total"] = {k: 0 for k in val["total"]}


def validation_due_after_this_batch(trainer: L.Trainer) -> bool:
    """Whether the fit loop is at a training batch's end (not yet counted complete) after which it validates."""
    loop = trainer.fit_loop.epoch_loop
    progress = loop.batch_progress.current
    if trainer.sanity_checking or trainer.validating or progress.completed != progress.processed - 1:
        return False
    try:  # Lightning's own test, as on_advance_end makes it right after this batch
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except Exception:  # another Lightning: assume no validation is owed
        return False


def mark_validation_pending(fit_state: dict) -> None:
    """Make a fit-loop state saved at a training batch's end read as "stopped inside validation, at its
    first batch", so that Lightning's restart goes back and runs that validation (RESTARTED_MID_EVALUATION)
    instead of counting it as done."""
    val = fit_state.get("epoch_loop.val_loop.batch_progress")
    if not val:
        return
    done = val["total"]["completed"]
    val["total"].update(ready=done + 1, started=done + 1, processed=done)
    val["current"] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}


class ValidationResume(L.Callback):
    """A checkpoint written at the end of a training batch that is followed by a validation (e.g. last.ckpt
    every N steps at the epoch's last batch) resumes into that validation. Without this, Lightning skips
    it: a kill during validation loses it for good (best.ckpt from another step; no val/loss after a kill in
    the final validation, so deco.train returns None).

    Mid-run, Lightning's own restart runs it (`mark_validation_pending`); after the last epoch Lightning
    ends the fit before any restart logic runs, so the owed validation is run here, at the end of training.
    """

    OWED = "deco_validation_owed"

    def __init__(self):
        self._owed = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        fit = (checkpoint.get("loops") or {}).get("fit_loop")
        if fit and validation_due_after_this_batch(trainer):
            mark_validation_pending(fit)
            checkpoint[self.OWED] = True

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        self._owed = bool(checkpoint.get(self.OWED))

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._owed:
            return
        self._owed = False
        # The saves that follow this validation in an uninterrupted run (ModelCheckpoint saves best.ckpt at
        # the epoch's end, after its validation): now, while the weights are those of the validated step.
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback._should_save_on_train_epoch_end(trainer):
                callback.on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self._owed or trainer.received_sigterm:
            return
        log.info("resumed after the last training step but before its validation: validating now")
        loop = trainer.fit_loop.epoch_loop
        trainer.validating = True  # as the training epoch loop does before each validation
        try:
            loop.val_loop.run()
        finally:
            trainer.training = True


def _accelerator_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (torch.cuda.is_available() or torch.backends.mps.is_available()
            or bool(xpu is not None and xpu.is_available()))
