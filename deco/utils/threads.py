"""CPU thread count for torch, chosen on purpose rather than left to its default (one per core).

Measured on a 2-core machine shared with other jobs (`python -m deco.train experiment=shapes_existence
debug=fast trainer.max_steps=8 trainer.limit_train_batches=8`, mean step time of steps 3-8, twice each):
1 thread 0.96 s / 0.47 s per step, 2 threads 2.64 s / 2.12 s. The tiny model's matrices are small, so
a second thread mostly waits for a busy core; on small boxes one thread is 2.7-4.5x faster.
"""

from __future__ import annotations

import os

# Machines with at most this many cores get one thread by default (`threads: auto`).
SMALL_BOX_CORES = 4


def resolve_threads(value, cpu_count: int | None = None, env: dict | None = None) -> int | None:
    """`threads` config value -> the count to set, or None to leave torch's default.

    auto: 1 on small boxes (<= SMALL_BOX_CORES cores), else torch's default; unless OMP_NUM_THREADS is set,
    which a user (or a scheduler) set on purpose and wins. An int >= 1 is used as given."""
    env = os.environ if env is None else env
    if value is None:
        return None
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"threads={value!r}: use auto, null or a positive integer")
        if env.get("OMP_NUM_THREADS"):
            return None
        cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return 1 if cores <= SMALL_BOX_CORES else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads={value!r}: use auto, null or a positive integer")
    return value


def set_threads(value) -> int:
    """Apply `threads` (see resolve_threads) to torch; returns the thread count torch now uses."""
    from deco.utils.startup import paused_gc

    with paused_gc():  # the first import of torch in a run (Hydra calls this before the job): ~20 % less CPU
        import torch

    count = resolve_threads(value)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
