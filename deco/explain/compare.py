"""The DeCo paper's comparison figure: one row per projector, for the same image and text.

Columns: R_t2i over the image | R_t2q per target token (token x query) | R_t2q on the sqrt(q) x sqrt(q)
query grid (tokens that keep the patch layout; learned queries, which have none, as bars ranked by
relevance) | R_q2i (where the most text-relevant queries look). Maps from projectors with different
token counts are put on one scale per column by dividing each by its mean (1 = uniform relevance), so
"how peaked" reads the same in every row: linear colour scales shared per column for R_t2i and R_t2q,
a shared log scale for R_q2i (deco.explain.scale: the same scales as the single-checkpoint files and the app) (a pooling query covers a few patches, a linear one a single patch, a
Q-Former query all of them, so their peaks differ by orders of magnitude). Flat maps are marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from PIL import Image

from deco.explain.render import (
    CMAP, figure_to_image, grey_base, heat_rgb, pick_queries, relative_to_uniform,
    render_q2i, upsample, warn_if_flat,
)
from deco.explain.scale import LINEAR_LABEL, LOG_LABEL, MIN_LOG_VMAX, linear_vmax


@dataclass
class Row:
    """One projector's maps for the shared input: a label (projector tag) and the tensors (as exported)."""

    label: str
    r_t2i: torch.Tensor  # g g
    r_t2q: torch.Tensor  # q
    r_q2i: torch.Tensor  # q n
    r_t2q_tokens: torch.Tensor  # k q
    image: Image.Image  # S x S, what the model saw
    tokens: list[str] | None = None
    spatial: bool = True  # the tokens keep the patch layout (False: Q-Former / resampler queries)

    @classmethod
    def from_tensors(cls, label: str, data: dict, image: Image.Image) -> "Row":
        """From `relevance-*.pt/.npz` contents (deco.explain.export.load_relevance) or `tensor_dict`."""
        t = {k: torch.as_tensor(data[k]).float() for k in ("r_t2i", "r_t2q", "r_q2i")}
        tokens = data.get("r_t2q_tokens")
        tokens = torch.as_tensor(tokens).float() if tokens is not None else t["r_t2q"][None]
        return cls(label, t["r_t2i"], t["r_t2q"].reshape(-1), t["r_q2i"], tokens.reshape(-1, t["r_t2q"].numel()),
                   image, list(data.get("target_tokens") or []) or None, bool(data.get("spatial_queries", True)))


def _square(vec: torch.Tensor) -> torch.Tensor | None:
    side = math.isqrt(vec.numel())
    return vec.reshape(side, side) if side * side == vec.numel() else None


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def render_comparison(rows: list[Row], text: str, question: str | None = None, method: str = "rgae",
                      max_queries: int = 16, cmap: str = CMAP) -> Image.Image:
    """The comparison figure as a PIL image (see the module docstring)."""
    if not rows:
        raise ValueError("render_comparison needs at least one row")
    t2i = [relative_to_uniform(r.r_t2i) for r in rows]
    t2q_tok = [relative_to_uniform(r.r_t2q_tokens) for r in rows]
    t2q = [relative_to_uniform(r.r_t2q) for r in rows]
    picked = [pick_queries(r.r_q2i.shape[0], r.r_t2q, max_queries) for r in rows]
    q2i_peak = max(float(relative_to_uniform(r.r_q2i[q]).max()) for r, p in zip(rows, picked) for q in p)
    vmax = {"t2i": linear_vmax(*(r.r_t2i for r in rows)), "tok": linear_vmax(*(r.r_t2q_tokens for r in rows)),
            "t2q": linear_vmax(*(r.r_t2q for r in rows)), "q2i": max(q2i_peak, MIN_LOG_VMAX)}

    fig = Figure(figsize=(17, 3.4 * len(rows) + 1.0), layout="constrained")  # room for colour bars and labels
    axes = fig.subplots(len(rows), 4, squeeze=False, gridspec_kw={"width_ratios": [1, 1.3, 1, 1.1]})
    for i, (row, ax) in enumerate(zip(rows, axes)):
        size = row.image.size[0]
        heat = heat_rgb((upsample(t2i[i], size) / vmax["t2i"]).clamp(0, 1), cmap).astype(np.float32)
        ax[0].imshow(Image.fromarray((0.45 * grey_base(row.image, size) + 0.55 * heat).round().astype(np.uint8)))
        ax[0].set_ylabel(row.label, fontsize=11, fontweight="bold")
        ax[0].set_title(f"R_t2i ({row.r_t2i.shape[0]}x{row.r_t2i.shape[1]} patches)", fontsize=9)

        ax[1].imshow(t2q_tok[i].numpy(), aspect="auto", cmap=cmap, vmin=0, vmax=vmax["tok"], interpolation="nearest")
        ax[1].set_title(f"R_t2q per target token ({row.r_t2q.numel()} queries)", fontsize=9)
        ax[1].set_xlabel("query", fontsize=8)
        if row.tokens and len(row.tokens) == row.r_t2q_tokens.shape[0]:
            ax[1].set_yticks(range(len(row.tokens)), [repr(t)[1:-1] for t in row.tokens], fontsize=7)

        grid = _square(t2q[i]) if row.spatial else None
        if not row.spatial:
            order = torch.argsort(-t2q[i], stable=True)
            ax[2].bar(np.arange(order.numel()), t2q[i][order].numpy(), width=1.0)
            ax[2].set_ylim(0, vmax["t2q"])
            ax[2].set_title("R_t2q, queries ranked (no spatial order)", fontsize=9)
            ax[2].set_xlabel(f"rank (first: q{int(order[0])})", fontsize=8)
        elif grid is not None:
            ax[2].imshow(grid.numpy(), cmap=cmap, vmin=0, vmax=vmax["t2q"], interpolation="nearest")
            ax[2].set_title(f"R_t2q on the {grid.shape[0]}x{grid.shape[1]} query grid", fontsize=9)
        else:
            ax[2].bar(np.arange(t2q[i].numel()), t2q[i].numpy(), width=1.0)
            ax[2].set_ylim(0, vmax["t2q"])
            ax[2].set_title("R_t2q per query", fontsize=9)
        q2i = render_q2i(row.r_q2i, row.image, order=row.r_t2q, max_queries=max_queries, cell=72, title=None,
                         cmap=cmap, log_vmax=vmax["q2i"])
        ax[3].imshow(q2i)
        ax[3].set_title(f"R_q2i: top {len(picked[i])} queries by R_t2q (index bottom-left)", fontsize=9)
        for a in (ax[0], ax[2], ax[3]):
            _off(a)
        for a, m, what in ((ax[0], row.r_t2i, "R_t2i"), (ax[1], row.r_t2q_tokens, "R_t2q")):
            note = warn_if_flat(m, f"{row.label} {what}")
            if note:
                a.text(0.5, 0.5, note, transform=a.transAxes, ha="center", va="center", fontsize=8, color="white",
                       bbox={"facecolor": "crimson", "alpha": 0.85, "boxstyle": "round"})
    scales = [("t2i", Normalize(0, vmax["t2i"])), ("tok", Normalize(0, vmax["tok"])),
              ("t2q", Normalize(0, vmax["t2q"])), ("q2i", LogNorm(1, vmax["q2i"]))]
    for col, (_, norm) in enumerate(scales):
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[:, col]), orientation="horizontal",
                           shrink=0.9, aspect=30)
        bar.set_label(LOG_LABEL if col == 3 else LINEAR_LABEL, fontsize=8)
    heading = f"{method}: {text!r}" + (f"   Q: {question!r}" if question else "")
    fig.suptitle(f"Relevance per projector, same image and text. {heading}", fontsize=12)
    return figure_to_image(fig)



