"""Figure 9's subprocess: `deco.train` to its first step, with its phases timed (wall and CPU).

    python -m experiments.perf.llava_phases OUT.json data=llava_json data.json_path=... [overrides]

Runs what `python -m deco.train OVERRIDES` runs (the same `main`, the same arguments), with timers around its
phases: Hydra's compose, the imports `train` makes (torch, Lightning, ...), the tokenizer, the model build, the
trainer, `fit` up to the first batch (the file read for both splits, DataLoader workers started, first batch
made) and the first step. At the end of step 1
it writes OUT.json and stops the run: per phase the wall seconds and the main process's CPU seconds
(`time.process_time`), the time of the end of step 1 (epoch seconds), the main process's peak RSS, and the CPU
seconds of the background reader (`data.background_read`, a child already waited for) and of the DataLoader
workers by then. The timers go in where `train` pauses the garbage collector
(`deco.utils.startup.paused_gc`), so the imports are measured as `python -m deco.train` pays them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import runpy
import sys
import time

_OUT: list[str] = []
_MARKS: list[tuple[str, float, float]] = []  # (what ended, wall, process CPU)
_SPANS: list[tuple[str, float, float, float, float]] = []  # (name, wall start, wall end, cpu start, cpu end)


def mark(name: str) -> None:
    _MARKS.append((name, time.time(), time.process_time()))


def _timed(owner, attr: str, name: str, entry: str | None = None) -> None:
    """Wrap owner.attr so that each call is recorded as a span `name` (and its start as a mark `entry`)."""
    inner = getattr(owner, attr)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        if entry:
            mark(entry)
        w, c = time.time(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            _SPANS.append((name, w, time.time(), c, time.process_time()))

    setattr(owner, attr, wrapper)


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's live children (the DataLoader workers)."""
    me, tick, total = str(os.getpid()), os.sysconf("SC_CLK_TCK"), 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; then utime, stime at 11, 12 after the name
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def write_result(stage: str) -> None:
    """Record `stage` (e.g. the end of step 1) and write everything to OUT.json."""
    mark(stage)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # children already waited for: the background reader
    result = {
        "time": time.time(),
        "process_cpu_s": time.process_time(),
        "maxrss_bytes": rss,
        "workers_cpu_s": _children_cpu(),
        "reader_cpu_s": reaped.ru_utime + reaped.ru_stime,
        "marks": _MARKS,
        "spans": _SPANS,
    }
    with open(_OUT[0], "w") as f:
        json.dump(result, f)


def _instrument() -> None:
    """Timers on the phases inside `train`; called where `train` pauses the collector, so that the heavy imports
    made here are paid as `train` pays them (they would be the next lines of `train` anyway)."""
    import deco.data.image
    import deco.data.llava_json
    import deco.data.tokenizer
    import deco.lit.datamodule
    import deco.lit.module  # noqa: F401 (imported by train: its cost belongs to the imports)
    import deco.models.build
    from lightning.pytorch import trainer as trainer_module

    mark("imports: Lightning, transformers, deco (collector off)")
    _timed(deco.data.tokenizer, "load_tokenizer", "tokenizer")
    _timed(deco.data.image, "load_image_processor", "image processor")
    _timed(deco.models.build, "build_mllm", "model build")
    _timed(deco.data.llava_json, "load_records", "file read (both splits)")
    _timed(deco.data.llava_json.LlavaJsonDataset, "__init__", "dataset")
    _timed(deco.lit.datamodule.MLLMDataModule, "setup", "datamodule setup")
    _timed(trainer_module.Trainer, "__init__", "trainer init")


def _timed_paused_gc(original):
    """`paused_gc` with marks: its first use is Threads' import of torch (a Hydra callback, after the compose),
    the second `train`'s start, where the timers go in."""
    calls = []

    @contextlib.contextmanager
    def paused_gc():
        calls.append(1)
        if len(calls) == 1:
            mark("Hydra compose")
            with original() as freeze:
                yield freeze
            mark("import torch (threads, collector off)")
            return
        mark("Hydra callbacks, train() entered")
        with original() as freeze:
            _instrument()

            def timed_freeze():
                mark("config checks, model, data config, trainer (before fit)")
                freeze()
                mark("gc.freeze")

            yield timed_freeze

    return paused_gc


def main() -> None:
    mark("interpreter start")
    _OUT.append(sys.argv.pop(1))
    import deco.utils.startup

    deco.utils.startup.paused_gc = _timed_paused_gc(deco.utils.startup.paused_gc)  # deco.train imports it below
    mark("start-up imports")
    # as `python -m deco.train` runs it: Hydra finds configs/ from the __main__ module's file
    runpy.run_module("deco.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    sys.modules.setdefault("experiments.perf.llava_phases", sys.modules["__main__"])
    main()
