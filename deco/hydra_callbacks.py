"""Hydra callbacks shared by every entry point (configured in configs/hydra/default.yaml).

`Threads` sets torch's CPU thread count from the job's `threads` key before the job runs (see
deco/utils/threads.py for the measured default). `OutputsLine` makes the last line of every job name where its outputs are (the job's `out_dir`
where it has one, e.g. `deco.export out_dir=...`, else the run dir), and a sweep end with its sweep
dir, so a user never has to search for them. `ExplainComparison` (configs/explain.yaml) draws the
comparison figure of a `deco.explain -m ckpt=a,b,c ...` sweep from its job dirs.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("deco")


class Threads(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "threads" not in config:
            return
        from deco.utils.threads import set_threads

        try:
            count = set_threads(config.threads)
        except ValueError as error:
            raise SystemExit(f"Config error: {error}") from None
        log.info("torch uses %d CPU thread(s) (threads=%s)", count, config.threads)


class OutputsLine(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.COMPLETED:
            return  # the error is the last thing worth reading
        task = job_return.cfg.get("task_name") if job_return.cfg is not None else None
        where = None
        try:
            where = job_return.cfg.get("out_dir") if job_return.cfg is not None else None
        except Exception:  # noqa: BLE001 - an unresolvable out_dir falls back to the run dir
            where = None
        where = where or config.hydra.runtime.output_dir
        log.info("%s done; outputs in %s", task or job_return.task_name, where)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        log.info("sweep done; one run dir per job under %s", config.hydra.sweep.dir)


class ExplainComparison(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        from deco.explain.compare import compare_job_dirs

        sweep = Path(config.hydra.sweep.dir)
        jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name) if sweep.is_dir() else []
        for path in compare_job_dirs(jobs, sweep):
            log.info("comparison of the sweep's checkpoints: %s", path)
