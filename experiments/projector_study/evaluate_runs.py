"""Evaluate and explain every finished finetune run of the projector study.

    python experiments/projector_study/evaluate_runs.py            # once, over what is finished
    python experiments/projector_study/evaluate_runs.py --watch    # follow a running sweep until it ends

Per run dir `runs/finetune/<projector>-q<tokens>-s<seed>/` (finished = recorded ok in
`runs/sweep_status.jsonl`), three commands, each writing below the run dir where
`python -m deco.report` looks:
1. `python -m deco.evaluate -m` over the four shapes benchmarks (the paper's three families:
   attribute + existence = benchmark-style, grounding = localization, caption = open-ended),
   `benchmark.num_samples` questions each -> `eval/<benchmark>/{metrics.json,predictions.jsonl}`;
2. `python -m deco.explain` R-GAE of the probe (probe.png, "What colour is the square?" -> "Red.")
   -> `relevance/relevance-rgae-*.pt` and the three PNGs;
3. `python -m deco.explain mode=score` R-GAE energy-in-box / pointing on shapes-world scenes
   -> `relevance_score/summary.json`.
A run with `eval_done` in its dir is skipped, and so is one whose `eval/` exists (another copy
of this script is on it; delete `eval/` to redo a run that broke off).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCHMARKS = "shapes_attribute,shapes_existence,shapes_grounding,shapes_caption"
PROBE = {"image": HERE / "probe.png", "question": "What colour is the square?", "text": "Red."}


def commands(run: Path, python: str, num_samples: int, score_samples: int) -> list[list[str]]:
    ckpt = run / "checkpoints" / "last.ckpt"
    return [
        [python, "-m", "deco.evaluate", "-m", f"ckpt={ckpt}", f"benchmark={BENCHMARKS}",
         f"benchmark.num_samples={num_samples}", "logger=none", "progress=false", "device=cpu",
         f"hydra.sweep.dir={run / 'eval'}", "hydra.sweep.subdir=${benchmark.name}"],
        [python, "-m", "deco.explain", f"ckpt={ckpt}", f"image={PROBE['image']}", f"text={PROBE['text']}",
         f"question={PROBE['question']}", "method=rgae", "progress=false", "device=cpu",
         f"hydra.run.dir={run / 'relevance'}"],
        [python, "-m", "deco.explain", "mode=score", f"ckpt={ckpt}", f"score.num_samples={score_samples}",
         "score.methods=[rgae]", "score.perturbation=false", "progress=false", "device=cpu",
         f"hydra.run.dir={run / 'relevance_score'}"],
    ]


def finished_runs(runs_dir: Path) -> list[Path]:
    status = runs_dir / "sweep_status.jsonl"
    if not status.exists():
        return []
    ok = [Path(r["run"]) for r in map(json.loads, status.read_text().splitlines()) if r.get("ok")]
    return [p for p in ok if p.parent.name == "finetune"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--num-samples", type=int, default=40, help="questions per benchmark")
    parser.add_argument("--score-samples", type=int, default=16, help="scenes for the relevance score")
    parser.add_argument("--watch", action="store_true", help="poll until --sweep-pid exits")
    parser.add_argument("--sweep-pid", type=int, default=None)
    parser.add_argument("--reverse", action="store_true",
                        help="newest runs first: a second copy of this script then shares the work")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HYDRA_FULL_ERROR": "1"}
    failures = 0
    while True:
        pending = [r for r in finished_runs(args.runs) if not (r / "eval_done").exists()]
        for run in reversed(pending) if args.reverse else pending:
            if (run / "eval_done").exists() or (run / "eval").exists():  # done or taken by another copy
                continue
            (run / "eval").mkdir()
            start = time.time()
            ok = True
            for cmd in commands(run, sys.executable, args.num_samples, args.score_samples):
                result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                (run / "eval_logs").mkdir(exist_ok=True)
                log_name = f"{cmd[2].split('.')[-1]}{'-score' if 'mode=score' in cmd else ''}.log"
                (run / "eval_logs" / log_name).write_text(result.stdout + result.stderr)
                if result.returncode != 0:
                    ok = False
                    print(f"FAILED ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}", flush=True)
            failures += not ok
            if ok:
                (run / "eval_done").write_text(f"{time.time() - start:.1f}\n")
            print(f"{run.name}: {'ok' if ok else 'failed'} in {time.time() - start:.0f} s", flush=True)
        sweep_alive = args.sweep_pid is not None and Path(f"/proc/{args.sweep_pid}").exists()
        if not args.watch or (not pending and not sweep_alive):
            break
        if not pending:
            time.sleep(20)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
