"""The two-axis study: training-free reduction of a 576-token checkpoint vs compression trained at the budget.

    python experiments/reduction_study/run.py --seeds 42,1,2 --questions 200 --probes 32 --keeps 192,144,64,16 \\
        --tower-cache ~/.cache/deco/tower_features --out /some/dir

1. Trains, one deco.train subprocess at a time, each run of `--runs` for each seed of `--seeds` (seed-major)
   whose `<out>/<run>/done` is missing (recipe.py: the default recipe of `make train`, `--steps` steps;
   `linear` gets LLaVA's two stages, `--pretrain-steps` of projector alignment first), and lists each finished
   checkpoint in `<out>/CHECKPOINTS.md`. `--reuse` links runs made elsewhere with the same recipe.
2. Right after each training, evaluates it: on a linear checkpoint every reducer (fastv with layer=1, the tiny
   LLM having 2 layers; visionzip, prumerge_plus, divprune, pool) at every kept budget, and no reduction; on
   the others (trained at their budget): no reduction. Each setting answers `--questions` held-out questions of
   shapes existence, attribute and grounding (deco.eval.runner.evaluate_benchmark, as `python -m
   deco.evaluate`), has its cost measured on the first question (deco.eval.efficiency, batch 1), and its R-GAE
   relevance scored on `--probes` held-out scenes (energy in the asked object's box, deco.explain.score, no
   perturbation test).
3. Writes `<out>/results.jsonl` (one line per setting; a rerun skips the settings it holds), and
   `experiments/reduction_study/results.md` + `accuracy_vs_tokens.png` (mean and 95 % CI over seeds).
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


def train(out: Path, run, steps: int, pretrain_steps: int, cache_dir: str | None) -> Path:
    """Each stage of `run` that has no `done` marker yet, one deco.train subprocess at a time."""
    from recipe import train_commands

    for run_dir, overrides in train_commands(run, out, steps, pretrain_steps, cache_dir):
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "done").is_file():
            continue
        print("training:", " ".join(overrides), flush=True)
        with open(f"{run_dir}.log", "w") as log:
            subprocess.run(
                [sys.executable, "-m", "deco.train", *overrides],
                cwd=ROOT,
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        (run_dir / "done").touch()
    return out / run.name / "checkpoints" / "last.ckpt"


def settings(projector: str, keeps: list[int], tokens: int) -> list[tuple[str, int | None]]:
    """A linear (token-wise) checkpoint: no reduction and every reducer at every budget (pool at squares). A
    checkpoint trained at its budget (patch-mixing: the pre-LLM reducers refuse it): no reduction, and FastV
    (in the LLM, so it applies to any projector) at each budget below the trained one."""
    rows = [("none", None)]
    if projector != "linear":
        return rows + [("fastv", keep) for keep in keeps if keep < tokens]
    for keep in keeps:
        rows += [(name, keep) for name in REDUCERS if name != "pool" or int(keep**0.5) ** 2 == keep]
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
        result = evaluate_benchmark(
            model,
            loaded.tokenizer,
            loaded.image_processor,
            bench,
            batch_size=16,
            template=template,
            image_aspect=aspect,
            device=torch.device("cpu"),
            progress=False,
        )
        row[task] = result.metrics[result.headline]
        row[f"{task}_seconds"] = round(result.seconds, 2)
        if task == "existence":
            sample = bench.samples()[0]
            item = PromptDataset(
                [sample], [bench.prompt(sample)], loaded.tokenizer, loaded.image_processor, template, aspect
            )[0]
            row["efficiency"] = measure_efficiency(model, item["input_ids"], item["pixel_values"], repeats=3)
    if probes:
        found = shapes_probes(
            loaded.tokenizer, loaded.image_processor, seed=1000, num_samples=probes, template=template
        )
        scored = [
            r
            for r in score_model(model, loaded.tokenizer, found, ["rgae"], name, perturbation=False)
            if r["method"] == "rgae"
        ]
        row["energy"] = round(100 * sum(r["energy"] for r in scored) / len(scored), 2)
        row["box_area"] = round(100 * sum(r["box_area"] for r in scored) / len(scored), 2)
    model.set_reduction(None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "multirun" / "reduction_study"))
    parser.add_argument("--seeds", default="42")
    parser.add_argument(
        "--runs",
        default="qformer-q64,linear-q576,avgpool-q144,qformer-q144,avgpool-q64",
        help="<projector>-q<tokens> to train, in this order for each seed (seed-major)",
    )
    parser.add_argument("--steps", type=int, default=800, help="finetune steps (the default recipe: 800)")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=200,
        help="linear / mlp2x_gelu: LLaVA stage 1 first (experiment=shapes_pretrain); 0: none",
    )
    parser.add_argument("--tower-cache", default=None, help="tower_features.cache_dir of every training")
    parser.add_argument("--reuse", default="", help="<run>=<finished run dir>,...: linked, not trained")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--keeps", default="144,64,16")
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
    from recipe import TWO_STAGE, checkpoint_row, parse_reuse, parse_runs, record_checkpoint

    runs = parse_runs(args.runs, [int(s) for s in args.seeds.split(",")])
    for name, target in parse_reuse(args.reuse).items():
        if not (out / name).exists():
            (out / name).symlink_to(target.resolve(), target_is_directory=True)
    results_path = out / "results.jsonl"
    done = (
        {(r["run"], r["reduction"], r["keep"]) for r in map(json.loads, results_path.open())}
        if results_path.exists()
        else set()
    )
    for spec in runs:
        if args.no_train and not (out / spec.name / "done").is_file():
            print(f"not trained yet, skipped: {out / spec.name}", flush=True)
            continue
        ckpt = train(out, spec, args.steps, args.pretrain_steps, args.tower_cache)
        row = checkpoint_row(spec, ckpt.resolve(), args.steps, args.pretrain_steps)
        record_checkpoint(out / "CHECKPOINTS.md", row)
        projector, seed = spec.projector, spec.seed
        loaded = load_model(str(ckpt))
        set_attention(loaded.model, "sdpa")
        loaded.model.eval()
        trained = (loaded.config.get("stage") or {}).get("template")
        template = trained if trained and trained != "plain" else "vicuna_v1"
        run = spec.name
        for name, keep in settings(projector, keeps, spec.tokens):
            key_keep = keep if keep is not None else loaded.model.projector.num_tokens()
            if (run, name, key_keep) in done:
                continue
            start = time.perf_counter()
            row = {
                "run": run,
                "projector": projector,
                "seed": seed,
                "steps": args.steps,
                "pretrain_steps": args.pretrain_steps if projector in TWO_STAGE else 0,
                **evaluate_setting(loaded, template, name, keep, args.questions, args.probes),
            }
            row["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps({k: v for k, v in row.items() if k != "efficiency"}), flush=True)
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
    from report import write_report  # experiments/reduction_study/report.py

    write_report(results_path, HERE)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
