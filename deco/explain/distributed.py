"""Relevance export and scoring on several processes: `torchrun --nproc_per_node=N -m deco.explain ...`.

Each rank explains a disjoint, strided shard of the inputs (sample i goes to rank i mod N) and writes
its own PNG / tensor files (their names carry the sample index, so ranks never write the same file);
the per-input records and score rows are gathered to rank 0, put back in the order one process would
have produced them, and rank 0 alone writes `index.jsonl` and the score tables, so the merged outputs
equal a single-process run's. Ranks agree on rank 0's output directory (Hydra names run dirs by the
second they start). The process group comes from torchrun's environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); objects travel over a gloo group, so NCCL runs need no extra setup.
Without that environment everything runs as rank 0 of 1. Imports neither Hydra nor Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Shard:
    rank: int = 0
    world: int = 1
    group: Any = field(default=None, repr=False)  # gloo group for objects (None: one process)
    owns_group: bool = False  # this module initialised the default group, so it tears it down

    def mine(self, position: int) -> bool:
        """Whether the input at `position` (0-based, in single-process order) is this rank's."""
        return position % self.world == self.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, items: Sequence[tuple[Any, Any]]) -> list[Any]:
        """All ranks' (sort key, item) pairs on rank 0, items ordered by key (stable); [] on other ranks."""
        items = list(items)
        if self.world > 1:
            everything: list = [None] * self.world if self.is_main else None
            dist.gather_object(items, everything, dst=0, group=self.group)
            if not self.is_main:
                return []
            items = [pair for part in everything for pair in part]
        return [item for _, item in sorted(items, key=lambda pair: pair[0])]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def from_environment() -> Shard:
    """Rank and world size from torchrun's variables, with the process group started when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return Shard(rank=dist.get_rank(), world=dist.get_world_size(), group=group, owns_group=owns)


def local_device(name: str) -> torch.device:
    """`auto` / `cuda` become this rank's GPU (LOCAL_RANK) when several processes share a node."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device

