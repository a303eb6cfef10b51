"""`deco.report evaluate=true`: evaluate the runs of a sweep that have no results yet, before the table.

Each run dir's `checkpoints/last.ckpt` is scored on each of `benchmarks` that has no
`<run>/eval/<benchmark>/metrics.json`, by `python -m deco.evaluate` in a child process (its own Hydra
job, run dir `<run>/eval/<benchmark>`, where `deco.report.runs` reads the results back), one at a time.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def missing_evaluations(sweep_dir: str | Path, benchmarks: Sequence[str]) -> list[tuple[Path, str]]:
    """(run dir, benchmark) pairs below `sweep_dir` with a last.ckpt and no metrics.json for that benchmark."""
    runs = sorted({p.parent for p in Path(sweep_dir).glob("**/metrics.jsonl") if (p.parent / "config.yaml").is_file()})
    return [
        (run, bench)
        for run in runs
        for bench in benchmarks
        if (run / "checkpoints" / "last.ckpt").is_file() and not (run / "eval" / bench / "metrics.json").is_file()
    ]


def evaluation_command(run: Path, benchmark: str, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "deco.evaluate",
        f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        f"benchmark={benchmark}",
        f"hydra.run.dir={run / 'eval' / benchmark}",
        "logger=none",
        *extra,
    ]


def evaluate_missing(sweep_dir: str | Path, benchmarks: Sequence[str], extra: Sequence[str] = ()) -> int:
    """Run the missing evaluations; returns how many ran. A failed one stops the report (RuntimeError)."""
    todo = missing_evaluations(sweep_dir, benchmarks)
    for k, (run, benchmark) in enumerate(todo, 1):
        log.info("evaluating %d/%d: %s on %s", k, len(todo), run.name, benchmark)
        result = subprocess.run(
            evaluation_command(run, benchmark, extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.strip().splitlines()[-15:])
            raise RuntimeError(f"deco.evaluate of {run} on {benchmark} failed (exit {result.returncode}):\n{tail}")
    return len(todo)
