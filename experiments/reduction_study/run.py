"""The two-axis study: training-free reduction of a 576-token checkpoint vs pooling trained at the budget.

    python experiments/reduction_study/run.py                       # train what is missing, evaluate, table, plot
    python experiments/reduction_study/run.py --steps 200 --questions 100 --keeps 144,64,16 --probes 16

1. Trains (if `<out>/<run>/checkpoints/last.ckpt` is missing) the default recipe of `make train` for
   `linear` (576 tokens) and `avgpool` at each trained budget, `--steps` steps, each seed of `--seeds`.
2. On each linear checkpoint: every reducer (fastv with layer=1, the tiny LLM having 2 layers; visionzip,
   prumerge_plus, divprune, pool) at every kept budget, and no reduction; on each avgpool checkpoint: no
   reduction. Each setting answers `--questions` held-out questions of shapes existence, attribute and
   grounding (deco.eval.runner.evaluate_benchmark, as `python -m deco.evaluate`), has its cost measured on the
   first question (deco.eval.efficiency, batch 1), and its R-GAE relevance scored on `--probes` held-out scenes
   (energy in the asked object's box, deco.explain.score, no perturbation test).
3. Writes `<out>/results.jsonl` (one line per setting; a rerun skips the settings it holds), and
   `experiments/reduction_study/results.md` + `accuracy_vs_tokens.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TASKS = ("existence", "attribute", "grounding")
REDUCERS = {"fastv": {"layer": 1}, "visionzip": {}, "prumerge_plus": {}, "divprune": {}, "pool": {}}


def train(out: Path, projector: str, tokens: int, seed: int, steps: int) -> Path:
    run = out / f"{projector}-q{tokens}-s{seed}"
    ckpt = run / "checkpoints" / "last.ckpt"
    if ckpt.is_file() and (run / "done").is_file():
        return ckpt
    cmd = [sys.executable, "-m", "deco.train", f"projector={projector}", f"query_num={tokens}", f"seed={seed}",
           f"trainer.max_steps={steps}", f"data.train.num_samples={steps * 32}", "logger=csv", "threads=1",
           f"hydra.run.dir={run}"]
    print("training:", " ".join(cmd[1:]), flush=True)
    with open(f"{run}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    (run / "done").touch()
    return ckpt


def settings(projector: str, keeps: list[int]) -> list[tuple[str, int | None]]:
    if projector != "linear":
        return [("none", None)]
    rows = [("none", None)]
    for keep in keeps:
        rows += [(name, keep) for name in REDUCERS if name != "pool" or int(keep ** 0.5) ** 2 == keep]
    return rows


def evaluate_setting(loaded, template: str, name: str, keep: int | None, questions: int, probes: int) -> dict:
    import torch

    from deco.eval.benchmarks import ShapesBenchmark
    from deco.eval.efficiency import measure_efficiency
    from deco.eval.runner import PromptDataset, evaluate_benchmark
    from deco.explain.score import shapes_probes, score_model
    from deco.models.reduction import build_reducer

    model = loaded.model
    model.set_reduction(build_reducer(name, keep=keep, **REDUCERS.get(name, {})))
    row = {"reduction": name, "keep": keep if keep is not None else model.projector.num_tokens()}
    aspect = loaded.config.get("image_aspect", "pad")
    for task in TASKS:
        bench = ShapesBenchmark(task, num_samples=questions, max_new_tokens=32 if task == "grounding" else 8)
        result = evaluate_benchmark(model, loaded.tokenizer, loaded.image_processor, bench, batch_size=16,
                                    template=template, image_aspect=aspect, device=torch.device("cpu"), progress=False)
        row[task] = result.metrics[result.headline]
        row[f"{task}_seconds"] = round(result.seconds, 2)
        if task == "existence":
            sample = bench.samples()[0]
            item = PromptDataset([sample], [bench.prompt(sample)], loaded.tokenizer, loaded.image_processor,
                                 template, aspect)[0]
            row["efficiency"] = measure_efficiency(model, item["input_ids"], item["pixel_values"], repeats=3)
    if probes:
        found = shapes_probes(loaded.tokenizer, loaded.image_processor, seed=1000, num_samples=probes,
                              template=template)
        scored = [r for r in score_model(model, loaded.tokenizer, found, ["rgae"], name, perturbation=False)
                  if r["method"] == "rgae"]
        row["energy"] = round(100 * sum(r["energy"] for r in scored) / len(scored), 2)
        row["box_area"] = round(100 * sum(r["box_area"] for r in scored) / len(scored), 2)
    model.set_reduction(None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "multirun" / "reduction_study"))
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--keeps", default="144,64,16")
    parser.add_argument("--trained", default="64,144", help="avgpool budgets trained at the budget")
    parser.add_argument("--no-train", action="store_true", help="evaluate only the runs already trained")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from deco.models.attention import set_attention
    from deco.models.loading import load_model

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keeps = [int(k) for k in args.keeps.split(",")]
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs.append(("linear", 576, seed))
        runs += [("avgpool", int(q), seed) for q in args.trained.split(",")]
    results_path = out / "results.jsonl"
    done = {(r["run"], r["reduction"], r["keep"]) for r in map(json.loads, results_path.open())} \
        if results_path.exists() else set()
    for projector, tokens, seed in runs:
        run_dir = out / f"{projector}-q{tokens}-s{seed}"
        if args.no_train and not (run_dir / "done").is_file():
            print(f"not trained yet, skipped: {run_dir}", flush=True)
            continue
        ckpt = train(out, projector, tokens, seed, args.steps)
        loaded = load_model(str(ckpt))
        set_attention(loaded.model, "sdpa")
        loaded.model.eval()
        trained = (loaded.config.get("stage") or {}).get("template")
        template = trained if trained and trained != "plain" else "vicuna_v1"
        run = ckpt.parent.parent.name
        for name, keep in settings(projector, keeps):
            key_keep = keep if keep is not None else loaded.model.projector.num_tokens()
            if (run, name, key_keep) in done:
                continue
            start = time.perf_counter()
            row = {"run": run, "projector": projector, "seed": seed, "steps": args.steps,
                   **evaluate_setting(loaded, template, name, keep, args.questions, args.probes)}
            row["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps({k: v for k, v in row.items() if k != "efficiency"}), flush=True)
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
    from report import write_report  # experiments/reduction_study/report.py

    write_report(results_path, HERE)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
