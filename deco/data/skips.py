"""Counting the samples a dataset skips, by reason, across DataLoader worker processes.

Real data has broken samples (a truncated JPEG, a missing file, a malformed JSON line, an
empty or over-long conversation). Datasets raise `SkipSample(reason, detail)` for them and
record the skip in a `SkipCounter`. DataLoader workers are separate processes, so a plain
Python counter in a worker would never reach the trainer: the counts live in a small
shared-memory tensor (one row per process slot: row 0 the main process, row k+1 worker k),
which survives fork and spawn and needs no lock because each process only writes its own
row. The main process reads the sum at any time (`counts()`), e.g. at the end of an epoch;
counts cover every sample the loaders read (batches prefetched but not yet consumed
included). Given the dataset size, the counter also keeps one shared byte per sample, so a
sample that is bad in every epoch (or read twice) counts once: counts are distinct bad
samples. The first few skips per reason and process are logged with the sample id and
the cause; later ones are only counted.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

SKIP_REASONS: tuple[str, ...] = (
    "malformed_json",  # a JSONL line that is not JSON, or a record that is not an object with a conversations list
    "empty_conversation",  # no turns, or only blank turns
    "bad_conversation",  # roles not alternating human/gpt, <image> without an image (or the reverse), ...
    "missing_image",  # the image file does not exist (or a shard sample lacks its image)
    "corrupt_image",  # the image bytes do not decode (truncated, not an image)
    "too_long",  # more tokens than max_length (deco.data.conversation.SampleTooLong)
    "corrupt_shard",  # a sample the shard index lists but the tar file does not deliver (truncated shard)
    "unsafe_path",  # an image path outside image_root (`../x.jpg`; absolute paths unless allowed)
    "oversized_image",  # more pixels than deco decodes (a decompression bomb: a few bytes, gigabytes decoded)
    "extreme_aspect",  # width:height beyond deco.data.image.MAX_ASPECT_RATIO (a 60000x4 strip)
)
MAX_WORKERS = 64  # rows for DataLoader workers 0..63 (plus the main process)


class SkipSample(Exception):
    """A sample that cannot be used; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; allowed: {list(SKIP_REASONS)}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # pickled as (reason, detail): a forked reader sends its skips back (llava_prefetch)
        return type(self), (self.reason, self.detail)


def _slot() -> int:
    """Row of the calling process: 0 in the main process, worker id + 1 in a DataLoader worker."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0
    if info.id + 1 > MAX_WORKERS:
        raise ValueError(f"SkipCounter supports up to {MAX_WORKERS} DataLoader workers, got worker id {info.id}")
    return info.id + 1


class SkipCounter:
    """Per-reason skip counts shared by the main process and its DataLoader workers."""

    def __init__(self, name: str = "data", log_first: int = 5, size: int = 0):
        """size: number of samples, for de-duplication by sample index (0: count every add)."""
        self.name = name
        self.log_first = log_first
        # rows: process slots, cols: SKIP_REASONS. share_memory_() makes forked/spawned workers write here.
        self._table = torch.zeros(MAX_WORKERS + 1, len(SKIP_REASONS), dtype=torch.int64).share_memory_()
        # seen[i] = 1 + reason column once sample i was counted (each index is read by one worker at a time).
        self._seen = torch.zeros(size, dtype=torch.int8).share_memory_()
        self._logged: dict[str, int] = {}  # per process (each worker has its own copy)

    def add(self, reason: str, sample_id: object = None, detail: str = "", index: int | None = None) -> None:
        """Count one skipped sample and log it (the first `log_first` per reason in this process).

        index: the sample's position (< size); a sample already counted is not counted again.
        """
        col = SKIP_REASONS.index(reason)
        if index is not None and index < len(self._seen):
            if int(self._seen[index]):
                return
            self._seen[index] = col + 1
        self._table[_slot(), col] += 1
        n = self._logged.get(reason, 0) + 1
        self._logged[reason] = n
        if n <= self.log_first:
            more = " (further skips of this reason are counted, not logged)" if n == self.log_first else ""
            log.warning("%s: skipped sample %s (%s): %s%s", self.name, sample_id, reason, detail, more)

    def skip(self, error: SkipSample, sample_id: object = None, index: int | None = None) -> None:
        self.add(error.reason, sample_id, error.detail, index)

    def is_known_bad(self, index: int) -> bool:
        """True if sample `index` was already found bad (later epochs need not decode it again)."""
        return index < len(self._seen) and bool(self._seen[index])

    def counts(self) -> dict[str, int]:
        """{reason: count} summed over all processes (every reason present, zeros included)."""
        totals = self._table.sum(0).tolist()
        return dict(zip(SKIP_REASONS, (int(v) for v in totals)))

    def total(self) -> int:
        return int(self._table.sum())

    def load(self, counts: dict[str, int]) -> None:
        """Restore counts (e.g. from a checkpoint): they go to the main-process row, workers restart at 0."""
        unknown = set(counts) - set(SKIP_REASONS)
        if unknown:
            raise ValueError(f"unknown skip reasons {sorted(unknown)}; allowed: {list(SKIP_REASONS)}")
        self._table.zero_()  # the per-sample marks are not restored: a bad sample may count again
        for reason, value in counts.items():
            self._table[0, SKIP_REASONS.index(reason)] = int(value)

    def state(self) -> dict:
        """Counts and the per-sample marks, for a checkpoint: `load_state` restores both exactly."""
        seen = torch.nonzero(self._seen).flatten()
        return {"counts": self.counts(), "seen": seen.tolist(), "reasons": self._seen[seen].tolist()}

    def load_state(self, state: dict) -> None:
        self.load(state["counts"])
        self._seen.zero_()
        for index, col in zip(state.get("seen", []), state.get("reasons", [])):
            if index < len(self._seen):
                self._seen[index] = col

    def summary(self) -> str:
        counts = {k: v for k, v in self.counts().items() if v}
        if not counts:
            return f"{self.name}: no samples skipped"
        parts = ", ".join(f"{k}={v}" for k, v in counts.items())
        return f"{self.name}: skipped {sum(counts.values())} samples ({parts})"

    def __repr__(self) -> str:
        return f"SkipCounter({self.name!r}, {self.counts()}, pid={os.getpid()})"
