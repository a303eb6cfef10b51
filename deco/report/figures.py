"""The report's figures: convergence (train loss vs step), evaluation bars with 95% CIs, and relevance
of the same probe per projector. Built on `matplotlib.figure.Figure` (no pyplot, no backend switch), so
they save the same from a script, a server or a notebook."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from deco.report.runs import STAGE_ORDER, Run, load_relevance
from deco.report.table import is_eval_metric

# Perceptually uniform: equal steps in relevance look like equal steps in colour.
RELEVANCE_CMAP = "viridis"


def _colors(labels: Iterable[str]) -> dict[str, tuple]:
    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(sorted(set(labels)))}


def plot_convergence(runs: Sequence[Run], path: Path) -> None:
    """Train loss vs step per stage: mean over seeds per projector, band = min..max over seeds."""
    stages = sorted({r.stage for r in runs}, key=lambda s: STAGE_ORDER.get(s, 9))
    colors = _colors(r.label for r in runs)
    fig = Figure(figsize=(5.5 * len(stages), 4))
    axes = fig.subplots(1, len(stages), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        groups: dict[str, list[Run]] = defaultdict(list)
        for run in runs:
            if run.stage == stage:
                groups[run.label].append(run)
        for label in sorted(groups, key=lambda s: (s.split("-")[0], s)):
            curves = [{r["step"]: r["train/loss"] for r in run.records if "train/loss" in r} for run in groups[label]]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            ys = np.array([[c[s] for s in steps] for c in curves])  # seeds x steps
            ax.plot(steps, ys.mean(0), color=colors[label], label=f"{label} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), color=colors[label], alpha=0.2, linewidth=0)
        ax.set_title(f"{stage}: train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("train/loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_accuracy(rows: Sequence[dict], path: Path) -> bool:
    """Grouped bars of each evaluation metric (per benchmark and per family), error bars = 95% CI.
    Returns False (and writes nothing) when no evaluation results exist."""
    rows = [r for r in rows if is_eval_metric(r["metric"]) and not r["metric"].startswith("relevance")
            and not math.isnan(r["mean"])]
    if not rows:
        return False
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: (not m.startswith("family/"), m))
    labels = []
    for r in rows:
        label = f"{r['projector']}-{r['tokens']}" if r["tokens"] is not None else r["projector"]
        if label not in labels:
            labels.append(label)
    colors = _colors(labels)
    cell = {(f"{r['projector']}-{r['tokens']}" if r["tokens"] is not None else r["projector"], r["metric"]): r
            for r in rows}
    # CIDEr is not in [0, 1]: give unbounded metrics their own panel.
    bounded = [m for m in metrics if all(0 <= cell[k]["mean"] <= 1 for k in cell if k[1] == m)]
    panels = [p for p in (bounded, [m for m in metrics if m not in bounded]) if p]
    fig = Figure(figsize=(max(6, 1.3 * len(metrics) * len(labels) / 3), 4))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": [len(p) for p in panels]})
    width = 0.8 / len(labels)
    for ax, panel in zip(axes[0], panels):
        x = np.arange(len(panel))
        for i, label in enumerate(labels):
            means = [cell[(label, m)]["mean"] if (label, m) in cell else np.nan for m in panel]
            cis = [cell[(label, m)]["ci95"] if (label, m) in cell else np.nan for m in panel]
            cis = [0 if math.isnan(c) else c for c in cis]
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, means, width, yerr=cis, capsize=2,
                   color=colors[label], label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([m.replace("shapes_", "").replace("/", "\n") for m in panel], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score (mean over seeds, 95% CI)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Evaluation per benchmark and task family")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _scalar_text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    return str(value)


def _scalar_text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    return str(value)


def map_extent(width: int, height: int, aspect: str = "pad") -> tuple[float, float, float, float]:
    """Where the model's square input lies over a `width` x `height` image, as imshow's extent
    (left, right, bottom, top) in image pixels, so a patch-grid map lands on the pixels it was computed on.

    pad (LLaVA expand2square): the image is centred on a square of side max(w, h), so the map spans
    that square and overhangs the short side; resize: the square is the whole image, stretched;
    crop (CLIP): the centre square of side min(w, h)."""
    if aspect == "pad":
        side = max(width, height)
        left, top = -((side - width) // 2), -((side - height) // 2)
        return left, left + side, top + side, top
    if aspect == "resize":
        return 0, width, height, 0
    if aspect == "crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return left, left + side, top + side, top
    raise ValueError(f"image_aspect={aspect!r} is unknown; choose one of: pad, resize, crop")


def plot_relevance(runs: Sequence[Run], path: Path, method: str = "rgae", probe_image: str | Path | None = None,
                   image_aspect: str | None = None) -> bool:
    """One row per projector (its lowest seed, last stage): R_t2i (patch grid, over the probe image
    when given), R_t2q (per visual token), R_q2i (visual tokens x patches), for the same probe text.
    `image_aspect` (default: the runs' data.image_aspect, else pad) says how the probe was made square,
    so the map is drawn over the pixels it explains. Returns False (and writes nothing) when no
    relevance files exist."""
    chosen: dict[str, Run] = {}
    files: dict[str, Path] = {}
    for run in sorted(runs, key=lambda r: (-STAGE_ORDER.get(r.stage, 9), r.seed if r.seed is not None else 0)):
        found = [p for p in run.relevance if f"-{method}-" in p.name] or run.relevance
        if found and run.label not in chosen:
            chosen[run.label], files[run.label] = run, found[0]
    if not chosen:
        return False
    image = None
    if probe_image is not None:
        from PIL import Image

        if not Path(probe_image).is_file():
            raise FileNotFoundError(f"probe_image={probe_image}: no such file")
        image = np.asarray(Image.open(probe_image).convert("RGB"))
    labels = sorted(chosen, key=lambda s: (s.split("-")[0], -int(s.split("-")[-1]) if s.split("-")[-1].isdigit() else 0))
    fig = Figure(figsize=(12, 3.2 * len(labels)))
    axes = fig.subplots(len(labels), 3, squeeze=False)
    for row, label in zip(axes, labels):
        data = load_relevance(files[label])
        t2i = np.asarray(data["r_t2i"], dtype=float)  # g g
        t2q = np.asarray(data["r_t2q"], dtype=float).reshape(-1)  # q
        q2i = np.asarray(data["r_q2i"], dtype=float)  # q n
        text = _scalar_text(data.get("text", ""))
        if image is not None:
            h, w = image.shape[:2]
            row[0].imshow(image)
            extent = map_extent(w, h, image_aspect or chosen[label].image_aspect)
            row[0].imshow(t2i, cmap=RELEVANCE_CMAP, alpha=0.5, extent=extent, interpolation="bilinear")
            row[0].set_xlim(0, w)
            row[0].set_ylim(h, 0)
        else:
            row[0].imshow(t2i, cmap=RELEVANCE_CMAP)
        row[0].set_title(f"{label}: R_t2i for {text[:40]!r}", fontsize=9)
        row[0].axis("off")
        row[1].bar(np.arange(len(t2q)), t2q, width=1.0)
        row[1].set_title(f"R_t2q ({len(t2q)} visual tokens)", fontsize=9)
        row[1].set_xlabel("visual token")
        row[2].imshow(q2i, aspect="auto", cmap=RELEVANCE_CMAP, interpolation="nearest")
        row[2].set_title("R_q2i (visual tokens x patches)", fontsize=9)
        row[2].set_xlabel("patch")
        row[2].set_ylabel("visual token")
    fig.suptitle(f"Relevance ({method}) of the same probe per projector")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.2 * len(labels))))  # room for the title
    fig.savefig(path, dpi=100)
    return True
