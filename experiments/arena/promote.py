"""Reuse each projector's chosen tuning trial as its arena job (same seed, same tokens): no retraining.

    python -m experiments.arena.select multirun/arena_tune                     # -> configs/arena/*.yaml
    python -m experiments.arena.promote multirun/arena_tune multirun/arena     # then run.py evaluates them

A tuning trial at the chosen setting *is* the arena's job for its seed and token count: the same `deco.train`
commands, seed and data, with the chosen lr / heads given as overrides instead of through `+arena=<projector>`
(the trial must have used the arena's steps, batch and `--extra`). Only its scores differ: the trial was scored
on the validation world. Promoting it links its checkpoints into the arena dir and marks both training steps
done, so `run.py` scores the same checkpoints on the benchmarks' questions (and its curve) and trains nothing.
An arena job that already exists is left alone.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from experiments.arena.select import choose, trials


def trial_name(projector: str, best: dict) -> str:
    heads = "" if best["heads"] is None else f"-h{best['heads']}"
    return f"{projector}-lr{best['lr_scale']:g}{heads}-q{best['tokens']}-s{best['seed']}"


def promote(trial: Path, job: Path) -> None:
    """Make `job` (an arena run dir) the trained trial: checkpoints linked, logs copied, training marked done."""
    job.mkdir(parents=True)
    (job / "checkpoints").symlink_to((trial / "checkpoints").resolve(), target_is_directory=True)
    for name in ("metrics.jsonl", "csv/hparams.yaml", ".hydra"):  # s/step and parameter counts for the table
        src = trial / name
        if src.is_dir():
            shutil.copytree(src, job / name)
        elif src.is_file():
            (job / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, job / name)
    (job / "PROMOTED").write_text(f"trained as the tuning trial {trial.resolve()}\n")
    pre = job.with_name(f"{job.name}-pretrain")
    pre.mkdir(exist_ok=True)
    (pre / "done").touch()
    (job / "done").touch()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tune_root", type=Path)
    ap.add_argument("arena_root", type=Path)
    a = ap.parse_args(argv)
    a.arena_root.mkdir(parents=True, exist_ok=True)
    for projector, rows in sorted(trials(a.tune_root).items()):
        best = choose(rows, projector)
        if best is None:
            print(f"{projector}: budget incomplete; not promoted")
            continue
        trial = a.tune_root / trial_name(projector, best)
        job = a.arena_root / f"{projector}-q{best['tokens']}-s{best['seed']}"
        if job.exists():
            print(f"{projector}: {job} exists; left alone")
            continue
        promote(trial, job)
        print(f"{projector}: {trial.name} -> {job.name}")


if __name__ == "__main__":
    main()
