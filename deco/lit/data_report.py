"""Callback that reports the samples the datasets skipped (corrupt images, malformed JSON, ...).

Datasets that carry a `deco.data.skips.SkipCounter` (LLaVA JSON, webdataset shards) count
skipped samples by reason in every DataLoader worker. `DataReport` sums those counts over
DDP ranks, logs them at the end of every train / validation epoch (`data/skipped/<split>`
plus one metric per non-zero reason) and at the end of fit writes them to a JSON file and
to the log, so a run never trains on silently dropped data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch

from deco.data.skips import SKIP_REASONS

log = logging.getLogger(__name__)


def _datasets(trainer: L.Trainer) -> dict:
    datamodule = getattr(trainer, "datamodule", None)
    datasets = getattr(datamodule, "datasets", None) or {}
    return {split: ds for split, ds in datasets.items() if hasattr(ds, "skips")}


class DataReport(L.Callback):
    def __init__(self, path: str | None = None):
        """path: JSON file for the end-of-run counts ({split: {reason: count}}); None: log only."""
        self.path = Path(path) if path else None
        self.final: dict[str, dict[str, int]] = {}

    @staticmethod
    def _summed(trainer: L.Trainer, dataset) -> dict[str, int]:
        """Counts of one dataset summed over ranks (every rank must call this)."""
        counts = dataset.skips.counts()
        values = torch.tensor([counts[r] for r in SKIP_REASONS], dtype=torch.float64)
        if trainer.world_size > 1:
            values = trainer.strategy.reduce(values.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        return {r: int(round(v)) for r, v in zip(SKIP_REASONS, values.tolist())}

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        dataset = _datasets(trainer).get(split)
        if dataset is None:
            return
        counts = self._summed(trainer, dataset)
        # Already summed over ranks: log as a plain value on every rank (no second reduction).
        pl_module.log(f"data/skipped/{split}", float(sum(counts.values())), rank_zero_only=True)
        for reason, value in counts.items():
            if value:
                pl_module.log(f"data/skipped/{split}/{reason}", float(value), rank_zero_only=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, "val")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.final = {split: self._summed(trainer, ds) for split, ds in _datasets(trainer).items()}
        if not trainer.is_global_zero:
            return
        for split, counts in self.final.items():
            nonzero = {k: v for k, v in counts.items() if v}
            if nonzero:
                log.warning("data.%s: skipped %d samples: %s", split, sum(nonzero.values()), nonzero)
            else:
                log.info("data.%s: no samples skipped", split)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.final, indent=1) + "\n")
