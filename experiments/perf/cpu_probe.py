"""A Lightning callback for benchmarks: wall and CPU time (this process and its DataLoader workers) per step.

    python -m deco.train ... +callbacks.cpu_probe._target_=experiments.perf.cpu_probe.CpuProbe \
        +callbacks.cpu_probe.path=/tmp/probe.json

At every training batch end it records (global step, wall seconds, CPU seconds of the main process, CPU
seconds of its live children: the DataLoader workers); at fit end it writes them as JSON. `per_step` turns
them into the mean cost of a step between two steps (the first steps, with imports and worker start, left out).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, CPU seconds of its live child processes and their children)."""
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    children = 0.0
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            children += t.user + t.system
        except psutil.Error:  # exited meanwhile
            pass
    return own.user + own.system, children


class CpuProbe(L.Callback):
    def __init__(self, path: str):
        self.path = Path(path)
        self.records: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.records.append([trainer.global_step, time.perf_counter(), *cpu_seconds()])

    def on_fit_end(self, trainer, pl_module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"records": self.records}))
        os.replace(tmp, self.path)


def per_step(records: list[list[float]], skip: int = 5) -> dict:
    """Mean wall / main CPU / worker CPU / total CPU seconds per step after the first `skip` steps."""
    first, last = records[min(skip, len(records) - 2)], records[-1]
    n = last[0] - first[0]
    wall, main, workers = ((last[i] - first[i]) / n for i in (1, 2, 3))
    return {"steps": n, "wall_s": wall, "main_cpu_s": main, "worker_cpu_s": workers, "cpu_s": main + workers}
