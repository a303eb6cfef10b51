"""Callbacks deco adds to every run.

`JsonlMetrics` appends every logged metric to `metrics.jsonl` in the run dir (one JSON object
per logging step), so results survive without any dashboard and `deco.report` can read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


def _plain(value):
    return value.item() if isinstance(value, torch.Tensor) else value


class JsonlMetrics(L.Callback):
    def __init__(self, path: str):
        self.path = Path(path)
        self._last_step_written = -1

    def _write(self, trainer: L.Trainer, phase: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: _plain(v) for k, v in trainer.callback_metrics.items() if k.startswith(phase)}
        if not metrics:
            return
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, **metrics}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0 and trainer.global_step != self._last_step_written:
            self._last_step_written = trainer.global_step
            self._write(trainer, "train/")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, "val/")
