"""Pictures of relevance maps, as in the DeCo paper's R-GAE tool.

* `render_t2i`: the image beside the R_t2i heatmap (grid upsampled bilinearly to the image size) blended
  over a grey copy of it, the question in the title.
* `render_t2q`: R_t2q over the query tokens: a bar per query, a target-token x query heatmap when
  several target tokens exist, and a sqrt(q) x sqrt(q) grid when the tokens keep the patch layout
  (`spatial`: pooling, convolutions) and q is a square; learned queries (Q-Former, resampler) have no
  layout, so they get a ranked strip instead (queries sorted by relevance, each labelled with its index).
* `render_q2i`: one small heatmap per query token over a faint thumbnail of the image, showing where each
  query looks (at most `max_queries` shown, the most text-relevant first), under a title, each cell
  labelled with its query index.

Every picture uses the one scale of `deco.explain.scale` (relevance / mean, 1 = uniform; linear for R_t2i
and R_t2q, log for R_q2i), given on a labelled colour bar; `overlay_with_bar` is the app's picture of one map.

The colour map is perceptually uniform (viridis: equal steps in relevance look like equal steps in
colour, and it does not clash with the shapes' own reds and blues as jet does) over a grey image. A flat
map (every value equal, e.g. Grad-CAM on a model that ignores the image) is said so on the picture and
logged, instead of being drawn as a confident colour. Figures are `matplotlib.figure.Figure`s (no pyplot,
no backend switch), so the same code renders in a notebook and in a headless job. All return PIL
images; `png_bytes` encodes one.
"""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch.nn import functional as F

from deco.explain.scale import (
    LINEAR_LABEL, LOG_LABEL, linear_scaled, linear_vmax, log_scaled, log_vmax_of_rows, relative_to_uniform,
)

log = logging.getLogger(__name__)
CMAP = "viridis"
FLAT_NOTE = "flat map: every value is {value:.3g}, nothing to show"


def is_flat(rel: torch.Tensor) -> bool:
    """True when every value is the same (up to float noise): the map carries no location."""
    rel = rel.detach().float()
    lo, hi = float(rel.min()), float(rel.max())
    return hi - lo <= 1e-6 * max(abs(hi), abs(lo)) or hi == lo


def warn_if_flat(rel: torch.Tensor, what: str) -> str | None:
    """Log a warning and return the note to print on the figure when `rel` is flat, else None."""
    if not is_flat(rel):
        return None
    note = FLAT_NOTE.format(value=float(rel.detach().float().reshape(-1)[0]))
    log.warning("%s: %s", what, note)
    return note


def normalize_map(rel: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] (float); a flat map becomes zeros."""
    rel = rel.detach().float().cpu()
    lo, hi = rel.min(), rel.max()
    if float(hi - lo) <= 0:
        return torch.zeros_like(rel)
    return (rel - lo) / (hi - lo)


def upsample(rel: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """g x g -> size x size."""
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(rel.detach().float().cpu()[None, None], size=(size, size), mode=mode, **kwargs)[0, 0]


def heat_rgb(rel01: torch.Tensor, cmap: str = CMAP) -> np.ndarray:
    """[0, 1] map (h w) -> h w 3 uint8 in the colour map."""
    rgba = colormaps[cmap](np.clip(rel01.numpy(), 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def grey_base(image: Image.Image, size: int, faint: float = 0.0) -> np.ndarray:
    """The image in grey (so the heat's colours are the only colours), lightened towards white by `faint`."""
    grey = image.convert("L").resize((size, size), Image.BICUBIC).convert("RGB")
    base = np.asarray(grey, dtype=np.float32)
    return (1 - faint) * base + faint * 255.0


def overlay(image: Image.Image, rel: torch.Tensor, alpha: float = 0.5, size: int | None = None,
            cmap: str = CMAP, faint: float = 0.0, vmax: float | None = None) -> Image.Image:
    """Blend the map `rel` (g g) over a grey `image`, both resized to `size` (default image side), on the
    linear scale relevance / mean from 0 to `vmax` (default: `linear_vmax(rel)`)."""
    size = size or image.size[0]
    base = grey_base(image, size, faint)
    scaled = linear_scaled(rel, linear_vmax(rel) if vmax is None else vmax)
    heat = heat_rgb(upsample(scaled, size), cmap).astype(np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * heat).round().astype(np.uint8))


