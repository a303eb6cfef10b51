"""Progress that shows in both places a job runs: a tqdm bar on a terminal, and on a log file (SLURM,
nohup, CI) one plain line every `interval` seconds, since a bar redrawn with carriage returns shows
nothing useful there until the end."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("deco.progress")
# Seconds between progress lines when not on a TTY (override with DECO_PROGRESS_INTERVAL).
DEFAULT_INTERVAL_S = 30.0


def on_tty(stream=None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def interval_s() -> float:
    return float(os.environ.get("DECO_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))


def eta_text(done: int, total: int | None, elapsed: float) -> str:
    """'12/40 (30%), 6.0 s elapsed, ETA 14.0 s' (no ETA without a total or before the first item)."""
    if not total:
        return f"{done} done, {elapsed:.1f} s elapsed"
    text = f"{done}/{total} ({100 * done / total:.0f}%), {elapsed:.1f} s elapsed"
    if done:
        text += f", ETA {elapsed / done * (total - done):.1f} s"
    return text


def track(items: Iterable, desc: str, total: int | None = None, interval: float | None = None,
          tty: bool | None = None, clock=time.monotonic) -> Iterator:
    """Yield `items`, showing progress: tqdm on a TTY, else a log line every `interval` seconds and at the end."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if on_tty() if tty is None else tty:
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total)
        return
    interval = interval_s() if interval is None else interval
    start = last = clock()
    done = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= interval:
            log.info("%s: %s", desc, eta_text(done, total, now - start))
            last = now
    log.info("%s: %s", desc, eta_text(done, total, clock() - start))
