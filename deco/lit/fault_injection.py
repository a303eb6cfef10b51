"""`FaultInjection`: make a NaN batch, a NaN gradient, a SIGKILL or a signal happen at a given step, to test
`deco.lit.fault`'s handling (tests, and checking a cluster setup end to end; docs/scale.md)."""

from __future__ import annotations

import os
import signal
import threading

import lightning as L

from deco.lit.fault import _signal_number


class FaultInjection(L.Callback):
    """Inject a fault when `trainer.global_step` reaches a value (before that step's forward pass).

    nan_at_step: fill the batch's pixel values with NaN, so the loss of that step is NaN.
    kill_at_step: SIGKILL this process (no handler runs, nothing is flushed: a hard crash).
    signal_at_step: send `signal_name` to this process (e.g. SIGTERM, as SLURM does on preemption), after
        `signal_delay_s` seconds (from a timer thread: it lands wherever the process then is).
    signal_at_val_batch: send `signal_name` at this batch of the first validation run inside fit.
    kill_at_val_batch: SIGKILL this process at this batch of validation run number `val_run` (0: the first).
    nan_grad_at_step: after that step's backward, set one gradient element to NaN (the loss stays finite).
    rank: inject on this global rank only (a fault on one DDP process); None: on every rank.
    """

    def __init__(
        self,
        nan_at_step: int | None = None,
        kill_at_step: int | None = None,
        signal_at_step: int | None = None,
        signal_name: str = "SIGTERM",
        rank: int | None = None,
        signal_at_val_batch: int | None = None,
        nan_grad_at_step: int | None = None,
        kill_at_val_batch: int | None = None,
        val_run: int = 0,
        signal_delay_s: float = 0.0,
    ):
        self.rank = rank  # only on this global rank (None: all)
        self.nan_at_step = nan_at_step
        self.kill_at_step = kill_at_step
        self.signal_at_step = signal_at_step
        self.signal_at_val_batch = signal_at_val_batch
        self.nan_grad_at_step = nan_grad_at_step
        self.kill_at_val_batch, self.val_run = kill_at_val_batch, int(val_run)
        self.signal_delay_s = float(signal_delay_s)
        self.signum = _signal_number(signal_name)
        self._signalled = False
        self._val_runs = 0

    def _mine(self, trainer: L.Trainer) -> bool:
        return self.rank is None or trainer.global_rank == self.rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._mine(trainer):
            return
        step = trainer.global_step
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.signal_at_step is not None and step == self.signal_at_step and not self._signalled:
            self._signalled = True
            if self.signal_delay_s > 0:
                threading.Timer(self.signal_delay_s, os.kill, (os.getpid(), self.signum)).start()
            else:
                os.kill(os.getpid(), self.signum)
        if self.nan_at_step is not None and step == self.nan_at_step:
            images = batch.get("vision_features")
            (batch["pixel_values"] if images is None else images).fill_(float("nan"))

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_runs += 1

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if (
            self._mine(trainer)
            and not trainer.sanity_checking
            and self._val_runs == self.val_run
            and batch_idx == self.kill_at_val_batch
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        if (
            self._mine(trainer)
            and not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and batch_idx == self.signal_at_val_batch
            and not self._signalled
        ):
            self._signalled = True
            os.kill(os.getpid(), self.signum)

    def on_after_backward(self, trainer: L.Trainer, pl_module) -> None:
        if self._mine(trainer) and trainer.global_step == self.nan_grad_at_step:
            param = next(p for p in pl_module.parameters() if p.requires_grad and p.grad is not None)
            param.grad.view(-1)[0] = float("nan")
