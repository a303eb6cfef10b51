"""Tables of the zoo projector study (run_zoo_study.sh): accuracy per task family, paired differences,
cost, and relevance box scores, as Markdown on stdout.

    python experiments/projector_study/zoo_table.py multirun/zoo_study
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy import stats

BENCHMARKS = {"shapes_existence": "existence", "shapes_attribute": "attribute",
              "shapes_grounding": "grounding Acc@0.5", "shapes_caption": "caption CIDEr"}


def mean_ci(values: list[float], fmt: str = ".1f") -> str:
    values = [v for v in values if v == v]  # NaN: a run not evaluated (yet) on that benchmark
    if not values:
        return "-"
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:{fmt}}"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{m:{fmt}} ± {half:{fmt}}"


def read_runs(root: Path) -> dict[tuple[str, int], dict]:
    runs = {}
    for run in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r".+-q\d+-s\d+", p.name)):
        name, seed = run.name.rsplit("-s", 1)
        scores = {}
        for bench, label in BENCHMARKS.items():
            path = run / "eval" / bench / "metrics.json"
            if path.is_file():
                data = json.loads(path.read_text())
                scores[label] = float(data["metrics"][data["headline"]])
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
            if (run / "metrics.jsonl").is_file() else []
        step_times = [r["train/step_time_s"] for r in steps if "train/step_time_s" in r]
        params = _trainable_projector_params(run)
        relevance = json.loads((run / "score" / "summary.json").read_text()) \
            if (run / "score" / "summary.json").is_file() else []
        relevance = [r for r in relevance if r.get("probes", "shapes") == "shapes"]  # distractors: deco.explain
        runs[(name, int(seed))] = {"scores": scores, "s_per_step": statistics.median(step_times) if step_times else None,
                                   "params": params, "relevance": relevance, "curve": read_curve(run)}
    return runs


def read_curve(run: Path) -> dict[str, dict[int, float]]:
    """{task: {step: score}} from the intermediate checkpoints' evaluations (run_zoo_study.sh CURVE=N)."""
    curve: dict[str, dict[int, float]] = defaultdict(dict)
    for path in run.glob("curve/step*/*/metrics.json"):
        data = json.loads(path.read_text())
        curve[BENCHMARKS[path.parent.name]][int(path.parent.parent.name.removeprefix("step"))] = \
            float(data["metrics"][data["headline"]])
    return curve


def steps_to(curve: dict[int, float], final_step: int, final: float | None, target: float = 80.0) -> int | None:
    """First evaluated step at or above `target` (the final score counts at `final_step`); None if never."""
    points = sorted({**curve, **({final_step: final} if final is not None else {})}.items())
    return next((step for step, score in points if score >= target), None)


CURVE_TARGETS = {"attribute": 80.0, "existence": 80.0, "grounding Acc@0.5": 50.0}


