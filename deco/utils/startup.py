"""A run's start without the cyclic garbage collector, and its long-lived objects frozen before workers fork.

Starting `deco.train` imports torch, Lightning (which imports torchmetrics, scipy and matplotlib), transformers
and Hydra, and builds the model: millions of long-lived objects and next to no cyclic garbage, so the collector's
passes during the start find nothing (on 2 busy cores `import deco.train` took 4.6 s of CPU with the collector,
3.5 s without). `paused_gc()` turns it off for the start; the function it yields (`freeze`) is called right
before training starts: what exists then goes to the permanent generation (`gc.freeze`) and the collector is
back on. This is the pattern Python's `gc` documentation gives for processes that fork workers: later
collections skip the frozen objects, and the forked DataLoader workers' collections do not write to their pages
(copy-on-write). On leaving, the objects are unfrozen and the collector's state is what it was, so a sweep that
runs several trainings in one process collects the earlier runs' garbage as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[Callable[[], None]]:
    """Collector off inside; yields `freeze()`: freeze what exists now and turn the collector back on."""
    enabled, frozen = gc.isenabled(), []

    def freeze() -> None:
        if not frozen:
            gc.freeze()
            frozen.append(True)
        if enabled:
            gc.enable()

    gc.disable()
    try:
        yield freeze
    finally:
        if frozen:
            gc.unfreeze()
        if enabled:
            gc.enable()
        else:
            gc.disable()
