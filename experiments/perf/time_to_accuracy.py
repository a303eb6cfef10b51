"""Figures 8 (the study's tower-feature cache) and 10 (time to accuracy) of `make bench`.

    python -m experiments.perf.time_to_accuracy                 # both figures (~3 min of CPU)
    python -m experiments.perf.time_to_accuracy --smoke         # tiny runs, seconds of work (the code paths)
    python -m experiments.perf.time_to_accuracy record RUN_DIR... --recipe NAME   # score checkpoints -> curves

Cost of a step. `deco.train` runs three times as a subprocess, the default recipe (avgpool-64, batch 32, shapes
world) for `steps` steps with `experiments.perf.cpu_probe.CpuProbe` recording wall and CPU time (main process
and DataLoader workers) after every step: (a) the recipe of commit 4356654 as it was, its own code and configs
(`git archive`; the tower runs in the training step, logits over every position), (b) today's default
(`tower_features.enabled=auto`: on, on CPU) with an empty cache (the first run of a study: the tower runs in the
workers and fills the cache), (c) the same with the cache (b) left (every later run: projectors, seeds). The
mean cost per step after the first 5 steps is compared, CPU time = main + workers.

Figure 8: the arena's per-run CPU cost with the cache / without: (b + (R - 1) c) / (R a) for R runs over the
same scenes (R = 26: the issue's count of recomputations), and c / a alone. Goal <= 0.6.

Figure 10: time to accuracy = (steps until a checkpoint first scores existence >= 90, attribute >= 90 and
grounding Acc@0.5 >= 50 on the held-out benchmarks) x (cost of a step), per seed, for the old and the new
default; ratio new / old of the mean over seeds, wall and CPU. Goal <= 0.5 (CPU), at equal or better final
accuracy (the new default's mean final score at least the old one's minus the old one's 95 % CI over seeds). The curves are not rerun here (an 800-step run with checkpoint scoring is tens of CPU minutes): the
old default's come from its recorded study (experiments/projector_study/zoo_results_v3.md, avgpool-q64: steps
to 50 % grounding 600 / 700 / 600, existence and attribute above 90 by then on every seed) and the new
default's from `record` (CURVES below, written by it). The step costs are measured now.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from experiments.perf.cpu_probe import per_step

ROOT = Path(__file__).resolve().parents[2]
CURVES = Path(__file__).with_name("time_to_accuracy.json")
THRESHOLDS = {"existence": 90.0, "attribute": 90.0, "grounding": 50.0}
BENCHMARKS = {"existence": "shapes_existence", "attribute": "shapes_attribute", "grounding": "shapes_grounding"}
ARENA_RUNS = 26
CACHE_GOAL, TTA_GOAL = 0.6, 0.5
# The recipe of commit 4356654 (`make train` as typed), 3 seeds: zoo_results_v3.md "steps to 50 % grounding
# Acc@0.5" (first checkpoint of 100 at or above; existence / attribute were >= 90 on every seed at those steps:
# means 98.7 / 97.5 at 600, 98.7 / 97.8 at 700) and its final scores (mean of seeds 42, 1, 2 at step 800).
OLD = {
    "steps_to_accuracy": [600, 700, 600],
    "final": {"existence": 99.0, "attribute": 98.0, "grounding": 54.8},
    # "equal" final accuracy: within the old default's own 95 % CI over its 3 seeds (same table)
    "final_ci": {"existence": 0.0, "attribute": 1.2, "grounding": 6.8},
    "source": "experiments/projector_study/zoo_results_v3.md (avgpool-q64, seeds 42 / 1 / 2)",
}


OLD_COMMIT = "4356654"


def old_tree(tmp: Path) -> Path:
    """The code and configs of OLD_COMMIT (`git archive` of this repository), with today's CpuProbe copied in:
    the old default runs as it was, not with today's step (a speed-up of today's step helps both recipes)."""
    dest = tmp / f"deco-{OLD_COMMIT}"
    if not dest.exists():
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", OLD_COMMIT], capture_output=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as error:
            raise RuntimeError(
                f"time to accuracy needs commit {OLD_COMMIT} of the git history for the old "
                f"recipe's step (a full clone): {error}"
            ) from None
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        shutil.copy(Path(__file__).with_name("cpu_probe.py"), dest / "experiments" / "perf" / "cpu_probe.py")
    return dest


def train_cost(out: Path, name: str, steps: int, extra: list[str], smoke: bool, root: Path = ROOT) -> dict:
    """Run deco.train (of the checkout at `root`) for `steps` steps with the probe; per-step wall / CPU after
    the first steps."""
    probe = out / f"{name}.probe.json"
    size = ["model=tiny_scratch", "data.batch_size=4", "data.val.num_samples=4"] if smoke else []
    cmd = [
        sys.executable,
        "-m",
        "deco.train",
        f"trainer.max_steps={steps}",
        f"data.train.num_samples={steps * (4 if smoke else 32)}",
        "logger=none",
        "threads=1",
        f"hydra.run.dir={out / name}",
        *size,
        "+callbacks.cpu_probe._target_=experiments.perf.cpu_probe.CpuProbe",
        f"+callbacks.cpu_probe.path={probe}",
        *extra,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode or not probe.exists():
        raise RuntimeError(f"deco.train ({name}) failed with exit {proc.returncode}: {proc.stderr[-3000:]}")
    return per_step(json.loads(probe.read_text())["records"], skip=2 if smoke else 5)


def step_costs(smoke: bool, steps: int, rounds: int) -> dict:
    """Median per-step costs of the three ways, interleaved over `rounds` rounds (each with a fresh cache)."""
    out: dict[str, list[dict]] = {"old": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            cache = Path(tmp) / f"cache{r}"
            on = ["tower_features.enabled=auto", f"tower_features.cache_dir={cache}"]  # today's default, own cache
            out["old"].append(train_cost(Path(tmp), f"old{r}", steps, [], smoke, root=old_tree(Path(tmp))))
            out["cold"].append(train_cost(Path(tmp), f"cold{r}", steps, on, smoke))
            out["warm"].append(train_cost(Path(tmp), f"warm{r}", steps, on, smoke))
    return {k: {m: statistics.median(x[m] for x in v) for m in v[0]} | {"rounds": v} for k, v in out.items()}


def reached(curve: dict[str, dict[str, float]]) -> int | None:
    """First checkpoint step whose scores meet every threshold (None: never)."""
    for step in sorted(curve, key=int):
        if all(curve[step].get(task, -1) >= goal for task, goal in THRESHOLDS.items()):
            return int(step)
    return None


def run(smoke: bool = False) -> dict:
    steps, rounds = (6, 1) if smoke else (30, 1)
    load = os.getloadavg()
    return figures(step_costs(smoke, steps, rounds), load, steps)


def figures(costs: dict, load, steps: int) -> dict:
    """Figures 8 and 10 from measured step costs and the recorded curves (CURVES)."""
    old, cold, warm = costs["old"], costs["cold"], costs["warm"]
    arena = (cold["cpu_s"] + (ARENA_RUNS - 1) * warm["cpu_s"]) / (ARENA_RUNS * old["cpu_s"])
    cache = {
        "figure": "tower-feature cache",
        "load_average": load,
        "steps": steps,
        "costs": costs,
        "warm_over_old_cpu": warm["cpu_s"] / old["cpu_s"],
        "cold_over_old_cpu": cold["cpu_s"] / old["cpu_s"],
        "arena_runs": ARENA_RUNS,
        "arena_over_old_cpu": arena,
        "goal": f"<= {CACHE_GOAL}",
        "meets_goal": arena <= CACHE_GOAL,
    }
    tta: dict = {"figure": "time to accuracy", "load_average": load, "thresholds": THRESHOLDS, "old": OLD}
    recorded = json.loads(CURVES.read_text()) if CURVES.exists() else {}
    new = recorded.get("new_default")
    if not new:
        tta["skipped"] = f"no recorded curves of the new default in {CURVES.name} (run `record`)"
    else:
        new_steps = [reached(c) for c in new["curves"].values()]
        tta["new"] = {
            "seeds": list(new["curves"]),
            "steps_to_accuracy": new_steps,
            "final": new.get("final"),
            "recipe": new.get("recipe"),
        }
        if None in new_steps:
            tta["error"] = "a seed of the new default never reached the thresholds"
        else:
            old_steps, n_steps = statistics.mean(OLD["steps_to_accuracy"]), statistics.mean(new_steps)
            for kind, way in (("warm", warm), ("cold", cold)):  # a study's later runs / its first run
                tta[kind] = {
                    "cpu_ratio": n_steps * way["cpu_s"] / (old_steps * old["cpu_s"]),
                    "wall_ratio": n_steps * way["wall_s"] / (old_steps * old["wall_s"]),
                    "old_cpu_s": old_steps * old["cpu_s"],
                    "new_cpu_s": n_steps * way["cpu_s"],
                    "old_wall_s": old_steps * old["wall_s"],
                    "new_wall_s": n_steps * way["wall_s"],
                }
            tta["goal"] = f"<= {TTA_GOAL} (CPU, equal or better final accuracy)"
            final_ok = all(new["final"][t] >= OLD["final"][t] - OLD["final_ci"][t] for t in THRESHOLDS)
            tta["final_accuracy_ok"] = final_ok
            tta["meets_goal"] = tta["warm"]["cpu_ratio"] <= TTA_GOAL and final_ok
    return {"cache": cache, "tta": tta}


def score(run_dir: Path, steps: list[int]) -> dict[str, dict[str, float]]:
    """Existence / attribute / grounding (%) of the run's curve checkpoints (deco.evaluate, 200 questions)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    curve = {}
    for step in steps:
        ckpt = run_dir / "checkpoints" / "curve" / f"step{step}.ckpt"
        if not ckpt.exists():
            ckpt = run_dir / "checkpoints" / "last.ckpt"
        row = {}
        for task, bench in BENCHMARKS.items():
            out = run_dir / "curve" / f"step{step}" / bench
            if not (out / "metrics.json").exists():
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "deco.evaluate",
                        f"ckpt={ckpt}",
                        f"benchmark={bench}",
                        "threads=1",
                        "progress=false",
                        f"hydra.run.dir={out}",
                    ],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    capture_output=True,
                )
            metrics = json.loads((out / "metrics.json").read_text())
            row[task] = float(metrics["metrics"]["accuracy"])  # % (grounding: Acc@0.5)
        curve[str(step)] = row
        print(run_dir.name, step, row, flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="bench", choices=["bench", "record", "refigure"])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--recipe", default="new_default")
    parser.add_argument("--steps", type=int, nargs="+", default=[400, 500, 600, 700, 800])
    args = parser.parse_args()
    if args.command == "record":
        recorded = json.loads(CURVES.read_text()) if CURVES.exists() else {}
        entry = recorded.setdefault(args.recipe, {"curves": {}})
        for run_dir in args.runs:
            entry["curves"][run_dir.name] = score(run_dir, args.steps)
        last = str(max(int(k) for c in entry["curves"].values() for k in c))  # the runs' last checkpoint
        finals = {name: c[last] for name, c in entry["curves"].items() if last in c}
        entry["final"] = {t: statistics.mean(f[t] for f in finals.values()) for t in THRESHOLDS}
        entry["final_step"], entry["final_seeds"] = int(last), sorted(finals)
        entry["recorded"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        CURVES.write_text(json.dumps(recorded, indent=1) + "\n")
        return
    if args.command == "refigure":  # figures 8 and 10 again from a results.json's costs, with today's curves
        for results in args.runs:
            data = json.loads(results.read_text())
            old = data["figures"]["time_to_accuracy"]
            data["figures"]["time_to_accuracy"] = figures(
                old["cache"]["costs"], old["cache"]["load_average"], old["cache"]["steps"]
            )
            results.write_text(json.dumps(data, indent=2, default=str) + "\n")
            from experiments.perf.run import table

            print(table(data))
        return
    print(json.dumps(run(smoke=args.smoke), indent=1, default=str))


if __name__ == "__main__":
    main()
