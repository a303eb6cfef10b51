"""Experiment-logger builders.

W&B runs offline (logs kept on disk, `wandb sync` later) when no API key is configured or the
user asks for it, so a run never hangs waiting for a login or a network. `ResumableCSVLogger` is
Lightning's CSV logger without its habit of deleting `metrics.csv` when the run dir already has one:
a resumed run keeps the rows from before the interruption (the steps it redoes replace theirs).
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


def wandb_logger(project: str, save_dir: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, offline: bool | None = None, **kwargs) -> WandbLogger:
    """WandbLogger that goes offline when `offline` is true, or when it is None and no key exists."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_key()
    os.makedirs(save_dir, exist_ok=True)
    logger = WandbLogger(project=project, save_dir=save_dir, name=name, group=group, tags=list(tags or []),
                         offline=offline, **kwargs)
    # Lightning always hands wandb.init `anonymous` (None), a setting wandb deprecated: it warns on every run.
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


def finish_runs(loggers) -> None:
    """End the W&B run of a finished job, so that the next job of an in-process sweep (Hydra's
    basic launcher) starts its own run instead of logging into this one."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv; its first save drops the old rows of the steps being logged again."""

    def _check_log_dir_exists(self) -> None:
        self._resuming = self._fs.isfile(self.metrics_file_path)
        if self._resuming:
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def save(self) -> None:
        if getattr(self, "_resuming", False) and self.metrics:
            self._resuming = False
            first = min(int(m.get("step", 0)) for m in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") not in (None, "") and int(r["step"]) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        super().save()


class ResumableCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
