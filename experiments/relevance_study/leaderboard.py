"""The relevance leaderboard from `run.sh`'s outputs: methods x projectors x metrics (mean ± 95 % CI, Student t).

    python experiments/relevance_study/leaderboard.py outputs/relevance_study > leaderboard.md

Reads every `<out>/<run>/{A,B}/scores.csv` (A: shapes + distractor probes with the causal test; B: shapes
probes with the perturbation curves), prints four Markdown tables: localisation on the shapes probes (A),
the distractor probes (A), the causal test (A, both probe sets pooled) and the perturbation AUCs (B); then
the double-abstraction number: the paired difference avgpool - Q-Former of `top_query_margin` (R_q2i of the
top-3 R_t2q tokens on the asked object minus on the distractor) on the distractor probes, for each method.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from deco.explain.summary import comparison_table, paired_difference, summarize

NUMERIC = ("energy", "box_area", "pointing", "top_query_energy", "distractor_energy", "top_query_distractor",
           "top_query_margin", "auc_positive", "auc_negative", "auc_insertion", "causal_drop_top",
           "causal_drop_random", "causal_flip_top", "causal_flip_random", "log_prob", "index")


def read_rows(path: Path) -> list[dict]:
    rows = []
    for row in csv.DictReader(path.open()):
        rows.append({k: (float(v) if k in NUMERIC and v != "" else v) for k, v in row.items() if v != ""})
    return rows


def main(out: Path) -> None:
    a_rows, b_rows = [], []
    for path in sorted(out.glob("*/A/scores.csv")):
        a_rows += read_rows(path)
    for path in sorted(out.glob("*/B/scores.csv")):
        b_rows += read_rows(path)
    if not a_rows and not b_rows:
        raise SystemExit(f"{out}: no */A/scores.csv or */B/scores.csv (run experiments/relevance_study/run.sh)")
    print("### Localisation, shapes probes\n")
    print(comparison_table(summarize([r for r in a_rows if r["probes"] == "shapes"]),
                           ["energy", "box_area", "pointing", "top_query_energy"]))
    print("\n### Localisation, distractor probes\n")
    print(comparison_table(summarize([r for r in a_rows if r["probes"] == "distractors"]),
                           ["energy", "distractor_energy", "pointing", "top_query_energy", "top_query_margin"]))
    print("\n### Causal test: mean-ablate 12.5 % of the visual tokens, top by R_t2q vs random (both probe sets)\n")
    pooled = [{**r, "probes": "all"} for r in a_rows if "causal_drop_top" in r]
    for r in pooled:
        r["causal_margin"] = r["causal_drop_top"] - r["causal_drop_random"]
    print(comparison_table(summarize(pooled, ("causal_drop_top", "causal_drop_random", "causal_margin",
                                              "causal_flip_top", "causal_flip_random")),
                           ["causal_drop_top", "causal_drop_random", "causal_margin", "causal_flip_top",
                            "causal_flip_random"]))
    if b_rows:
        print("\n### Perturbation curves, shapes probes (deletion MoRF: lower is better; insertion, LeRF: higher)\n")
        print(comparison_table(summarize(b_rows), ["auc_positive", "auc_insertion", "auc_negative"]))
    tags = sorted({r["projector"] for r in a_rows})
    avg = [t for t in tags if t.startswith("avgpool")]
    qf = [t for t in tags if t.startswith("qformer")]
    if avg and qf:
        print(f"\n### Double abstraction: top_query_margin({avg[0]}) - top_query_margin({qf[0]}), distractor probes\n")
        print("| method | mean difference ± 95 % CI | n |\n|---|---|---|")
        for method in sorted({r["method"] for r in a_rows if "top_query_margin" in r}):
            mean, ci, n = paired_difference(a_rows, "top_query_margin", avg[0], qf[0], method)
            print(f"| {method} | {mean:.3f} ± {ci:.3f} | {n} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/relevance_study"))
