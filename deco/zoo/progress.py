"""A progress bar on a terminal, a log line every `interval` seconds elsewhere (SLURM, nohup)."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class progress:
    def __init__(self, total: int, desc: str, interval: float = 30.0):
        self.total, self.desc, self.interval = total, desc, interval
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True) if self.tty else None
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()

    def update(self, n: int = 1, **values: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.interval or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            extra = " ".join(f"{k}={v:.4f}" for k, v in values.items())
            log.info("%s: %d/%d (%.2f it/s, eta %.0f s) %s", self.desc, self.done, self.total, rate, eta, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
