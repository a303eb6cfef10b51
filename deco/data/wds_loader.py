"""A DataLoader over a WdsDataset (deco.data.wds) that counts epochs and resumes mid-epoch.

`WdsLoader` records, for every batch it yields, how many raw samples its worker had emitted; its `state_dict()`
(saved in checkpoints by the `deco.lit.loader_position.LoaderPosition` callback) holds the epoch and these
counts, and after `load_state_dict()` each worker replays its deterministic stream without decoding and
continues after the samples already trained on. The workers' batches are interleaved from worker 0 again, so
the resumed epoch has the same samples in a slightly different batch order.
"""

from __future__ import annotations

import logging

from torch.utils.data import DataLoader

from deco.data.wds import WdsDataset
from deco.data.wds_index import worker_samples

log = logging.getLogger(__name__)


class WdsLoader(DataLoader):
    """DataLoader over a WdsDataset that counts epochs and can resume mid-epoch.

    Each `iter()` starts the next epoch (the first one `epoch`). `state_dict()` reports
    progress as of `lookahead` batches before the last one yielded. Lightning fetches no
    batch ahead from a loader with a length (this one has), so the default is 0; a consumer
    that prefetches k batches before training on them needs lookahead=k, or a checkpoint
    would count batches it never trained on.
    """

    def __init__(self, dataset: WdsDataset, *args, epoch: int = 0, lookahead: int = 0, **kwargs):
        if not isinstance(dataset, WdsDataset):
            raise TypeError(f"WdsLoader needs a WdsDataset, got {type(dataset).__name__}")
        super().__init__(dataset, *args, **kwargs)
        self.epoch, self.lookahead = epoch, lookahead
        self._next_epoch = epoch
        self._history: list[dict] = []  # state after each yielded batch (last lookahead + 1 kept)
        self._resume: dict | None = None

    def __len__(self) -> int:
        """Batches per epoch: each worker batches its own share, the last batch may be partial."""
        ds: WdsDataset = self.dataset
        shares = worker_samples(len(ds), max(self.num_workers, 1))
        bs = self.batch_size or 1
        return sum(n // bs if self.drop_last else -(-n // bs) for n in shares)

    def _state(self, emitted: dict[int, int], finished: bool) -> dict:
        return {"epoch": self.epoch, "emitted": dict(emitted), "finished": finished,
                "skips": self.dataset.skips.counts(), "num_workers": max(self.num_workers, 1),
                "world_size": self.dataset.world_size}

    def __iter__(self):
        ds: WdsDataset = self.dataset
        emitted: dict[int, int] = {}
        if self._resume is not None:
            state, self._resume = self._resume, None
            self.epoch = state["epoch"] + 1 if state["finished"] else state["epoch"]
            layout = (state.get("num_workers", max(self.num_workers, 1)), state.get("world_size", ds.world_size))
            if layout != (max(self.num_workers, 1), ds.world_size) and not state["finished"]:
                log.warning("resuming epoch %d with %s workers x %s ranks instead of %s x %s: the epoch restarts",
                            self.epoch, max(self.num_workers, 1), ds.world_size, *layout)
            elif not state["finished"]:
                emitted = {int(w): int(k) for w, k in state["emitted"].items()}
            ds.set_resume(self.epoch, emitted)
        else:
            self.epoch = self._next_epoch
        self._next_epoch = self.epoch + 1
        ds.set_epoch(self.epoch)
        self._history = [self._state(emitted, False)]
        for batch in super().__iter__():
            workers, marks = batch.pop("_worker", None), batch.pop("_emitted", None)
            if workers is not None:
                w = int(workers[0])
                emitted[w] = max(emitted.get(w, 0), max(int(m) for m in marks))
            keep = self._history[len(self._history) - self.lookahead:] if self.lookahead else []
            self._history = [*keep, self._state(emitted, False)]
            yield batch
        self._history = [self._state(emitted, True)]
        ds.set_resume(-1, {})

    def start_epoch(self, epoch: int) -> None:
        """Make the next `iter()` start `epoch` from its beginning."""
        self._resume, self._next_epoch = None, int(epoch)

    def position(self) -> dict:
        """Where training got in the current epoch (the checkpointed form of `state_dict`)."""
        return self.state_dict()

    def resume(self, position: dict | None, epoch: int) -> None:
        """Continue `epoch` from `position` when it is an unfinished position of that epoch, else start it afresh."""
        if position is not None and int(position["epoch"]) == epoch and not position["finished"]:
            self.load_state_dict(position)
            log.info("wds: resuming epoch %d after %s raw samples per worker", epoch, position["emitted"])
        else:
            self.start_epoch(epoch)

    def state_dict(self) -> dict:
        if self._resume is not None:  # loaded but not iterated yet
            return dict(self._resume)
        if not self._history:
            return self._state({}, False)
        return self._history[0]  # the state `lookahead` batches ago (or at the epoch start)

    def load_state_dict(self, state: dict) -> None:
        missing = {"epoch", "emitted", "finished"} - set(state)
        if missing:
            raise ValueError(f"WdsLoader state lacks {sorted(missing)}")
        self._resume = dict(state)
        # Lightning saves rank 0's state. Its progress fits every rank (each rank's workers deliver
        # the same number of samples per batch); its skip counts are rank 0's own, so only rank 0 keeps them.
        if "skips" in state and self.dataset.rank == 0:
            self.dataset.skips.load(state["skips"])