def square_view(image: Image.Image, aspect: str = "pad", size: int = 336,
                fill: tuple[int, int, int] = (122, 116, 104)) -> Image.Image:
    """The square picture a model sees of `image` (pad: centred on `fill`, CLIP's mean colour; resize:
    stretched; crop: the centre square), for drawing maps read back from files."""
    from deco.data.image import expand_to_square

    image = image.convert("RGB")
    if aspect == "pad":
        image = expand_to_square(image, fill)
    elif aspect == "crop":
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.BICUBIC)


def distinct_labels(labels: list[str], ckpts: list[str]) -> list[str]:
    """Row labels that differ: a label shared by several rows gets its checkpoint's label appended
    (then a number, when even those agree)."""
    from deco.explain.export import ckpt_label

    out = [f"{label}-{ckpt_label(ckpt)}" if labels.count(label) > 1 else label for label, ckpt in zip(labels, ckpts)]
    return [f"{label}-{out[:i].count(label) + 1}" if out.count(label) > 1 else label for i, label in enumerate(out)]


def compare_job_dirs(job_dirs: list, out_dir) -> list:
    """The comparison figure of a `deco.explain -m ckpt=a,b,c ...` sweep: one row per job dir, from each
    job's `index.jsonl`, tensor files and `.hydra/config.yaml` (image, text, question); one figure per
    method and text shared by two or more jobs. Returns the written paths."""
    import json
    from pathlib import Path

    from omegaconf import OmegaConf

    from deco.explain.export import load_relevance, slugify
    from deco.explain.render import png_bytes
    from deco.utils.io import atomic_write_bytes

    groups: dict[tuple, list] = {}
    for job in map(Path, job_dirs):
        index, config = job / "index.jsonl", job / ".hydra" / "config.yaml"
        if not index.is_file() or not config.is_file():
            continue
        cfg = OmegaConf.load(config)
        if cfg.get("image") is None or cfg.get("data") is not None:
            continue  # dataset mode: no one shared input
        aspect = cfg.get("image_aspect") or "pad"
        for record in map(json.loads, index.read_text().splitlines()):
            data = load_relevance(job / record["files"]["tensors"])
            image = square_view(Image.open(cfg.image), aspect)
            key = (record["method"], record["text"], cfg.get("question"))
            row = Row.from_tensors(record.get("tag", record["projector"]), data, image)
            groups.setdefault(key, []).append((row, str(record.get("ckpt") or cfg.get("ckpt") or job.name)))
    written = []
    for (method, text, question), entries in groups.items():
        if len(entries) < 2:
            continue
        rows = [row for row, _ in entries]
        # each job named itself: two checkpoints of one projector need their checkpoint labels
        for row, label in zip(rows, distinct_labels([r.label for r in rows], [c for _, c in entries])):
            row.label = label
        path = Path(out_dir) / f"comparison-{method}-{slugify(text)}.png"
        atomic_write_bytes(path, png_bytes(render_comparison(rows, text, question, method)))
        written.append(path)
    return written
