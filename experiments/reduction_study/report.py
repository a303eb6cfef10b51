"""Table and plot of the reduction study from its results.jsonl (run.py calls this; it also runs alone).

    python experiments/reduction_study/report.py multirun/reduction_study/results.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TASKS = ("existence", "attribute", "grounding")
STYLE = {"none": "k", "fastv": "tab:red", "visionzip": "tab:blue", "prumerge_plus": "tab:purple",
         "divprune": "tab:green", "pool": "tab:orange", "trained avgpool": "tab:brown"}


def label(row: dict) -> str:
    return "trained avgpool" if row["projector"] != "linear" else row["reduction"]


def mean_acc(row: dict) -> float:
    return sum(row[t] for t in TASKS) / len(TASKS)


def table(rows: list[dict]) -> str:
    head = ("| method | kept tokens | existence | attribute | grounding Acc@0.5 | mean | R-GAE energy in box | "
            "prefill MFLOPs | TTFT ms | decode ms/token | KV cache KiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = sorted(rows, key=lambda r: (label(r) != "none", label(r) == "trained avgpool", label(r), -r["keep"]))
    for r in order:
        e = r.get("efficiency") or {}
        lines.append(
            f"| {label(r)} "
            f"| {r['keep']} | {r['existence']:.1f} | {r['attribute']:.1f} | {r['grounding']:.1f} | {mean_acc(r):.1f} "
            f"| {r.get('energy', float('nan')):.1f} | {e.get('prefill_flops', 0) / 1e6:.1f} | {e.get('ttft_ms', 0):.1f} "
            f"| {e.get('decode_ms_per_token', 0):.2f} | {e.get('kv_cache_bytes', 0) / 1024:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*TASKS, "energy", "ttft"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    for ax, panel in zip(axes, panels):
        for name, members in groups.items():
            members = sorted(members, key=lambda r: r["keep"])
            if panel == "ttft":
                xs = [r["efficiency"]["ttft_ms"] for r in members]
                ys = [mean_acc(r) for r in members]
            else:
                xs = [r["keep"] for r in members]
                ys = [r.get(panel, float("nan")) for r in members]
            if name == "none" and panel != "ttft":
                ax.axhline(ys[0], color=STYLE[name], ls="--", lw=1, label="none (576 tokens)")
                continue
            marker = "*" if name == "trained avgpool" else "o"
            ax.plot(xs, ys, marker=marker, ms=9 if marker == "*" else 5, color=STYLE.get(name, "grey"),
                    ls="" if name == "trained avgpool" or panel == "ttft" else "-", label=name)
        ax.set_xscale("log")
        if panel != "ttft":
            ticks = sorted({r["keep"] for r in rows if r["reduction"] != "none"})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel("time to first token (ms, batch 1)" if panel == "ttft" else "visual tokens the LLM reads")
        ax.set_ylabel({"energy": "R-GAE energy in box (%)", "ttft": "mean accuracy (%)"}.get(panel, "accuracy (%)"))
        ax.set_title({"grounding": "grounding Acc@0.5", "energy": "relevance in the asked box",
                      "ttft": "accuracy vs measured prefill"}.get(panel, panel))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(results_path: Path, out_dir: Path) -> None:
    rows = [json.loads(line) for line in Path(results_path).read_text().splitlines() if line.strip()]
    (out_dir / "results.md").write_text(table(rows))
    plot(rows, out_dir / "accuracy_vs_tokens.png")
    print(table(rows))


if __name__ == "__main__":
    write_report(Path(sys.argv[1]), Path(__file__).resolve().parent)
