"""The relevance leaderboard from `run.sh`'s outputs: methods x projectors x metrics, mean ± 95 % CI over seeds.

    python experiments/relevance_study/leaderboard.py outputs/relevance_study > leaderboard.md

Reads every `<out>/<run>/A/scores.csv` (shapes, distractor and caption probes with the causal test) and, if
present, `<out>/<run>/B/scores.csv` (perturbation curves). A run is one checkpoint (one seed); its name is
`<projector>-s<seed>` (run.sh's NAME). Each cell is the mean over seeds of the run's mean over probes, ± the
95 % CI half-width over seeds (Student t, n-1 df: `deco.report.stats.mean_ci`, the rule of every deco table;
"n/a" with one seed), with the number of seeds. Tables: the causal test (all probe sets pooled), localisation on
shapes and distractor probes, TAM's Obj-/Func-/F1-IoU on captions, the perturbation AUCs, and the
double-abstraction number: avgpool - Q-Former of `top_query_margin` (R_q2i of the top-3 R_t2q tokens on the
asked object minus on the distractor), the difference of the two projectors' run means for each seed both have.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

from deco.explain.summary import comparison_table, summarize
from deco.report.stats import mean_ci

TEXT = ("probes", "projector", "checkpoint", "method", "task", "phrase", "text")


def read_rows(path: Path, run: str) -> list[dict]:
    """The csv's rows with numbers as floats (empty cells left out) and the run's name and seed added."""
    seed = re.search(r"-s(\d+)$", run)
    rows = []
    for row in csv.DictReader(path.open()):
        out = {k: (v if k in TEXT else float(v)) for k, v in row.items() if v != ""}
        rows.append(
            {**out, "run": run, "family": run[: seed.start()] if seed else run, "seed": seed.group(1) if seed else run}
        )
    return rows


def run_means(rows: list[dict], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(family, method): {seed: the run's mean of metric over its probes}}."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        if metric in r:
            values[(r["family"], r["method"], r["seed"])].append(r[metric])
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for (family, method, seed), vs in values.items():
        out[(family, method)][seed] = sum(vs) / len(vs)
    return out


def cell(values) -> str:
    mean, ci, n = mean_ci(list(values))
    if n == 0:
        return ""
    return f"{mean:.3f} ± {'n/a' if n < 2 else f'{ci:.3f}'} ({n})"


def table(rows: list[dict], metrics: list[str], derived: dict | None = None) -> str:
    """One line per (family, method); `derived`: {name: f(run means of one seed) -> value} columns."""
    means = {m: run_means(rows, m) for m in metrics}
    keys = sorted({k for m in metrics for k in means[m]})
    names = metrics + list(derived or {})
    lines = ["| projector | method | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for key in keys:
        cells = [cell(means[m].get(key, {}).values()) for m in metrics]
        for fn in (derived or {}).values():
            seeds = set.intersection(*(set(means[m].get(key, {})) for m in metrics))
            cells.append(cell(fn({m: means[m][key][s] for m in metrics}) for s in sorted(seeds)))
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_values(rows: list[dict], family: str, method: str, seed: str, metric: str) -> dict[float, float]:
    return {
        r["index"]: r[metric]
        for r in rows
        if r["family"] == family and r["method"] == method and r["seed"] == seed and metric in r
    }


def double_abstraction(rows: list[dict]) -> str:
    """Per method, for each avgpool<N> / qformer<N> pair (the same token count): the difference of the run means
    over the seeds both have (mean ± CI over seeds), and for each seed the paired per-probe difference (mean ± CI
    over probes: the scene cancels out)."""
    rows = [r for r in rows if r["probes"] == "distractors"]
    means = run_means(rows, "top_query_margin")
    families = {f for f, _ in means}
    pairs = [
        (f"avgpool{f[7:]}", f) for f in sorted(families) if f.startswith("qformer") and f"avgpool{f[7:]}" in families
    ]
    if not pairs:
        return "(needs an avgpool and a qformer run with the same token count)"
    lines = []
    for avg, qf in pairs:
        lines += [
            f"top_query_margin({avg}) - top_query_margin({qf}) on the distractor probes\n",
            "| method | over seeds: mean ± 95 % CI (seeds) | per seed: paired over probes, mean ± 95 % CI (probes) |",
            "|---|---|---|",
        ]
        for method in sorted({m for _, m in means}):
            a, b = means.get((avg, method), {}), means.get((qf, method), {})
            seeds = sorted(set(a) & set(b))
            per_seed = []
            for s in seeds:
                va = probe_values(rows, avg, method, s, "top_query_margin")
                vb = probe_values(rows, qf, method, s, "top_query_margin")
                mean, ci, n = mean_ci([va[i] - vb[i] for i in sorted(set(va) & set(vb))])
                per_seed.append(f"s{s}: {mean:+.3f} ± {ci:.3f} ({n})")
            lines.append(f"| {method} | {cell(a[s] - b[s] for s in seeds)} | {'; '.join(per_seed)} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def main(out: Path) -> None:
    a_rows, b_rows = [], []
    for path in sorted(out.glob("*/A/scores.csv")):
        a_rows += read_rows(path, path.parent.parent.name)
    for path in sorted(out.glob("*/B/scores.csv")):
        b_rows += read_rows(path, path.parent.parent.name)
    if not a_rows:
        raise SystemExit(f"{out}: no */A/scores.csv (run experiments/relevance_study/run.sh)")
    runs = sorted({r["run"] for r in a_rows})
    print(f"Runs: {', '.join(runs)}. Cells: mean over seeds ± 95 % CI (Student t) (seeds).\n")
    print("### Causal test: mean-ablate 12.5 % of the visual tokens, top by R_t2q vs random (all probe sets)\n")
    causal = [r for r in a_rows if "causal_drop_top" in r]
    print(
        table(
            causal,
            ["causal_drop_top", "causal_drop_random", "causal_flip_top", "causal_flip_random"],
            {"drop margin (top - random)": lambda m: m["causal_drop_top"] - m["causal_drop_random"]},
        )
    )
    print("\nThe same per run (one seed each), mean ± 95 % CI over its probes:\n")
    per_run = [
        {**r, "probes": "all", "checkpoint": r["run"], "causal_margin": r["causal_drop_top"] - r["causal_drop_random"]}
        for r in causal
    ]
    print(
        comparison_table(
            summarize(
                per_run,
                ("causal_drop_top", "causal_drop_random", "causal_margin", "causal_flip_top", "causal_flip_random"),
            ),
            ["causal_drop_top", "causal_drop_random", "causal_margin", "causal_flip_top", "causal_flip_random"],
        )
    )
    print("\n### Localisation, shapes probes (flat map: energy = box_area)\n")
    print(table([r for r in a_rows if r["probes"] == "shapes"], ["energy", "box_area", "pointing", "top_query_energy"]))
    print("\n### Distractor probes (asked object vs a distractor sharing colour or shape)\n")
    print(
        table(
            [r for r in a_rows if r["probes"] == "distractors"],
            ["energy", "distractor_energy", "top_query_energy", "top_query_margin"],
        )
    )
    captions = [r for r in a_rows if r["probes"] == "captions"]
    if captions:
        print("\n### Captions: TAM's Obj-IoU / Func-IoU (per-token maps; F1-IoU per seed from the two means)\n")
        print(
            table(
                captions,
                ["obj_iou", "func_iou"],
                {"f1_iou": lambda m: 2 * m["obj_iou"] * m["func_iou"] / (m["obj_iou"] + m["func_iou"] or 1.0)},
            )
        )
    if b_rows:
        print("\n### Perturbation curves, shapes probes (deletion MoRF: lower is better; insertion, LeRF: higher)\n")
        print(table(b_rows, ["auc_positive", "auc_insertion", "auc_negative"]))
    print("\n### Double abstraction\n")
    print(double_abstraction(a_rows))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/relevance_study"))
