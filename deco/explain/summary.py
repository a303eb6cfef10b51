"""Tables of relevance scores: mean ± 95% CI per (probe set, projector, checkpoint, method), and paired contrasts.

Every interval is Student t with n-1 degrees of freedom (`deco.report.stats.mean_ci`), the one rule of
deco's tables. Rows come from `deco.explain.score.score_model`; rows without a `checkpoint` or `probes`
key (older callers) group under "" and "shapes". `paired_difference` compares two checkpoints (or two
methods) on the same probes: the mean of per-probe differences, so scene difficulty cancels out; the
double-abstraction number is `paired_difference(rows, "top_query_margin", avgpool, qformer)` on the
distractor probes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

# Metrics summarised by default, in table order (a metric a row lacks is left out of its mean).
METRICS = (
    "energy",
    "box_area",
    "pointing",
    "top_query_energy",
    "distractor_energy",
    "top_query_distractor",
    "top_query_margin",
    "auc_positive",
    "auc_negative",
    "auc_insertion",
    "log_prob",
    "causal_drop_top",
    "causal_drop_random",
    "causal_flip_top",
    "causal_flip_random",
    "obj_iou",
    "func_iou",
)
TABLE_METRICS = (
    "energy",
    "box_area",
    "pointing",
    "top_query_energy",
    "distractor_energy",
    "top_query_margin",
    "auc_positive",
    "auc_insertion",
    "auc_negative",
    "obj_iou",
    "func_iou",
    "f1_iou",
)


def _key(row: dict) -> tuple[str, str, str, str]:
    return row.get("probes", "shapes"), row["projector"], row.get("checkpoint", ""), row["method"]


def summarize(rows: Sequence[dict], metrics: Sequence[str] = METRICS) -> list[dict]:
    """Mean and 95% CI half-width (`{metric}_ci95`, nan for one value) of each metric per group."""
    from deco.report.stats import mean_ci

    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[_key(row)].append(row)
    out = []
    for (probes, tag, checkpoint, method), members in groups.items():
        entry = {"probes": probes, "projector": tag, "checkpoint": checkpoint, "method": method, "n": len(members)}
        for metric in metrics:
            values = [float(m[metric]) for m in members if metric in m]
            if values:
                entry[metric], entry[f"{metric}_ci95"], _ = mean_ci(values)
        if "obj_iou" in entry and "func_iou" in entry:  # TAM's F1-IoU: harmonic mean of the two means (no CI)
            o, f = entry["obj_iou"], entry["func_iou"]
            entry["f1_iou"], entry["f1_iou_ci95"] = (2 * o * f / (o + f) if o + f > 0 else 0.0), float("nan")
        out.append(entry)
    return out


def comparison_table(summary: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """Markdown table: one row per group, the metrics as columns (mean ± 95% CI)."""
    metrics = [m for m in (metrics or TABLE_METRICS) if any(m in s for s in summary)]
    head = "| probes | projector | checkpoint | method | n | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (5 + len(metrics))]
    for s in sorted(
        summary, key=lambda s: (s.get("probes", "shapes"), s["projector"], s.get("checkpoint", ""), s["method"])
    ):
        cells = [f"{s[m]:.3f} ± {s[m + '_ci95']:.3f}" if m in s else "" for m in metrics]
        lines.append(
            f"| {s.get('probes', 'shapes')} | {s['projector']} | {s.get('checkpoint', '')} | {s['method']} | "
            f"{s['n']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def paired_difference(
    rows: Sequence[dict], metric: str, tag_a: str, tag_b: str, method: str = "rgae", probes: str = "distractors"
) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) of metric(a) - metric(b) over the probes both projectors were scored on."""
    from deco.report.stats import mean_ci

    values: dict[str, dict[int, float]] = {tag_a: {}, tag_b: {}}
    for row in rows:
        if (
            row["projector"] in values
            and row["method"] == method
            and row.get("probes", "shapes") == probes
            and metric in row
        ):
            values[row["projector"]][row["index"]] = float(row[metric])
    shared = sorted(set(values[tag_a]) & set(values[tag_b]))
    if not shared:
        raise ValueError(f"no {probes} probe has {metric} for both {tag_a} and {tag_b} ({method})")
    return mean_ci([values[tag_a][i] - values[tag_b][i] for i in shared])
