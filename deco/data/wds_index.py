"""The shard index and the epoch plan of deco webdataset shards, and the raw sample streams they are read as.

Pure functions over `index.json` and tar files (no torch): which contiguous segments of which shards every
(rank, worker) reads in an epoch, and a seeded shuffle buffer. deco.data.wds (the module docstring says why the
plan is cut this way) builds the dataset and loader on top.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from webdataset.tariterators import group_by_keys, tar_file_iterator

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "deco-wds/1"
UNEVEN = ("drop", "pad")


@dataclass(frozen=True)
class ShardIndex:
    root: Path
    names: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def num_samples(self) -> int:
        return sum(self.counts)

    def path(self, k: int) -> Path:
        return self.root / self.names[k]


def load_index(path: str | os.PathLike) -> ShardIndex:
    """Read `index.json` (path to it, or to the shard folder holding it)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"shard index not found: {str(path)!r} (write shards and index with `python -m deco.data.to_wds`, "
            f"or index existing shards with `python -m deco.data.to_wds index_only=true out=<folder>`)"
        )
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
        raise ValueError(f"{path} is not a deco shard index: expected an object with a 'shards' list")
    names, counts = [], []
    for k, shard in enumerate(data["shards"]):
        if not isinstance(shard, dict) or "name" not in shard or not isinstance(shard.get("num_samples"), int):
            raise ValueError(f"{path}: shards[{k}] needs 'name' and an integer 'num_samples', got {shard!r}")
        names.append(shard["name"])
        counts.append(shard["num_samples"])
    index = ShardIndex(path.parent, tuple(names), tuple(counts))
    missing = [n for n in names if not (path.parent / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) listed in {path} do not exist, e.g. {missing[0]!r}")
    return index


def plan_epoch(
    counts: list[int] | tuple[int, ...],
    *,
    epoch: int,
    seed: int,
    shuffle: bool,
    rank: int,
    world_size: int,
    worker: int,
    num_workers: int,
    uneven: str = "drop",
) -> list[tuple[int, int, int]]:
    """Segments (shard, start, stop) that (rank, worker) reads in `epoch`, in reading order.

    The union over all ranks and workers is every sample once (uneven="drop": minus the last
    N mod world_size of the epoch's stream; "pad": plus that many repeats from its start).
    """
    if uneven not in UNEVEN:
        raise ValueError(f"uneven must be one of {list(UNEVEN)}, got {uneven!r}")
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"bad rank/worker {rank}/{world_size}, {worker}/{num_workers}")
    order = list(range(len(counts)))
    if shuffle:
        random.Random(f"shards-{seed}-{epoch}").shuffle(order)
    total = sum(counts)
    if total == 0:
        return []
    per_rank = total // world_size if uneven == "drop" else -(-total // world_size)
    base, extra = divmod(per_rank, num_workers)
    start = rank * per_rank + worker * base + min(worker, extra)  # position in the (wrapping) epoch stream
    length = base + (worker < extra)
    # Shard boundaries in stream order.
    bounds = [0]
    for k in order:
        bounds.append(bounds[-1] + counts[k])
    segments: list[tuple[int, int, int]] = []
    pos, end = start, start + length
    while pos < end:
        p = pos % total
        j = next(i for i in range(len(order)) if bounds[i + 1] > p)  # shard holding stream position p
        take = min(bounds[j + 1] - p, end - pos)
        offset = p - bounds[j]
        segments.append((order[j], offset, offset + take))
        pos += take
    return segments


def per_rank_samples(total: int, world_size: int, uneven: str) -> int:
    return total // world_size if uneven == "drop" else -(-total // world_size)


def worker_samples(per_rank: int, num_workers: int) -> list[int]:
    base, extra = divmod(per_rank, num_workers)
    return [base + (w < extra) for w in range(num_workers)]


def read_segment(path: Path, start: int, stop: int) -> Iterator[dict]:
    """Raw samples start..stop-1 of one shard ({'__key__', 'json': bytes, 'jpg': bytes, ...}).

    Yields fewer when the tar is truncated or unreadable (the caller counts the shortfall).
    """
    n = 0
    try:
        with open(path, "rb") as f:
            files = ({**entry, "__url__": str(path)} for entry in tar_file_iterator(f))
            for sample in group_by_keys(files):
                if n >= start:
                    yield sample
                n += 1
                if n >= stop:
                    return
    except (OSError, tarfile.TarError, ValueError) as error:
        log.error("shard %s unreadable after %d samples: %s", path, n, error)


def shuffled(items: Iterator, buffer: int, rng: random.Random) -> Iterator:
    """Shuffle a stream with a buffer of `buffer` items (0 or 1: no shuffling)."""
    if buffer <= 1:
        yield from items
        return
    pool: list = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        i = rng.randrange(buffer)
        yield pool[i]
        pool[i] = item
    rng.shuffle(pool)
    yield from pool
