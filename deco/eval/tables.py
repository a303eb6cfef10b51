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


def joint_table(summaries: Sequence[dict]) -> tuple[str, str]:
    """(markdown, csv) with rows = checkpoints (in first-seen order), columns = benchmarks."""
    benchmarks: list[str] = []
    rows: dict[str, dict] = {}
    for s in summaries:
        if s["benchmark"] not in benchmarks:
            benchmarks.append(s["benchmark"])
        row = rows.setdefault(s["ckpt"], {"checkpoint": checkpoint_label(s["ckpt"]),
                                          "projector": s.get("projector", ""), "ckpt": s["ckpt"]})
        row[s["benchmark"]] = _value(s)
    headlines = {s["benchmark"]: s.get("headline", "") for s in summaries}
    header = ["checkpoint", "projector"] + [f"{b} ({headlines[b]})" for b in benchmarks]
    body = [[r["checkpoint"], r["projector"]] + [r.get(b, "") for b in benchmarks] for r in rows.values()]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["checkpoint", "projector", "ckpt"] + benchmarks)
    for r in rows.values():
        writer.writerow([r["checkpoint"], r["projector"], r["ckpt"]] + [r.get(b, "") for b in benchmarks])
    return markdown, buf.getvalue()
