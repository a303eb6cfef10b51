"""`ProgressLog`: training progress as plain log lines when stderr is not a terminal.

Under SLURM, nohup or CI the rich/tqdm bar redraws one line with carriage returns, so a log file shows
nothing until the end. This callback logs `step 120/800 (15%), loss 1.234, 0.61 s/step, ETA 6.9 min`
every `interval_s` seconds instead (rank zero only), and stays silent on a terminal, where the bar shows.
The total is `trainer.max_steps`, or when training is bounded by epochs (the default recipe: one epoch,
`max_steps: -1`) the optimizer steps those epochs make. `EpochBar` is the terminal's rich bar, its epochs
counted from 1 (`epoch 1/1`, where Lightning's reads `Epoch 0/0`).
"""

from __future__ import annotations

import logging
import time

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from deco.utils.progress import interval_s, on_tty

log = logging.getLogger("deco.progress")


class ProgressLog(L.Callback):
    def __init__(self, interval_s: float | None = None, force: bool = False):
        self.interval_s = interval_s
        self.force = force  # log even on a terminal (tests)
        self._start = self._last = None

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and (self.force or not on_tty())

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active(trainer) or self._start is None:
            return
        now = time.monotonic()
        every = self.interval_s if self.interval_s is not None else interval_s()
        if now - self._last < every:
            return
        self._last = now
        log.info(progress_line(trainer.global_step, total_steps(trainer), self._first_step, now - self._start,
                               trainer.callback_metrics.get("train/loss")))


def total_steps(trainer: L.Trainer) -> int:
    """The optimizer steps this fit ends at: max_steps, else what max_epochs of the loader make; -1 if unknown."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    try:
        estimated = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - a loader without a length (webdataset): no total
        return -1
    return int(estimated) if estimated and math.isfinite(estimated) else -1


class EpochBar(RichProgressBar):
    """Lightning's rich bar, its epoch counted from 1 and out of max_epochs: `epoch 1/1`."""

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        text = f"epoch {current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")
        return f"{text:{len(self.validation_description)}}" if len(self.validation_description) > len(text) else text


def progress_line(step: int, max_steps: int, first_step: int, elapsed: float, loss=None) -> str:
    """'step 120/800 (15%), loss 1.234, 0.61 s/step, ETA 6.9 min' (no total / ETA when max_steps < 1)."""
    done = step - first_step
    per_step = elapsed / done if done > 0 else float("nan")
    parts = [f"step {step}/{max_steps} ({100 * step / max_steps:.0f}%)" if max_steps and max_steps > 0 else f"step {step}"]
    if loss is not None:
        parts.append(f"loss {float(loss.item() if isinstance(loss, torch.Tensor) else loss):.3f}")
    if done > 0:
        parts.append(f"{per_step:.2f} s/step")
        if max_steps and max_steps > 0:
            parts.append(f"ETA {per_step * (max_steps - step) / 60:.1f} min")
    return ", ".join(parts)
