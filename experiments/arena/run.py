"""Run the arena (or its tuning sweep): resumable, `--lanes` jobs at a time, one thread each.

    python -m experiments.arena.run --out multirun/arena --lanes 2            # 12 projectors x 144/64 (576) x 3 seeds
    python -m experiments.arena.run ... --cache ~/.cache/deco/tower_features  # the tower once per scene, for all jobs
    python -m experiments.arena.run --out multirun/arena_tune --tune          # the budget, seed 42, validation world
    python -m experiments.arena.run ... --projectors avgpool qformer --seeds 42 --tokens 64
    python -m experiments.arena.run ... --extra model.llm.name_or_path=/path/zoo/llm   # any deco.train override

A rerun skips every step whose marker exists (see jobs.py), so a stopped arena continues where it stopped.
Each job writes its commands' output to `<out>/<job>.log`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.arena.jobs import (BENCHMARKS, PROJECTORS, SEEDS, Job, Settings, arena_jobs, evaluation_steps,
                                    training_steps, tuning_jobs)


def run_job(s: Settings, job: Job) -> str:
    """Run the job's missing steps in order; returns 'name: ok' or 'name: failed at <step> (see log)'."""
    log = s.out / f"{job.name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "a") as out:
        for phase in (training_steps, evaluation_steps):  # the curve's checkpoints exist only after training
            for marker, cmd in phase(s, job):
                if marker.exists():
                    continue
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                if proc.returncode != 0:
                    return f"{job.name}: failed at {marker.relative_to(s.out)} (exit {proc.returncode}; see {log})"
                if marker.name == "done":
                    marker.touch()
    return f"{job.name}: ok"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--projectors", nargs="+", default=list(PROJECTORS))
    ap.add_argument("--tokens", nargs="+", type=int, default=[144, 64])
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--curve", type=int, default=100)
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    ap.add_argument("--tune", action="store_true", help="the tuning budget (first seed, validation world)")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for every deco.train call")
    ap.add_argument("--cache", type=Path, help="tower-feature cache dir shared by every job (docs/data.md): the "
                    "frozen tower's outputs for a seed's scenes are computed once for all projectors")
    ap.add_argument("--eval-extra", nargs="*", default=[], help="overrides for every deco.evaluate call")
    ap.add_argument("--dry-run", action="store_true", help="list the jobs and their pending steps")
    a = ap.parse_args(argv)
    s = Settings(out=a.out.resolve(), steps=a.steps, pretrain_steps=a.pretrain_steps, batch=a.batch, curve=a.curve,
                 validation=a.tune, benchmarks=tuple(a.benchmarks), eval_extra=tuple(a.eval_extra),
                 extra=tuple(a.extra) + (("tower_features.enabled=true", f"tower_features.cache_dir={a.cache.resolve()}")
                                         if a.cache else ()))
    jobs = (tuning_jobs(a.projectors, a.seeds[0], min(a.tokens)) if a.tune
            else arena_jobs(a.projectors, tuple(a.tokens), tuple(a.seeds)))
    s.out.mkdir(parents=True, exist_ok=True)
    if a.dry_run:
        for job in jobs:
            pending = [m for m, _ in training_steps(s, job) + evaluation_steps(s, job) if not m.exists()]
            print(f"{job.name}: {len(pending)} steps pending")
        return 0
    with ThreadPoolExecutor(max_workers=max(1, a.lanes)) as pool:
        results = list(pool.map(lambda j: run_job(s, j), jobs))
    for line in results:
        print(line)
    return 0 if all(line.endswith(": ok") for line in results) else 1


if __name__ == "__main__":
    sys.exit(main())
