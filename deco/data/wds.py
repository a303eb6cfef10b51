"""Webdataset shards of LLaVA samples: an iterable dataset with exact DDP/worker splitting and resumable epochs
(the index, the epoch plan and the raw tar streams: deco.data.wds_index).

Shards are tar files written by `deco.data.to_wds`: per sample `<key>.json` (id +
conversations) and, unless text-only, `<key>.jpg`; `index.json` next to them lists the
shards and their sample counts. Tar members are read with webdataset's tar iterators.

Splitting. Each epoch every rank computes the same plan from the index: the shard order
(shuffled with seed + epoch), viewed as one stream of N samples, is cut into `world_size`
contiguous equal slices (`uneven="drop"` drops the last N mod world_size samples of the
epoch's stream, `"pad"` wraps around and repeats as many from its start), and each rank's
slice into near-equal contiguous pieces, one per DataLoader worker. So every sample is read
by exactly one (rank, worker) per epoch, every rank holds the same number of samples, and
a worker reads only a few neighbouring shards. A shuffle buffer (per worker, seeded by
seed/epoch/rank/worker) mixes samples across shard boundaries; it holds raw bytes, so the
order of emitted raw samples is deterministic and independent of decoding.

Optionally (`group_by_length`) each worker sorts runs of samples by token count before
batching, so batches pad less (LLaVA's length grouping, within a worker's stream).

Bad samples (see deco.data.skips) are counted and replaced by a repeat of a good neighbour
from the same worker, so the number of samples per worker - hence of batches per rank,
which DDP needs equal - does not depend on data quality.

Resuming: `WdsLoader` (deco.data.wds_loader) replays each worker's deterministic stream without decoding
(`set_resume`) and continues after the samples already trained on.
"""

from __future__ import annotations