def print_curves(by_name: dict[str, list[dict]], final_step: int) -> None:
    if not any(r["curve"] for rs in by_name.values() for r in rs):
        return
    print(f"\nConvergence: steps to 80 % (grounding: 50 %; first evaluated step at or above; '>{final_step}': never),"
          " and the curve:\n")
    tasks = [t for t in CURVE_TARGETS if any(t in r["curve"] for rs in by_name.values() for r in rs)]
    print("| projector | seeds | " + " | ".join(f"steps to {CURVE_TARGETS[t]:.0f} % {t}" for t in tasks) + " | "
          + " | ".join(f"{t} at steps" for t in tasks) + " |")
    print("|---|---|" + "---|---|" * len(tasks))
    for name, rs in by_name.items():
        rs = [{**r, "curve": {t: {**c, **({final_step: r["scores"][t]} if t in r["scores"] else {})}
                              for t, c in r["curve"].items()}} for r in rs if r["curve"]]  # the final score ends each curve
        if not rs:
            continue
        cells = []
        for task in tasks:
            reached = [steps_to(r["curve"].get(task, {}), final_step, r["scores"].get(task), CURVE_TARGETS[task]) for r in rs]
            cells.append(", ".join(str(x) if x is not None else f">{final_step}" for x in reached))
        for task in tasks:
            steps = sorted({st for r in rs for st in r["curve"].get(task, {})})
            cells.append("; ".join(f"{st}: {mean_ci([r['curve'][task][st] for r in rs if st in r['curve'].get(task, {})])}"
                                   for st in steps))
        print(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")


def _trainable_projector_params(run: Path) -> int | None:
    for hp in run.rglob("hparams.yaml"):
        match = re.search(r"params/projector_trainable: (\d+)", hp.read_text())
        if match:
            return int(match.group(1))
    return None


def main(root: Path, final_step: int = 400) -> None:
    runs = read_runs(root)
    by_name: dict[str, list[dict]] = defaultdict(list)
    for (name, _), run in sorted(runs.items()):
        by_name[name].append(run)
    labels = list(BENCHMARKS.values())
    print("| projector | seeds | " + " | ".join(labels) + " | projector params | s/step |")
    print("|---|---|" + "---|" * (len(labels) + 2))
    for name, rs in by_name.items():
        rs = [r for r in rs if r["scores"]]  # runs still training have no scores yet
        if not rs:
            continue
        cells = [mean_ci([r["scores"][lab] for r in rs if lab in r["scores"]]) for lab in labels]
        sps = [r["s_per_step"] for r in rs if r["s_per_step"]]
        step_time = f"{statistics.fmean(sps):.2f}" if sps else "-"
        print(f"| {name} | {len(rs)} | " + " | ".join(cells) + f" | {rs[0]['params'] or '-'} | {step_time} |")
    print_curves(by_name, final_step)
    print("\nPaired differences avgpool - qformer (same seed, same token count):\n")
    print("| tokens | seeds | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for q in sorted({int(n.rsplit("-q", 1)[1]) for n, _ in runs}):
        seeds = sorted(s for (n, s) in runs if n == f"avgpool-q{q}" and (f"qformer-q{q}", s) in runs)
        if not seeds:
            continue
        diffs = [mean_ci([runs[(f"avgpool-q{q}", s)]["scores"].get(lab, float("nan")) -
                          runs[(f"qformer-q{q}", s)]["scores"].get(lab, float("nan")) for s in seeds]) for lab in labels]
        print(f"| {q} | {len(seeds)} | " + " | ".join(diffs) + " |")
    print("\nRelevance on 32 held-out scenes (energy in the asked object's box / pointing game; random = a uniform-noise map):\n")
    print("| projector | seed | " + " | ".join(f"{m} energy / pointing" for m in ("rgae", "rawattn", "gradcam", "random"))
          + " | R_q2i of the top-3 R_t2q tokens: energy in box |")
    print("|---|---|---|---|---|---|---|")
    for (name, seed), run in sorted(runs.items()):
        rows = {r["method"]: r for r in run["relevance"]}
        if rows:
            cells = [f"{rows[m]['energy']:.3f} / {rows[m]['pointing']:.2f}" if m in rows else "-"
                     for m in ("rgae", "rawattn", "gradcam", "random")]
            top = rows.get("rgae", {}).get("top_query_energy")
            cells.append(f"{top:.3f}" if top is not None else "-")
            print(f"| {name} | {seed} | " + " | ".join(cells) + " |")
    print_relevance_means(runs)
    print_perturbation(runs)
    print_causal(runs)


def relevance_by_name(runs: dict[tuple[str, int], dict]) -> dict[str, list[dict]]:
    """{projector: [{method: score row} per scored seed]}."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for (name, _), run in sorted(runs.items()):
        if run["relevance"]:
            by_name[name].append({r["method"]: r for r in run["relevance"]})
    return by_name


def print_relevance_means(runs: dict[tuple[str, int], dict]) -> None:
    """The relevance rows above, as mean ± 95 % CI over each projector's seeds."""
    by_name = {name: [r for r in rows if "rgae" in r] for name, rows in relevance_by_name(runs).items()}
    by_name = {name: rows for name, rows in by_name.items() if rows}
    if not by_name:
        return
    columns = (("rgae", "energy"), ("rgae", "pointing"), ("rgae", "top_query_energy"), ("rawattn", "energy"),
               ("gradcam", "energy"), ("random", "energy"))
    print("\nRelevance, mean over seeds:\n")
    print("| projector | seeds | R-GAE energy | R-GAE pointing | R_q2i of the top-3 tokens: energy | rawattn energy | "
          "gradcam energy | random energy |")
    print("|---|---|" + "---|" * len(columns))
    for name, rows in by_name.items():
        cells = [mean_ci([r[m][k] for r in rows if m in r and r[m].get(k) is not None], ".3f") for m, k in columns]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


def print_perturbation(runs: dict[tuple[str, int], dict]) -> None:
    """Chefer's perturbation test per method: AUC of the answer's log-probability as patches are removed, most
    relevant first (positive: lower is better) and least relevant first (negative: higher is better)."""
    methods = ("rgae", "rawattn", "gradcam", "random")
    by_name = relevance_by_name(runs)
    if not by_name:
        return
    print("\nPerturbation AUC, positive / negative (mean over seeds; positive lower is better, negative higher):\n")
    print("| projector | seeds | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for name, rows in by_name.items():
        cells = []
        for m in methods:
            pos = [r[m]["auc_positive"] for r in rows if m in r and "auc_positive" in r[m]]
            neg = [r[m]["auc_negative"] for r in rows if m in r and "auc_negative" in r[m]]
            cells.append(f"{statistics.fmean(pos):.3f} / {statistics.fmean(neg):.3f}" if pos and neg else "-")
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


def print_causal(runs: dict[tuple[str, int], dict]) -> None:
    """The causal test (deco.explain.causal): mean-ablate the 12.5 % of visual tokens R-GAE's R_t2q ranks highest,
    or as many random ones; the answer's log-probability drop and how often its greedy tokens change."""
    by_name = {name: [r["rgae"] for r in rows if "causal_drop_top" in r.get("rgae", {})]
               for name, rows in relevance_by_name(runs).items()}
    by_name = {name: rows for name, rows in by_name.items() if rows}
    if not by_name:
        return
    keys = ("causal_drop_top", "causal_drop_random", "causal_flip_top", "causal_flip_random")
    print("\nCausal test, R-GAE's top 12.5 % of visual tokens vs as many random ones, mean-ablated (mean ± 95 % CI "
          "over seeds):\n")
    print("| projector | seeds | log-prob drop: top | random | answer changed: top | random |")
    print("|---|---|---|---|---|---|")
    for name, rows in by_name.items():
        print(f"| {name} | {len(rows)} | " + " | ".join(mean_ci([r[k] for r in rows], ".3f") for k in keys) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 400)
