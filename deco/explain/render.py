"""Pictures of relevance maps, as in the DeCo paper's R-GAE tool.

* `render_t2i`: the image beside the R_t2i heatmap (grid upsampled bilinearly to the image size,
  min-max normalised, jet colour map) blended over it.
* `render_t2q`: R_t2q over the query tokens: a bar per query, a target-token x query heatmap when
  several target tokens exist, and a sqrt(q) x sqrt(q) grid when q is a square.
* `render_q2i`: one small heatmap per query token over a thumbnail of the image, showing where each
  query looks (each map normalised on its own; at most `max_queries` shown, the most text-relevant first).
All return PIL images (matplotlib's Agg backend, no display); `png_bytes` encodes one.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch.nn import functional as F  # noqa: E402

CMAP = "jet"


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


def heat_rgb(rel01: torch.Tensor) -> np.ndarray:
    """[0, 1] map (h w) -> h w 3 uint8 in the colour map."""
    rgba = colormaps[CMAP](rel01.numpy())
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: Image.Image, rel: torch.Tensor, alpha: float = 0.5, size: int | None = None) -> Image.Image:
    """Blend the (normalised, upsampled) map `rel` (g g) over `image`, both resized to `size` (default image side)."""
    size = size or image.size[0]
    base = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
    heat = heat_rgb(normalize_map(upsample(rel, size))).astype(np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * heat).round().astype(np.uint8))


def _figure_to_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def render_t2i(image: Image.Image, r_t2i: torch.Tensor, title: str = "") -> Image.Image:
    """Image | R_t2i overlay, with a colour bar (relevance min-max normalised)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title("image")
    axes[1].imshow(overlay(image, r_t2i))
    axes[1].set_title(f"R_t2i ({r_t2i.shape[0]}x{r_t2i.shape[1]} patches)")
    for ax in axes:
        ax.axis("off")
    mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=matplotlib.colors.Normalize(0, 1))
    fig.colorbar(mappable, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    return _figure_to_image(fig)


def render_t2q(r_t2q: torch.Tensor, r_t2q_tokens: torch.Tensor | None = None, tokens: list[str] | None = None,
               title: str = "") -> Image.Image:
    """R_t2q as bars over the q queries (+ token x query heatmap, + sqrt(q) grid when q is square)."""
    r_t2q = r_t2q.detach().float().cpu()
    q = r_t2q.shape[0]
    side = math.isqrt(q)
    show_tokens = r_t2q_tokens is not None and r_t2q_tokens.shape[0] > 1
    panels = 1 + int(show_tokens) + int(side * side == q)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    ax.bar(np.arange(q), r_t2q.numpy(), width=1.0, color="tab:blue")
    ax.set_xlabel("query token")
    ax.set_ylabel("relevance (sum over target tokens)")
    ax.set_xlim(-0.5, q - 0.5)
    if show_tokens:
        ax = axes.pop(0)
        mat = r_t2q_tokens.detach().float().cpu().numpy()
        ax.imshow(mat, aspect="auto", cmap=CMAP, interpolation="nearest")
        ax.set_xlabel("query token")
        if tokens is not None and len(tokens) == mat.shape[0]:
            ax.set_yticks(range(len(tokens)), [repr(t)[1:-1] for t in tokens], fontsize=7)
        ax.set_title("per target token")
    if side * side == q:
        ax = axes.pop(0)
        im = ax.imshow(r_t2q.reshape(side, side).numpy(), cmap=CMAP, interpolation="nearest")
        ax.set_title(f"{side}x{side} query grid")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    return _figure_to_image(fig)


def render_q2i(r_q2i: torch.Tensor, image: Image.Image | None = None, order: torch.Tensor | None = None,
               max_queries: int = 64, cell: int = 84, alpha: float = 0.6) -> Image.Image:
    """Grid of small heatmaps, one per query (row of R_q2i, q n), each over a thumbnail of `image`.

    `order`: relevance per query (q) used to pick and sort the shown queries (most relevant first);
    default: query order. Each cell is labelled with its query index.
    """
    r_q2i = r_q2i.detach().float().cpu()
    q, n = r_q2i.shape
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"R_q2i has {n} patch columns, not a square grid")
    if order is not None:
        picked = torch.argsort(order.detach().float().cpu(), descending=True)[:max_queries].tolist()
    else:
        picked = list(range(min(q, max_queries)))
    cols = math.ceil(math.sqrt(len(picked)))
    rows = math.ceil(len(picked) / cols)
    pad = 2
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    thumb = image.convert("RGB").resize((cell, cell), Image.BICUBIC) if image is not None else None
    for k, query in enumerate(picked):
        rel = r_q2i[query].reshape(grid, grid)
        if thumb is not None:
            tile = overlay(thumb, rel, alpha=alpha, size=cell)
        else:
            tile = Image.fromarray(heat_rgb(normalize_map(upsample(rel, cell, mode="nearest"))))
        x, y = pad + (k % cols) * (cell + pad), pad + (k // cols) * (cell + pad)
        canvas.paste(tile, (x, y))
        draw.text((x + 2, y + 1), str(query), fill=(255, 255, 255))
    return canvas