def overlay_with_bar(image: Image.Image, rel: torch.Tensor, size: int = 336, log_scale: bool = False,
                     cmap: str = CMAP) -> Image.Image:
    """`overlay` with its colour bar and scale written under it (the app's pictures); `log_scale`: R_q2i's log
    scale from 1 to the map's peak (relative to its mean) instead of the linear one."""
    if log_scale:
        vmax = log_vmax_of_rows(rel.reshape(1, -1))
        heat = heat_rgb(upsample(log_scaled(rel, vmax), size), cmap).astype(np.float32)
        picture = Image.fromarray((0.5 * grey_base(image, size) + 0.5 * heat).round().astype(np.uint8))
        text = f"1 .. {vmax:.1f}: {LOG_LABEL}"
    else:
        vmax = linear_vmax(rel)
        picture, text = overlay(image, rel, size=size, cmap=cmap, vmax=vmax), f"0 .. {vmax:.1f}: {LINEAR_LABEL}"
    canvas = Image.new("RGB", (size, size + 30), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    _colour_bar(canvas, draw, (4, size + 4), size - 8, cmap, text=None)
    draw.text((4, size + 16), text, fill=(0, 0, 0), font=_font(10))
    return canvas


def figure_to_image(fig: Figure, dpi: int = 100) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="white",
            wrap=True, bbox={"facecolor": "crimson", "alpha": 0.85, "boxstyle": "round"})


def render_t2i(image: Image.Image, r_t2i: torch.Tensor, title: str = "", question: str | None = None,
               cmap: str = CMAP) -> Image.Image:
    """Image | R_t2i overlay, with a colour bar (relevance / mean); the question in the title."""
    return figure_to_image(t2i_figure(image, r_t2i, title, question, cmap))


def t2i_figure(image: Image.Image, r_t2i: torch.Tensor, title: str = "", question: str | None = None,
               cmap: str = CMAP) -> Figure:
    """The figure `render_t2i` draws."""
    fig = Figure(figsize=(8, 4.3))
    axes = fig.subplots(1, 2)
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title("image")
    vmax = linear_vmax(r_t2i)
    axes[1].imshow(overlay(image, r_t2i, cmap=cmap, vmax=vmax))
    axes[1].set_title(f"R_t2i ({r_t2i.shape[0]}x{r_t2i.shape[1]} patches)")
    note = warn_if_flat(r_t2i, f"R_t2i {title}".strip())
    if note:
        _note(axes[1], note)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(ScalarMappable(cmap=cmap, norm=Normalize(0, vmax)), ax=axes[1], fraction=0.046, pad=0.04,
                 label=LINEAR_LABEL)
    heading = "\n".join(t for t in (title, f"Q: {question}" if question else "") if t)
    if heading:
        fig.suptitle(heading, fontsize=10)
    return fig


def render_t2q(r_t2q: torch.Tensor, r_t2q_tokens: torch.Tensor | None = None, tokens: list[str] | None = None,
               title: str = "", cmap: str = CMAP, spatial: bool = True) -> Image.Image:
    """R_t2q as bars over the q queries (+ token x query heatmap, + sqrt(q) grid when `spatial` and q is
    square, + a ranked strip when not `spatial`)."""
    return figure_to_image(t2q_figure(r_t2q, r_t2q_tokens, tokens, title, cmap, spatial))


