"""Callbacks deco adds to every run.

`Throughput` logs tokens per second and step time of each training step (visual tokens
included, padding excluded), the number that compares projectors at equal budgets.
`JsonlMetrics` appends every logged metric to `metrics.jsonl` in the run dir (one JSON object
per logging step), so results survive without any dashboard and `deco.report` can read them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether this training step's logged values reach the loggers (and JsonlMetrics' record).

    Lightning writes per-step metrics every `log_every_n_steps` steps; a `self.log` call costs ~0.3-0.6 ms
    of Python on a CPU whether or not its value is written (experiments/perf/README.md, figure 1), so
    per-step metrics other than the progress bar's loss are logged only on these steps (same values written).
    """
    if trainer.log_every_n_steps == 0 or trainer.fast_dev_run:
        return True
    return bool(trainer._logger_connector.should_update_logs)


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


class Throughput(L.Callback):
    """Logs `train/tokens_per_s` and `train/step_time_s` on logging steps; list it before JsonlMetrics."""

    def __init__(self):
        self._started: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._started is None or not logs_this_step(trainer):
            return
        seconds = time.perf_counter() - self._started
        model = pl_module.model
        # Sequence length after merging: text tokens, each placeholder replaced by the visual tokens.
        images = int((batch["input_ids"] == model.image_token_id).sum())
        tokens = int(batch["attention_mask"].sum()) + images * (model.num_visual_tokens - 1)
        batch_size = batch["input_ids"].shape[0]
        pl_module.log("train/tokens_per_s", tokens / max(seconds, 1e-9), batch_size=batch_size)
        pl_module.log("train/step_time_s", seconds, batch_size=batch_size)
