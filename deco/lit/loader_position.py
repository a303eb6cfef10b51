"""Callback that checkpoints where the training loader is in its epoch and puts it back on resume.

Any loader with `position() -> dict` and `resume(position, epoch)` qualifies: `ResumableDataLoader`
(map-style data in global-batch order, deco.lit.sampling) and `WdsLoader` (webdataset shards,
deco.data.wds). Lightning's own hook for stateful loaders is not used: it runs before the checkpoint is
restored when the optimizer setup has already built the loader, which deco's cosine schedule does (to
count steps). So the position travels under its own key: `on_save_checkpoint` stores it, and
`on_train_start` - after the loop state is restored, before the loader's lazy iterator draws the first
batch - hands it back, so a resumed run continues with the very next batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightning as L


@runtime_checkable
class PositionedLoader(Protocol):
    def position(self) -> dict:
        """Where the training loop got in the current epoch (JSON-like)."""

    def resume(self, position: dict | None, epoch: int) -> None:
        """Continue `epoch` from `position` when it belongs to that epoch, else start `epoch` afresh."""


class LoaderPosition(L.Callback):
    KEY = "deco_data_position"

    def __init__(self):
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, PositionedLoader):
            checkpoint[self.KEY] = loader.position()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        position, self._pending = self._pending, None
        loader = trainer.train_dataloader
        if isinstance(loader, PositionedLoader):
            # Lightning decides which epoch runs next (a checkpoint from an epoch's last batch resumes
            # at the start of the next one); the loader follows it.
            loader.resume(position, trainer.current_epoch)