import json
import os
import random
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from deco.data.llava_json import SPLITS, build_sample, check_dataset_args, check_record, open_image
from deco.data.skips import MAX_WORKERS, SkipCounter, SkipSample
from deco.data.wds_index import UNEVEN, ShardIndex, load_index, per_rank_samples, plan_epoch, read_segment, shuffled

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # the image member of a sample, first found


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class WdsDataset(IterableDataset):
    """LLaVA samples from deco webdataset shards, split exactly over ranks and workers.

    path: shard folder (or its index.json). split/val_shards: "val" is the last `val_shards`
    shards of the index, "train" the others, "all" every shard. num_samples: use only the
    first N samples (index order). shuffle: shard order and a `shuffle_buffer`-sample buffer,
    both seeded by (seed, epoch). uneven: "drop" or "pad" the samples that do not divide over
    the ranks. group_by_length: sort each run of this many samples (per worker) by length, so
    batches pad less (0: off; use a multiple of the batch size, e.g. 16 x batch_size).
    rank/world_size: default from torch.distributed (or RANK / WORLD_SIZE).
    Items as LlavaJsonDataset (input_ids, labels, pixel_values, id) plus `_worker` and
    `_emitted` (resume bookkeeping that WdsLoader removes from batches).
    """

    def __init__(
        self,
        path: str,
        split: str = "all",
        val_shards: int = 0,
        num_samples: int | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        uneven: str = "drop",
        group_by_length: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        tokenizer,
        image_processor,
        template: str = "vicuna_v1",
        max_length: int | None = 2048,
        image_aspect: str = "pad",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if uneven not in UNEVEN:
            raise ValueError(f"uneven must be one of {list(UNEVEN)}, got {uneven!r}")
        check_dataset_args(tokenizer, template, max_length, image_aspect)
        index = load_index(path)
        names, counts = list(index.names), list(index.counts)
        if split != "all":
            if not 0 < val_shards < len(names):
                raise ValueError(f"val_shards={val_shards} must be in 1..{len(names) - 1} for split {split!r} "
                                 f"({len(names)} shards in {index.root})")
            cut = len(names) - val_shards
            names, counts = (names[cut:], counts[cut:]) if split == "val" else (names[:cut], counts[:cut])
        if num_samples is not None:  # keep a prefix of the samples in index order
            kept, left = [], num_samples
            for c in counts:
                kept.append(min(c, left))
                left -= kept[-1]
            names, counts = [n for n, c in zip(names, kept) if c], [c for c in kept if c]
        if sum(counts) == 0:
            raise ValueError(f"no samples in the shards of {index.root} (split {split!r})")
        self.index = ShardIndex(index.root, tuple(names), tuple(counts))
        self.shuffle, self.shuffle_buffer, self.seed, self.uneven = shuffle, shuffle_buffer, seed, uneven
        self.group_by_length = group_by_length
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.template, self.max_length, self.image_aspect = template, max_length, image_aspect
        self.skips = SkipCounter(f"wds[{split}]", size=self.index.num_samples)
        self._first = [0]  # index-order number of each shard's first sample
        for c in counts[:-1]:
            self._first.append(self._first[-1] + c)
        detected = _world()
        self.rank = detected[0] if rank is None else rank
        self.world_size = detected[1] if world_size is None else world_size
        # Shared with workers: [0] epoch, [1] epoch the resume counts belong to (-1: none), [2 + w] raw
        # samples worker w already delivered in that epoch. Persistent workers read it at each new epoch.
        self._state = torch.full((2 + MAX_WORKERS,), 0, dtype=torch.int64).share_memory_()
        self._state[1] = -1

    # --- epoch / distributed / resume control (main process, before iterating) ---
    def set_epoch(self, epoch: int) -> None:
        self._state[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    def set_distributed(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size

    def set_resume(self, epoch: int, emitted: dict[int, int]) -> None:
        """In `epoch`, worker w skips the first emitted[w] raw samples of its stream."""
        self._state[2:] = 0
        for w, k in emitted.items():
            self._state[2 + int(w)] = int(k)
        self._state[1] = int(epoch)

    def __len__(self) -> int:
        """Samples this rank reads per epoch."""
        return per_rank_samples(self.index.num_samples, self.world_size, self.uneven)

    # --- reading ---
    def _raw_stream(self, segments: list[tuple[int, int, int]]) -> Iterator[dict]:
        """Raw samples of the segments, each with `__index__` (its number in index order); a sample
        that a truncated shard failed to deliver is {'__index__': i, '__missing__': True}."""
        for shard, start, stop in segments:
            base = self._first[shard] + start
            n = 0
            for sample in read_segment(self.index.path(shard), start, stop):
                sample["__index__"] = base + n
                n += 1
                yield sample
            for k in range(n, stop - start):
                yield {"__index__": base + k, "__missing__": True}

    def decode(self, raw: dict) -> dict:
        """Raw tar sample -> model sample; SkipSample if it is broken."""
        if raw.get("__missing__"):
            raise SkipSample("corrupt_shard", "the shard ended before the samples its index lists")
        if "json" not in raw:
            raise SkipSample("malformed_json", f"sample {raw.get('__key__')} has no .json member")
        try:
            record = json.loads(raw["json"])
        except ValueError as error:
            raise SkipSample("malformed_json", str(error)) from None
        image_bytes = next((raw[e] for e in IMAGE_EXTS if e in raw), None)
        if isinstance(record, dict) and image_bytes is not None and record.get("image") is None:
            record["image"] = f"{raw['__key__']}.jpg"  # shards from other tools may not name the image
        check_record(record)
        if record.get("image") is not None and image_bytes is None:
            raise SkipSample("missing_image", f"sample {raw['__key__']} names an image but has no image member")
        loader = None if image_bytes is None else (lambda: open_image(image_bytes))
        return build_sample(
            record, loader, tokenizer=self.tokenizer, image_processor=self.image_processor, template=self.template,
            max_length=self.max_length, image_aspect=self.image_aspect,
            sample_id=str(record.get("id", raw["__key__"])),
        )

    def __iter__(self) -> Iterator[dict]:
        samples = self._samples()
        yield from samples if self.group_by_length <= 1 else grouped_by_length(samples, self.group_by_length)

    def _samples(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = int(self._state[0])
        skip = int(self._state[2 + worker]) if int(self._state[1]) == epoch else 0
        segments = plan_epoch(
            self.index.counts, epoch=epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size, worker=worker, num_workers=num_workers, uneven=self.uneven,
        )
        rng = random.Random(f"buffer-{self.seed}-{epoch}-{self.rank}-{worker}")
        raw = shuffled(self._raw_stream(segments), self.shuffle_buffer if self.shuffle else 0, rng)
        last_good, owed = None, 0
        for emitted, item in enumerate(raw, start=1):
            if emitted <= skip:  # already trained on before a resume: replay without decoding
                continue
            try:
                if self.skips.is_known_bad(item["__index__"]):  # found bad in an earlier epoch
                    raise SkipSample("corrupt_image", "known bad")  # not counted again
                sample = self.decode(item)
            except SkipSample as error:
                self.skips.skip(error, item.get("__key__"), index=item["__index__"])
                if last_good is None:
                    owed += 1  # no good sample yet: repeat the next one
                else:
                    yield {**last_good, "_emitted": emitted}
                continue
            sample.update(_worker=worker, _emitted=emitted)
            yield sample
            for _ in range(owed):
                yield sample
            owed, last_good = 0, sample
        if owed:
            raise RuntimeError(
                f"rank {self.rank} worker {worker}: all {owed} samples of its share of epoch {epoch} are broken "
                f"({self.skips.summary()}); the shards in {self.index.root} look unusable"
            )


def grouped_by_length(samples: Iterator[dict], group: int) -> Iterator[dict]:
    """Emit `group` samples at a time sorted by token count, so consecutive batches pad little.

    Resume bookkeeping: a group counts as consumed only when its last sample is, so a resume
    in the middle of a group replays that whole group.
    """
    def flush(pool: list[dict], before: int) -> Iterator[dict]:
        pool.sort(key=lambda s: len(s["input_ids"]))
        end = max(s["_emitted"] for s in pool)
        for k, s in enumerate(pool):
            yield {**s, "_emitted": end if k == len(pool) - 1 else before}

    pool: list[dict] = []
    before = 0  # raw samples emitted before the current group
    for sample in samples:
        if not pool:
            before = sample["_emitted"] - 1
        pool.append(sample)
        if len(pool) == group:
            yield from flush(pool, before)
            pool = []
    if pool:
        yield from flush(pool, before)
