"""Training-data order that is independent of the device count and resumable mid-epoch.

An optimizer step sees one *global batch* of `batch_size x devices x accumulate` samples. The
epoch's shuffled index list (seeded by `seed + epoch`) is cut into global batches, and each
global batch into micro-batches of `batch_size`; rank r takes micro-batches `r*A .. r*A+A-1`
(A = accumulate). So 1 device x 4 accumulation steps and 2 devices x 2 see the same micro-batches
per step, and with the loss averaged per micro-batch (Lightning divides by A, DDP by the device
count) the gradient is the same up to float summation order. A trailing partial global batch is
dropped, as the alternative (a short last step) would differ between device counts.

`ResumableDataLoader` counts the batches handed to the training loop; the `LoaderPosition` callback
(deco.lit.loader_position) stores that count in every checkpoint and, on resume, makes the sampler
skip that many batches of the same epoch's order, so a resumed run continues with the very next batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def accumulation_for(global_batch_size: int, batch_size: int, world_size: int) -> int:
    """Gradient-accumulation steps that make `batch_size x world_size x steps == global_batch_size`."""
    per_step = batch_size * world_size
    if global_batch_size < per_step or global_batch_size % per_step:
        raise ValueError(
            f"data.global_batch_size={global_batch_size} must be a multiple of data.batch_size x devices "
            f"= {batch_size} x {world_size} = {per_step}"
        )
    return global_batch_size // per_step


class GlobalBatchSampler(DistributedSampler):
    """Sample indices of this rank, in micro-batch order, laid out by global batch (see module doc).

    Subclasses DistributedSampler so that Lightning does not wrap it in one of its own.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                 accumulate: int = 1, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.accumulate = accumulate
        self.global_batch = batch_size * num_replicas * accumulate
        self.steps_per_epoch = len(dataset) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.train has {len(dataset)} samples, fewer than one global batch of {self.global_batch} "
                f"(batch_size {batch_size} x devices {num_replicas} x accumulate {accumulate})"
            )
        # Micro-batches of this rank to skip at the start of the next iteration (set on resume).
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accumulate

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def order(self) -> list[int]:
        """This epoch's order of all sample indices (every rank computes the same)."""
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return torch.randperm(n, generator=generator).tolist()
        return list(range(n))

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        skip, self.start_batch = self.start_batch, 0
        for step in range(self.steps_per_epoch):
            for a in range(self.accumulate):
                if step * self.accumulate + a < skip:
                    continue
                start = step * self.global_batch + (self.rank * self.accumulate + a) * self.batch_size
                yield from order[start:start + self.batch_size]


class ResumableDataLoader(DataLoader):
    """DataLoader over a `GlobalBatchSampler` whose epoch position Lightning checkpoints and restores."""

    def __init__(self, dataset: Dataset, sampler: GlobalBatchSampler, **kwargs):
        super().__init__(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=False, **kwargs)
        self._consumed = 0

    def __iter__(self):
        # A generator: nothing (not even worker start-up) happens before the loop asks for the first
        # batch, which is after Lightning has called `set_epoch` and restored the position.
        sampler: GlobalBatchSampler = self.sampler
        self._consumed = sampler.start_batch
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def position(self) -> dict:
        """{"epoch", "batches"}: how far the training loop got into the current epoch, plus the dataset's
        skip counts ("skips", deco.data.skips) so that a resumed run reports what an uninterrupted one would."""
        out = {"epoch": self.sampler.epoch, "batches": self._consumed}
        if hasattr(self.dataset, "skips"):
            out["skips"] = self.dataset.skips.state()
        return out

    def resume(self, position: dict | None, epoch: int) -> None:
        """Skip the batches `position` had consumed when it is from `epoch` (the iterator is lazy, so this
        still applies to the epoch about to start); a position from an earlier epoch skips nothing."""
        if position is not None and position.get("skips") and hasattr(self.dataset, "skips"):
            self.dataset.skips.load_state(position["skips"])
        if position is not None and int(position["epoch"]) == epoch:
            self.sampler.start_batch = int(position["batches"])

    # Lightning's stateful-loader interface, so it knows this loader resumes (and does not warn that it
    # cannot). The position itself travels with deco.lit.loader_position.LoaderPosition, which restores
    # it after the loop state (Lightning's own call comes too early for the cosine schedule's set-up).
    def state_dict(self) -> dict:
        return self.position()

    def load_state_dict(self, state: dict) -> None:
        pass


def train_loader(dataset: Dataset, *, batch_size: int, seed: int, trainer=None, drop_last: bool = False,
                 group_by_modality_length: bool = False, **loader_kwargs) -> DataLoader:
    """The training DataLoader: resumable global-batch order for map-style datasets.

    Iterable datasets have no index to sample, so they get a plain loader (their order comes
    from their own pipeline; webdataset shards have their own loader and position callback in
    the datamodule). `drop_last` only applies to those: the global-batch order always drops an
    incomplete last global batch. `group_by_modality_length`: LLaVA's grouping of each global batch by
    modality and length (deco.lit.length_grouping).
    """
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
        return DataLoader(dataset, batch_size=batch_size, drop_last=drop_last, **loader_kwargs)
    world_size = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
    if not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"trainer.accumulate_grad_batches={accumulate} must be a positive integer")
    sampler_class = GlobalBatchSampler
    if group_by_modality_length:  # LLaVA's --group_by_modality_length (deco.lit.length_grouping)
        from deco.lit.length_grouping import ModalityLengthSampler as sampler_class
    sampler = sampler_class(dataset, batch_size, num_replicas=world_size, rank=rank, accumulate=accumulate,
                            shuffle=True, seed=seed)
    return ResumableDataLoader(dataset, sampler, **loader_kwargs)
