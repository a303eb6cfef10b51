"""Table and plot of the reduction study from its results.jsonl (run.py calls this; it also runs alone).

    python experiments/reduction_study/report.py <out>/results.jsonl [suffix]   # results<suffix>.md, ...png

One row per method and kept budget: the mean over seeds and its 95 % CI half-width (Student t,
deco.report.stats.mean_ci; none with one seed), n = the seeds that row holds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from deco.report.stats import mean_ci

TASKS = ("existence", "attribute", "grounding")
METRICS = (*TASKS, "mean", "energy")
COSTS = ("prefill_flops", "ttft_ms", "decode_ms_per_token", "kv_cache_bytes")
STYLE = {
    "none": "k",
    "fastv": "tab:red",
    "visionzip": "tab:blue",
    "prumerge_plus": "tab:purple",
    "divprune": "tab:green",
    "pool": "tab:orange",
    "trained avgpool": "tab:brown",
    "trained qformer": "tab:cyan",
}


def label(row: dict) -> str:
    """linear rows: the reducer; a checkpoint trained at its budget: `trained <projector>`, or `fastv on
    <projector>-q<trained tokens>` when FastV cuts it further at inference."""
    if row["projector"] == "linear":
        return row["reduction"]
    if row["reduction"] == "none":
        return f"trained {row['projector']}"
    return f"{row['reduction']} on {row['run'].rsplit('-s', 1)[0]}"


def mean_acc(row: dict) -> float:
    return sum(row[t] for t in TASKS) / len(TASKS)


def aggregate(rows: list[dict]) -> list[dict]:
    """Rows of one (method, kept budget) over seeds -> {metric: (mean, 95 % CI half-width, n)}, costs: means."""
    first: dict[tuple, dict] = {}
    for r in rows:  # a setting evaluated twice (two processes appending to one results.jsonl) counts once
        first.setdefault((r.get("run"), r["reduction"], r["keep"]), r)
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in first.values():
        groups.setdefault((label(r), r["keep"]), []).append(r)
    out = []
    for (name, keep), members in groups.items():
        agg = {"label": name, "keep": keep, "seeds": sorted(r["seed"] for r in members)}
        for metric in METRICS:
            agg[metric] = mean_ci([mean_acc(r) if metric == "mean" else r.get(metric, math.nan) for r in members])
        for cost in COSTS:
            agg[cost] = mean_ci([(r.get("efficiency") or {}).get(cost, math.nan) for r in members])[0]
        out.append(agg)
    return sorted(out, key=lambda a: (a["label"] != "none", " " in a["label"], a["label"], -a["keep"]))


def cell(stat: tuple[float, float, int]) -> str:
    mean, half, _ = stat
    return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def table(rows: list[dict]) -> str:
    head = (
        "| method | kept tokens | seeds | existence | attribute | grounding Acc@0.5 | mean | R-GAE energy in box | "
        "prefill MFLOPs | TTFT ms | decode ms/token | KV cache KiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for a in aggregate(rows):
        lines.append(
            f"| {a['label']} | {a['keep']} | {len(a['seeds'])} | "
            + " | ".join(cell(a[m]) for m in METRICS)
            + f" | {a['prefill_flops'] / 1e6:.1f} | {a['ttft_ms']:.1f} | {a['decode_ms_per_token']:.2f} "
            f"| {a['kv_cache_bytes'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["mean", *TASKS, "energy", "ttft"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    axes = axes.ravel()
    groups: dict[str, list[dict]] = {}
    for a in aggregate(rows):
        groups.setdefault(a["label"], []).append(a)
    ticks = sorted({a["keep"] for a in aggregate(rows) if a["label"] != "none"})
    for ax, panel in zip(axes, panels):
        for name, members in groups.items():
            members = sorted(members, key=lambda a: a["keep"])
            metric = "mean" if panel == "ttft" else panel
            xs = [a["ttft_ms"] if panel == "ttft" else a["keep"] for a in members]
            ys = [a[metric][0] for a in members]
            err = [0.0 if math.isnan(a[metric][1]) else a[metric][1] for a in members]
            if name == "none" and panel != "ttft":
                ax.axhline(ys[0], color=STYLE[name], ls="--", lw=1, label="none (linear, 576 tokens)")
                continue
            trained = name.startswith("trained")
            cut = " on " in name  # FastV cutting a checkpoint trained at its budget: that projector's colour
            base = f"trained {name.split(' on ')[1].split('-')[0]}" if cut else name
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                marker="*" if trained else ("s" if name.endswith("q144") else "^") if cut else "o",
                ms=9 if trained else 5,
                capsize=3,
                color=STYLE.get(base, "grey"),
                ls="" if trained or panel == "ttft" else ":" if cut else "-",
                label=name,
            )
        ax.set_xscale("log")
        if panel != "ttft":
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("time to first token (ms, batch 1)" if panel == "ttft" else "visual tokens the LLM reads")
        ax.set_ylabel({"energy": "R-GAE energy in box (%)"}.get(panel, "accuracy (%)"))
        ax.set_title(
            {
                "mean": "mean of the three tasks",
                "grounding": "grounding Acc@0.5",
                "energy": "relevance in the asked box",
                "ttft": "mean accuracy vs measured prefill",
            }.get(panel, panel)
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("mean and 95 % CI over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(results_path: Path, out_dir: Path, suffix: str = "") -> None:
    rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
    (out_dir / f"results{suffix}.md").write_text(table(rows))
    plot(rows, out_dir / f"accuracy_vs_tokens{suffix}.png")
    print(table(rows))


if __name__ == "__main__":
    write_report(Path(sys.argv[1]), Path(__file__).resolve().parent, *sys.argv[2:3])
