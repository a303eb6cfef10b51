"""Tables across evaluation runs: one row per checkpoint, one column per benchmark (its headline metric).

`joint_table` turns the `metrics.json` summaries of a sweep (`-m ckpt=a,b benchmark=x,y`) into
Markdown and CSV; `checkpoint_label` is the short name a sweep's run dirs and rows use
("outputs/train/run1/checkpoints/last.ckpt" -> "run1-last").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def checkpoint_label(ckpt: str) -> str:
    """A file-name-safe short name of a checkpoint path, directory or hub name."""
    path = Path(str(ckpt).rstrip("/"))
    if path.suffix in (".ckpt", ".pt", ".safetensors", ".bin"):
        # <run>/checkpoints/last.ckpt -> run-last; a bare file -> its stem
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
        name = f"{run}-{path.stem}" if run else path.stem
    else:
        name = path.name or str(ckpt)
    return _UNSAFE.sub("_", name).strip("_") or "ckpt"


def read_summaries(sweep_dir: Path) -> list[dict]:
    """The metrics.json of every run dir directly below a sweep dir (sorted by dir name)."""
    summaries = []
    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "benchmark" in data and "metrics" in data:
            summaries.append({**data, "run_dir": path.parent.name})
    return summaries


def _value(summary: dict) -> str:
    value = summary["metrics"].get(summary.get("headline"))
    return "" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def reduction_label(summary: dict) -> str:
    """"none", or "<reducer> <keep>" with its knobs (e.g. "fastv 64 layer=2") of a run's training-free reduction."""
    red = dict(summary.get("reduction") or {"name": "none"})
    name = red.pop("name", "none")
    if name == "none":
        return "none"
    keep = red.pop("keep", "")
    return " ".join([f"{name} {keep}", *(f"{k}={v}" for k, v in red.items() if v is not None)])


COST_COLUMNS = (("kept tokens", "kept_visual_tokens", "{:d}"), ("prefill GFLOPs", "prefill_flops", "{:.4g}"),
                ("TTFT ms", "ttft_ms", "{:.1f}"), ("decode ms/token", "decode_ms_per_token", "{:.2f}"))


def _cost(summary: dict, key: str, fmt: str) -> str:
    value = (summary.get("efficiency") or {}).get(key)
    if value is None:
        return ""
    return fmt.format(value / 1e9 if key == "prefill_flops" else value)


def joint_table(summaries: Sequence[dict]) -> tuple[str, str]:
    """(markdown, csv) with rows = checkpoint x reduction (in first-seen order), columns = benchmarks, then the
    measured cost of the row's first run that has one (kept tokens, prefill GFLOPs, TTFT, decode ms/token)."""
    benchmarks: list[str] = []
    rows: dict[tuple, dict] = {}
    for s in summaries:
        if s["benchmark"] not in benchmarks:
            benchmarks.append(s["benchmark"])
        label = reduction_label(s)
        row = rows.setdefault((s["ckpt"], label), {"checkpoint": checkpoint_label(s["ckpt"]), "reduction": label,
                                                   "projector": s.get("projector", ""), "ckpt": s["ckpt"]})
        row[s["benchmark"]] = _value(s)
        for title, key, fmt in COST_COLUMNS:
            row[title] = row.get(title) or _cost(s, key, fmt)
    headlines = {s["benchmark"]: s.get("headline", "") for s in summaries}
    costs = [c[0] for c in COST_COLUMNS if any(r.get(c[0]) for r in rows.values())]
    # the reduction column only when some run reduced: plain sweeps keep their table
    lead = ["checkpoint", "projector"] + (["reduction"] if any(r["reduction"] != "none" for r in rows.values()) else [])
    header = lead + [f"{b} ({headlines[b]})" for b in benchmarks] + costs
    body = [[r[c] for c in lead] + [r.get(b, "") for b in benchmarks + costs] for r in rows.values()]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(lead + ["ckpt"] + benchmarks + costs)
    for r in rows.values():
        writer.writerow([r[c] for c in lead] + [r["ckpt"]] + [r.get(b, "") for b in benchmarks + costs])
    return markdown, buf.getvalue()
