"""Callback that checkpoints and restores the position of a webdataset training loader (`WdsLoader`).

Lightning's own hook for stateful dataloaders runs before the checkpoint is restored when the
optimizer setup has already built the loader (deco's cosine schedule does, to count steps), so,
like `deco.lit.sampling.DataPosition` for map-style data, the position travels under its own key:
`on_save_checkpoint` stores `WdsLoader.state_dict()` and `on_train_start` - after the loop state
is restored, before the loader's lazy iterator draws the first batch - hands it back, so a
resumed run continues the interrupted epoch with the samples it had not trained on yet.
"""

from __future__ import annotations

import logging

import lightning as L

from deco.data.wds import WdsLoader

log = logging.getLogger(__name__)


class WdsPosition(L.Callback):
    KEY = "deco_wds_position"

    def __init__(self):
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        loader = trainer.train_dataloader
        if isinstance(loader, WdsLoader):
            checkpoint[self.KEY] = loader.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        state, self._pending = self._pending, None
        if not isinstance(loader, WdsLoader):
            return
        # Lightning decides which epoch runs next; the loader follows it.
        epoch = trainer.current_epoch
        if state is not None and int(state["epoch"]) == epoch and not state["finished"]:
            loader.load_state_dict(state)
            log.info("wds: resuming epoch %d after %s raw samples per worker", epoch, state["emitted"])
        else:
            loader.start_epoch(epoch)
