"""experiments/relevance_study/leaderboard.py without scoring: run means per seed, mean ± 95 % CI over seeds, and
the double-abstraction difference per seed, by hand."""

import csv

import pytest

from experiments.relevance_study.leaderboard import double_abstraction, read_rows, run_means, table

FIELDS = [
    "probes",
    "projector",
    "checkpoint",
    "method",
    "index",
    "causal_drop_top",
    "causal_drop_random",
    "top_query_margin",
]


def write_run(root, name, rows):
    path = root / name / "A" / "scores.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return read_rows(path, name)


def row(projector, index, top, rand, margin):
    return {
        "probes": "distractors",
        "projector": projector,
        "checkpoint": "c",
        "method": "rgae",
        "index": index,
        "causal_drop_top": top,
        "causal_drop_random": rand,
        "top_query_margin": margin,
    }


def test_cells_are_means_over_seeds_of_each_runs_probe_mean(tmp_path):
    rows = write_run(tmp_path, "avgpool64-s42", [row("a", 0, 0.2, 0.0, 0.5), row("a", 1, 0.4, 0.2, 0.3)])
    rows += write_run(tmp_path, "avgpool64-s1", [row("a", 0, 0.5, 0.1, 0.1), row("a", 1, 0.7, 0.1, 0.1)])
    rows += write_run(tmp_path, "qformer64-s42", [row("q", 0, 0.1, 0.0, 0.2), row("q", 1, 0.1, 0.0, 0.2)])
    rows += write_run(tmp_path, "avgpool144-s42", [row("b", 0, 0.1, 0.0, 0.9)])  # no qformer144: not paired
    assert {r["seed"] for r in rows} == {"42", "1"}
    assert {r["family"] for r in rows} == {"avgpool64", "qformer64", "avgpool144"}
    assert run_means(rows, "causal_drop_top")[("avgpool64", "rgae")] == pytest.approx({"42": 0.3, "1": 0.6})
    text = table(rows, ["causal_drop_top"], {"margin": lambda m: m["causal_drop_top"]})
    # seeds 0.3 and 0.6: mean 0.45, sd 0.2121, t(0.975, 1) = 12.706 -> 12.706 * 0.2121 / sqrt(2) = 1.906
    assert "| avgpool64 | rgae | 0.450 ± 1.906 (2) | 0.450 ± 1.906 (2) |" in text
    assert "| qformer64 | rgae | 0.100 ± n/a (1) | 0.100 ± n/a (1) |" in text
    # margins: avgpool s42 0.4, s1 0.1; qformer s42 0.2 -> only seed 42 is shared: 0.4 - 0.2
    # per probe in seed 42: 0.5 - 0.2 and 0.3 - 0.2 -> mean 0.2, sd 0.1414, CI 12.706 * 0.1414 / sqrt(2) = 1.271
    text = double_abstraction(rows)
    assert "| rgae | 0.200 ± n/a (1) | s42: +0.200 ± 1.271 (2) |" in text
    assert "top_query_margin(avgpool64) - top_query_margin(qformer64)" in text and "avgpool144" not in text