def t2q_figure(r_t2q: torch.Tensor, r_t2q_tokens: torch.Tensor | None = None, tokens: list[str] | None = None,
               title: str = "", cmap: str = CMAP, spatial: bool = True) -> Figure:
    """The figure `render_t2q` draws (every panel on the linear scale relevance / mean)."""
    raw = r_t2q.detach().float().cpu()
    r_t2q, vmax = relative_to_uniform(raw), linear_vmax(raw)
    q = r_t2q.shape[0]
    side = math.isqrt(q)
    show_tokens = r_t2q_tokens is not None and r_t2q_tokens.shape[0] > 1
    show_grid = spatial and side * side == q
    panels = 1 + int(show_tokens) + int(show_grid or not spatial)
    fig = Figure(figsize=(5 * panels, 4.2), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    ax = axes.pop(0)
    ax.bar(np.arange(q), r_t2q.numpy(), width=1.0, color="tab:blue")
    ax.set_xlabel("query token")
    ax.set_ylabel(f"{LINEAR_LABEL}\n(sum over target tokens)")
    ax.set_xlim(-0.5, q - 0.5)
    ax.set_ylim(0, vmax)
    note = warn_if_flat(raw, f"R_t2q {title}".strip())
    if note:
        _note(ax, note)
    if show_tokens:
        ax = axes.pop(0)
        mat = relative_to_uniform(r_t2q_tokens).numpy()
        im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=0, vmax=linear_vmax(r_t2q_tokens), interpolation="nearest")
        ax.set_xlabel("query token")
        if tokens is not None and len(tokens) == mat.shape[0]:
            ax.set_yticks(range(len(tokens)), [repr(t)[1:-1] for t in tokens], fontsize=9)
        ax.set_title("per target token")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(LINEAR_LABEL, fontsize=8)
    if show_grid:
        ax = axes.pop(0)
        im = ax.imshow(r_t2q.reshape(side, side).numpy(), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{side}x{side} query grid")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(LINEAR_LABEL, fontsize=8)
    elif not spatial:
        _ranked_strip(axes.pop(0), fig, r_t2q, cmap, vmax)
    fig.suptitle("R_t2q: text -> the projector's visual tokens" + (f"  ({title})" if title else ""), fontsize=10)
    return fig


def ranked_queries(r_t2q: torch.Tensor, shown: int = 32) -> list[int]:
    """Indices of the `shown` most relevant queries, most relevant first (ties: lower index first)."""
    return torch.argsort(-r_t2q.detach().float().cpu(), stable=True)[:shown].tolist()


def _ranked_strip(ax, fig: Figure, r_t2q: torch.Tensor, cmap: str, vmax: float, shown: int = 20) -> None:
    """Learned queries have no place on the image: a strip of the most relevant ones, ranked, labelled."""
    order = ranked_queries(r_t2q, shown)
    im = ax.imshow(r_t2q[order].numpy()[:, None], cmap=cmap, vmin=0, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_yticks(range(len(order)), [f"q{i}" for i in order], fontsize=8)
    ax.set_xticks([])
    ax.set_title(f"ranked queries (top {len(order)} of {r_t2q.shape[0]}; no spatial order)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.3, pad=0.04).set_label(LINEAR_LABEL, fontsize=8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap size
        return ImageFont.load_default()


def pick_queries(q: int, order: torch.Tensor | None, max_queries: int) -> list[int]:
    """The shown queries: the `max_queries` most relevant by `order` (q), else the first ones."""
    if order is not None:
        return torch.argsort(order.detach().float().cpu(), descending=True)[:max_queries].tolist()
    return list(range(min(q, max_queries)))


def _colour_bar(canvas: Image.Image, draw, at: tuple[int, int], width: int, cmap: str, text: str | None) -> None:
    """A horizontal bar of the colour map, `text` (its scale) right of it."""
    strip = heat_rgb(torch.linspace(0, 1, max(width, 10))[None].repeat(10, 1), cmap).astype(np.uint8)
    canvas.paste(Image.fromarray(strip), at)
    if text:
        draw.text((at[0] + strip.shape[1] + 4, at[1] - 1), text, fill=(0, 0, 0), font=_font(10))


def render_q2i(r_q2i: torch.Tensor, image: Image.Image | None = None, order: torch.Tensor | None = None,
               max_queries: int = 64, cell: int = 84, alpha: float = 0.6, title: str | None = "",
               cmap: str = CMAP, log_vmax: float | None = None) -> Image.Image:
    """Grid of small heatmaps, one per query (row of R_q2i, q n), each over a faint grey thumbnail of `image`.

    `order`: relevance per query (q) used to pick and sort the shown queries (most relevant first);
    default: query order. Each cell carries its query index on a dark label. `title`: the heading strip
    ("" writes the default one, None none). Every cell is on R_q2i's log scale (deco.explain.scale) up to
    `log_vmax` (default: the largest row max / row mean shown), given by a colour bar in the heading strip.
    """
    r_q2i = r_q2i.detach().float().cpu()
    q, n = r_q2i.shape
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"R_q2i has {n} patch columns, not a square grid")
    picked = pick_queries(q, order, max_queries)
    if log_vmax is None:  # one scale for every cell of this figure (per-cell min-max made every query look focused)
        log_vmax = log_vmax_of_rows(r_q2i[picked])
    cols = math.ceil(math.sqrt(len(picked)))
    rows = math.ceil(len(picked) / cols)
    pad = 2
    if title == "":
        title = f"R_q2i: where each query looks ({len(picked)} of {q} queries, most text-relevant first)"
    header = 34 if title else 0
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, header + rows * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(9, min(14, cell // 6)))
    if title:
        draw.text((pad + 2, 2), title, fill=(0, 0, 0), font=_font(12))
        _colour_bar(canvas, draw, (pad + 2, 18), min(160, canvas.width - 130), cmap,
                    f"1 .. {log_vmax:.1f}: {LOG_LABEL.replace('mean', 'row mean')}")
    mode = "bilinear" if image is not None else "nearest"  # without an image: the patches as they are
    for k, query in enumerate(picked):
        rel = r_q2i[query].reshape(grid, grid)
        heat = heat_rgb(upsample(log_scaled(rel, log_vmax), cell, mode=mode), cmap).astype(np.float32)
        if image is not None:
            base = grey_base(image, cell, faint=0.5)
            tile = Image.fromarray(((1 - alpha) * base + alpha * heat).round().astype(np.uint8))
        else:
            tile = Image.fromarray(heat.round().astype(np.uint8))
        x, y = pad + (k % cols) * (cell + pad), header + pad + (k // cols) * (cell + pad)
        canvas.paste(tile, (x, y))
        label = str(query)  # bottom-left, white on black: readable over any colour
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        at = (x + 2, y + cell - (bottom - top) - 3 - top)
        draw.rectangle((at[0] - 1, at[1] + top - 1, at[0] + right + 1, at[1] + bottom + 1), fill=(0, 0, 0))
        draw.text(at, label, fill=(255, 255, 255), font=font)
    return canvas
