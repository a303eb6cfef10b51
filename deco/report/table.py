"""The comparison table: one row per (stage, projector, visual tokens) and metric, mean ± 95% CI over
seeds (a single seed's rate: over the benchmark's questions); written as markdown (`summary.md`) and long-format CSV (`summary.csv`, read back by `read_csv`)."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from deco.report.runs import STAGE_ORDER, Run
from deco.report.stats import binomial_ci, mean_ci

# Column order of the table; anything else (per-benchmark metrics) follows in name order.
LEADING = ["visual_tokens", "params_projector", "params_trainable", "steps", "step_time_s", "tokens_per_s",
           "train_loss_final", "val_loss"]


def _group_key(group: tuple[str, str, int | None]):
    stage, projector, tokens = group
    return STAGE_ORDER.get(stage, 9), stage, -(tokens or 0), projector


def summarize(runs: Sequence[Run]) -> list[dict]:
    """Long-format rows: stage, projector, tokens, metric, mean, ci95, n, values (per seed)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    rows = []
    for group in sorted(groups, key=_group_key):
        members = sorted(groups[group], key=lambda r: (r.seed is None, r.seed))
        metrics = sorted({m for r in members for m in r.scalars},
                         key=lambda m: (LEADING.index(m) if m in LEADING else len(LEADING), m))
        for metric in metrics:
            values = [r.scalars.get(metric, math.nan) for r in members]
            mean, ci, n = mean_ci(values)
            if n == 1 and metric in members[0].questions:  # one seed: the CI over the benchmark's questions
                ci = binomial_ci(mean, members[0].questions[metric])
            rows.append({
                "stage": group[0], "projector": group[1], "tokens": group[2], "metric": metric,
                "mean": mean, "ci95": ci, "n": n, "seeds": [r.seed for r in members], "values": values,
            })
    return rows


def _fmt(mean: float, ci: float, metric: str) -> str:
    if math.isnan(mean):
        return "-"
    if metric.startswith("params") or metric in ("visual_tokens", "steps"):
        text = f"{mean:,.0f}"
        return text if math.isnan(ci) or ci == 0 else f"{text} ± {ci:,.0f}"
    digits = 2 if abs(mean) >= 100 else 3
    return f"{mean:.{digits}f}" if math.isnan(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def is_eval_metric(metric: str) -> bool:
    """Evaluation / relevance metrics are named `<benchmark or family>/<metric>`; training ones are not."""
    return "/" in metric


def markdown_table(rows: Sequence[dict], evaluation: bool | None = None) -> str:
    """One line per (stage, projector, tokens), one column per metric: `mean ± ci95`. `evaluation`:
    True keeps only evaluation metrics (and groups that have any), False only training metrics."""
    if evaluation is not None:
        rows = [r for r in rows if is_eval_metric(r["metric"]) == evaluation]
    metrics = []
    for row in rows:
        if row["metric"] not in metrics:
            metrics.append(row["metric"])
    by_group: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_group[(row["stage"], row["projector"], row["tokens"])][row["metric"]] = row
    lines = ["| stage | projector | seeds | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for group, cells in by_group.items():
        n = max(c["n"] for c in cells.values())
        label = f"{group[1]}-{group[2]}" if group[2] is not None else group[1]
        values = [_fmt(cells[m]["mean"], cells[m]["ci95"], m) if m in cells else "-" for m in metrics]
        lines.append(f"| {group[0]} | {label} | {n} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["stage", "projector", "tokens", "metric", "mean", "ci95", "n", "seeds", "values"])
    for r in rows:
        writer.writerow([r["stage"], r["projector"], "" if r["tokens"] is None else r["tokens"], r["metric"],
                         repr(r["mean"]), repr(r["ci95"]), r["n"], " ".join(map(str, r["seeds"])),
                         " ".join(repr(v) for v in r["values"])])
    path.write_text(buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    """Read `summary.csv` back (for notebooks and comparisons across sweeps)."""
    rows = []
    with Path(path).open() as f:
        for r in csv.DictReader(f):
            rows.append({
                "stage": r["stage"], "projector": r["projector"], "tokens": int(r["tokens"]) if r["tokens"] else None,
                "metric": r["metric"], "mean": float(r["mean"]), "ci95": float(r["ci95"]), "n": int(r["n"]),
                "seeds": r["seeds"].split(), "values": [float(v) for v in r["values"].split()],
            })
    return rows
