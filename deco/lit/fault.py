"""Fault handling: preemption signals, non-finite losses, and a fault injector to test both.

- `PreemptionCheckpoint`: on SIGTERM (what SLURM sends on preemption; Lightning records it in
  `trainer.received_sigterm`) or on the requeue signal submitit uses before a timeout (SIGUSR2
  by default), finish the current batch, write `last.ckpt` (atomically, through the trainer's
  CheckpointIO), then stop with `Preempted` at the next hook (so the step's metrics are logged).
  A signal during validation or between epochs saves the state of the last finished step, with
  the loop state as of that step's end, so that the resumed run redoes the validation. A handler that was installed for that signal before
  the run (submitit's "checkpoint and requeue") is called after the checkpoint is on disk, so
  submitit requeues the job and the requeued job continues with `resume=auto`.
- `loss_is_finite`: the NaN/inf test of the training step, agreed across ranks so that all
  DDP processes stop (or skip the step) together instead of deadlocking in the next all-reduce.
- `check_gradients`: the same test for the gradient norm, before clipping and the optimizer step. A
  finite loss can still give a NaN/inf gradient, which clipping spreads to every gradient and AdamW
  to every weight and moment; with `on_nan=stop` the run stops, with `skip` the step is dropped.
- `deco.lit.fault_injection.FaultInjection` makes these faults happen on purpose.
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DistributedSampler
from lightning.pytorch.utilities.exceptions import SIGTERMException

from deco.lit.checkpointing import ValidationResume, mark_validation_pending, validation_due_after_this_batch

log = logging.getLogger(__name__)

ON_NAN_CHOICES = ("stop", "skip")


class NonFiniteGradientError(RuntimeError):
    """The gradient norm became NaN or inf (with a finite loss); the weights were not updated."""


def gradient_norm(module: torch.nn.Module, params=None) -> torch.Tensor:
    """L2 norm over all gradients of `module` (or of `params`; 0 when none), computed as gradient clipping
    computes it (`torch.nn.utils.get_total_norm`, one fused norm per device and dtype)."""
    grads = [p.grad.detach() for p in (module.parameters() if params is None else params) if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, 2.0)


def check_gradients(module: L.LightningModule, on_nan: str, batch_idx: int | None = None, norm=None) -> bool:
    """True when this optimizer step must be skipped (non-finite gradient norm on some rank, on_nan=skip).

    Raises NonFiniteGradientError for on_nan=stop. Runs before clipping, so nothing was changed yet.
    `norm`: the gradient norm when the caller computed it already (else computed here).
    """
    norm = gradient_norm(module) if norm is None else norm
    local = bool(torch.isfinite(norm))
    trainer = module._trainer
    finite = local if trainer is None else not _any_rank(trainer, not local)  # all ranks agree
    if finite:
        return False
    value = float(norm) if not torch.isfinite(norm) else "non-finite on another rank"
    where = f"global step {module.global_step} (epoch {module.current_epoch})"
    if on_nan == "skip":
        module._nonfinite_skips = getattr(module, "_nonfinite_skips", 0) + 1
        log.warning(
            "gradient norm is %s at %s with a finite loss: skipping this optimizer step "
            "(fault.on_nan=skip); the weights were not updated",
            value,
            where,
        )
        return True
    raise NonFiniteGradientError(
        f"gradient norm is {value} at {where} with a finite loss; the weights were not updated in this step "
        "and no checkpoint holds non-finite weights. Lower the learning rate or check the data, or use "
        "fault.on_nan=skip to skip such steps"
    )


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


PREEMPTING = threading.Event()  # set once a preemption checkpoint is written: a later SIGTERM just exits 143
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a terminated job


def _exit_preempted(signum, frame) -> None:
    raise SystemExit(PREEMPTED_EXIT_CODE)


def _loaders(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class PreemptionCheckpoint(L.Callback):
    """Save `<dirpath>/last.ckpt` at the first optimizer-step boundary after a preemption signal, then stop."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt", signals: list[str] | tuple[str, ...] = ("SIGUSR2",)):
        self.path = Path(dirpath) / filename
        self.signals = [_signal_number(s) for s in signals]
        self._received: int | None = None
        self._previous: dict[int, object] = {}
        self._loops_before_val: dict | None = None  # fit-loop state at the last training batch's end
        self._saving_mid_validation = False
        self._pending: str | None = None  # saved, stop at the next hook (message)
        self._saved_step: int | None = None
        self._val_owed = False
        self._sync_each_val_batch = True

    def _record(self, signum: int, frame) -> None:
        log.warning("received %s: saving a checkpoint at the end of this batch", signal.Signals(signum).name)
        self._received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # After Lightning has registered its own handlers (it restores the ones it found, i.e.
        # the pre-run ones, when fit ends), so ours are in front only while training runs.
        # SIGTERM too: Lightning's handler stops the signalled rank alone and, under DDP, broadcasts from
        # inside the handler, i.e. a collective at whatever point the signal lands (Lightning #20806):
        # with SIGTERM on rank 1 first, rank 1 saved into a barrier while rank 0 ran the next step, and both
        # hung. Ours only records it; all ranks agree at the next batch end and save and stop together.
        PREEMPTING.clear()  # a new fit (tests run several in one process)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in dict.fromkeys([*self.signals, signal.SIGTERM]):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        self._sync_each_val_batch = trainer.world_size == 1 or all(
            isinstance(getattr(loader, "sampler", None), DistributedSampler)
            for loader in _loaders(trainer.val_dataloaders)
        )  # equal batch counts on every rank

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            if signum == signal.SIGTERM and PREEMPTING.is_set():
                handler = _exit_preempted  # not Lightning's (a collective inside a handler); exit 143
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._restore()  # Lightning skips `teardown` hooks when fit ends with an exception
        if isinstance(exception, SIGTERMException) and not isinstance(exception, Preempted):
            if self._saved_step == trainer.global_step:
                return  # saved at the batch boundary already; Lightning then stopped on its own
            # Lightning stopped on SIGTERM outside a training batch (during validation or between
            # epochs): the weights are those of the last finished step, save them too.
            PREEMPTING.set()
            self._saving_mid_validation = trainer.validating and self._loops_before_val is not None
            try:
                trainer.save_checkpoint(self.path, weights_only=False)  # the full state (silences Lightning)
            finally:
                self._saving_mid_validation = False
            log.warning("SIGTERM received: saved %s at global step %d", self.path, trainer.global_step)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        if self._saving_mid_validation:
            checkpoint["loops"]["fit_loop"] = self._loops_before_val
            if self._val_owed:
                checkpoint[ValidationResume.OWED] = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # The loop state a checkpoint written now holds. Saved mid-validation, Lightning's own loop
        # state resumes into the wrong epoch (it skipped one); with this one the resumed run redoes
        # the validation and goes on exactly as an uninterrupted run (a small dict of counters).
        self._loops_before_val = copy.deepcopy(trainer.fit_loop.state_dict())
        self._val_owed = validation_due_after_this_batch(trainer)
        if self._val_owed:  # saved during that validation: the resumed run runs it again
            mark_validation_pending(self._loops_before_val)
        if (batch_idx + 1) % trainer.accumulate_grad_batches or self._pending is not None:
            return  # mid-accumulation: partial gradients are not checkpointed, wait for the step
        if self._signalled_anywhere(trainer):
            self._save(trainer)
        # Stop at the next hook, not here: Lightning still logs this step's metrics (CSV, W&B) after
        # this hook. (On SIGTERM it may stop by itself first: on_exception knows it was saved.)

    def _signalled_anywhere(self, trainer: L.Trainer) -> bool:
        """Whether some rank received a signal (an all-reduce: every rank must call it at the same point)."""
        return _any_rank(trainer, self._received is not None or bool(trainer.received_sigterm))

    def _save(self, trainer: L.Trainer) -> None:
        PREEMPTING.set()
        self._saving_mid_validation = trainer.validating and self._loops_before_val is not None
        try:
            trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; rank 0 writes
        finally:
            self._saving_mid_validation = False
        self._saved_step = trainer.global_step
        name = signal.Signals(self._received).name if self._received is not None else "SIGTERM"
        self._pending = (
            f"{name} received: saved {self.path} at global step {trainer.global_step}; "
            "rerun with resume=auto (and the same run dir) to continue"
        )
        log.warning(self._pending)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # A signal during validation: every rank saves the last finished step and stops here, at once.
        if (
            self._sync_each_val_batch
            and self._pending is None
            and not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and self._signalled_anywhere(trainer)
        ):
            self._save(trainer)
            self._stop_if_pending()

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        # ranks whose validation loaders may differ in length agree once validation is over
        if (
            not self._sync_each_val_batch
            and self._pending is None
            and not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and self._signalled_anywhere(trainer)
        ):
            self._save(trainer)

    def _stop_if_pending(self) -> None:
        if self._pending is None:
            return
        message, self._pending = self._pending, None
        # a handler installed before the run (submitit's requeue); never Lightning's SIGTERM handler
        previous = self._previous.get(self._received) if self._received not in (None, signal.SIGTERM) else None
        if callable(previous):  # e.g. submitit: requeue this job, then exit
            previous(self._received, None)
        raise Preempted(message)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._stop_if_pending()

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._stop_if_pending()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._stop_if_pending()
