"""Fault handling: preemption signals, non-finite losses, and a fault injector to test both.

- `PreemptionCheckpoint`: on SIGTERM (what SLURM sends on preemption; Lightning records it in
  `trainer.received_sigterm`) or on the requeue signal submitit uses before a timeout (SIGUSR2
  by default), finish the current batch, write `last.ckpt` (atomically, through the trainer's
  CheckpointIO), then stop with `Preempted`. A handler that was installed for that signal before
  the run (submitit's "checkpoint and requeue") is called after the checkpoint is on disk, so
  submitit requeues the job and the requeued job continues with `resume=auto`.
- `loss_is_finite`: the NaN/inf test of the training step, agreed across ranks so that all
  DDP processes stop (or skip the step) together instead of deadlocking in the next all-reduce.
- `FaultInjection`: makes a NaN batch, a SIGKILL or a signal happen at a given step
  (tests, and checking a cluster setup end to end).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

ON_NAN_CHOICES = ("stop", "skip")


class Preempted(SIGTERMException):
    """The run received a preemption signal and stopped after saving a checkpoint."""


def _signal_number(name: str | int) -> int:
    if isinstance(name, int):
        return name
    try:
        return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
    except AttributeError:
        raise ValueError(f"fault.preempt_signals: unknown signal {name!r} (e.g. SIGUSR2)") from None


def _any_rank(trainer: L.Trainer, flag: bool) -> bool:
    if trainer.world_size <= 1:
        return flag
    value = torch.tensor(float(flag), device=trainer.strategy.root_device)
    return bool(trainer.strategy.reduce(value, reduce_op="sum") > 0)


def loss_is_finite(module: L.LightningModule, loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank."""
    finite = bool(torch.isfinite(loss.detach()).all())
    trainer = module._trainer
    if trainer is None:
        return finite
    return not _any_rank(trainer, not finite)


class PreemptionCheckpoint(L.Callback):
    """Save `<dirpath>/last.ckpt` at the first optimizer-step boundary after a preemption signal, then stop."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt", signals: list[str] | tuple[str, ...] = ("SIGUSR2",)):
        self.path = Path(dirpath) / filename
        self.signals = [_signal_number(s) for s in signals]
        self._received: int | None = None
        self._previous: dict[int, object] = {}

    def _record(self, signum: int, frame) -> None:
        log.warning("received %s: saving a checkpoint at the end of this batch", signal.Signals(signum).name)
        self._received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # After Lightning has registered its own handlers (it restores the ones it found, i.e.
        # the pre-run ones, when fit ends), so ours are in front only while training runs.
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._restore()  # Lightning skips `teardown` hooks when fit ends with an exception
        if isinstance(exception, SIGTERMException) and not isinstance(exception, Preempted):
            # Lightning stopped on SIGTERM outside a training batch (during validation or between
            # epochs): the weights are those of the last finished step, save them too.
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM received: saved %s at global step %d", self.path, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: partial gradients are not checkpointed, wait for the step
        local = self._received is not None or bool(trainer.received_sigterm)
        if not _any_rank(trainer, local):
            return
        trainer.save_checkpoint(self.path)  # every rank calls it; rank 0 writes
        name = signal.Signals(self._received).name if self._received is not None else "SIGTERM"
        message = (f"{name} received: saved {self.path} at global step {trainer.global_step}; "
                   "rerun with resume=auto (and the same run dir) to continue")
        log.warning(message)
        previous = self._previous.get(self._received) if self._received is not None else None
        if callable(previous):  # e.g. submitit: requeue this job, then exit
            previous(self._received, None)
        raise Preempted(message)


class FaultInjection(L.Callback):
    """Inject a fault when `trainer.global_step` reaches a value (before that step's forward pass).

    nan_at_step: fill the batch's pixel values with NaN, so the loss of that step is NaN.
    kill_at_step: SIGKILL this process (no handler runs, nothing is flushed: a hard crash).
    signal_at_step: send `signal_name` to this process (e.g. SIGTERM, as SLURM does on preemption).
    rank: inject on this global rank only (a fault on one DDP process); None: on every rank.
    """

    def __init__(self, nan_at_step: int | None = None, kill_at_step: int | None = None,
                 signal_at_step: int | None = None, signal_name: str = "SIGTERM", rank: int | None = None):
        self.rank = rank  # only on this global rank (None: all)
        self.nan_at_step = nan_at_step
        self.kill_at_step = kill_at_step
        self.signal_at_step = signal_at_step
        self.signum = _signal_number(signal_name)
        self._signalled = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        step = trainer.global_step
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.signal_at_step is not None and step == self.signal_at_step and not self._signalled:
            self._signalled = True
            os.kill(os.getpid(), self.signum)
        if self.nan_at_step is not None and step == self.nan_at_step:
            batch["pixel_values"].fill_(float("nan"))
