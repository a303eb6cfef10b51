"""A symbolic rendering of shapes scenes: what an ideal projector would hand the LLM.

Each scene becomes a g x g grid (the layout of a pooling projector's tokens, raster order). A cell holds the
fraction of its pixels covered by background or by each colour-shape pair (19 classes), the exact label
mask of the rendered picture pooled to the cell. `SymbolicScene` embeds a grid as
coverage @ content_table + position_code(cell centre): a lookup table per class and a learned map of 2D
Fourier features. The zoo's LLM is pretrained reading these embeddings in place of visual tokens, so it
can bind colour with shape, tell absent objects and read positions before it ever sees pixels; a real
projector then only has to map the vision tower's features into the same space (DeCo's premise: the
LLM abstracts, the projector compresses). The same masks give the vision tower its per-patch targets.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from deco.data.shapes import COLOURS, SHAPES, Scene, draw_object

CLASSES = ("background",) + tuple(f"{c} {s}" for s, c in itertools.product(SHAPES, COLOURS))
NUM_CLASSES = len(CLASSES)


def class_index(colour: str, shape: str) -> int:
    return 1 + SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)


def label_mask(scene: Scene) -> np.ndarray:
    """(S, S) uint8 class per pixel, drawn with the picture's own geometry (no anti-aliasing)."""
    size = scene.image.size[0]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for obj in scene.objects:
        draw_object(draw, obj, fill=class_index(obj.colour, obj.shape))
    return np.asarray(mask)


def coverage_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    """(grid*grid, NUM_CLASSES) float32: per cell (raster order), the fraction of pixels of each class.

    Cells follow adaptive pooling's boundaries (pixel x belongs to cell floor(x * grid / S)).
    """
    size = mask.shape[0]
    cell_of = (np.arange(size) * grid) // size
    cell = cell_of[:, None] * grid + cell_of[None, :]  # (S, S) cell index of each pixel
    counts = np.bincount((cell * NUM_CLASSES + mask).ravel(), minlength=grid * grid * NUM_CLASSES)
    counts = counts.reshape(grid * grid, NUM_CLASSES).astype(np.float32)
    return counts / counts.sum(1, keepdims=True)


def cell_centres(grid: int) -> torch.Tensor:
    """(grid*grid, 2) normalised (x, y) centres, raster order."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], -1)


def fourier_features(xy: torch.Tensor, num_freqs: int = 8) -> torch.Tensor:
    """(..., 2) in [0, 1] -> (..., 4 * num_freqs) sin/cos at frequencies pi * 2^k."""
    freqs = math.pi * 2.0 ** torch.arange(num_freqs, dtype=xy.dtype, device=xy.device)
    angles = xy[..., None] * freqs  # ... 2 f
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


class SymbolicScene(nn.Module):
    """Coverage grids (b, g*g, NUM_CLASSES) -> LLM input embeddings (b, g*g, dim)."""

    def __init__(self, dim: int, num_freqs: int = 8, content_std: float = 0.02, position_std: float = 0.02):
        super().__init__()
        self.num_freqs = num_freqs
        self.content = nn.Parameter(torch.randn(NUM_CLASSES, dim) * content_std)
        self.position = nn.Linear(4 * num_freqs, dim, bias=False)
        nn.init.normal_(self.position.weight, std=position_std)

    def forward(self, coverage: torch.Tensor, cells: torch.Tensor | None = None, grid: int | None = None) -> torch.Tensor:
        """coverage (b, k, C) of the cells `cells` (b, k) of a grid x grid scene; all g*g cells when cells is None."""
        grid = math.isqrt(coverage.shape[1]) if grid is None else grid
        if coverage.shape[-1] != NUM_CLASSES or (cells is None and grid * grid != coverage.shape[1]):
            raise ValueError(f"coverage must be (b, g*g, {NUM_CLASSES}), got {tuple(coverage.shape)}")
        pos = self.position(fourier_features(cell_centres(grid).to(coverage), self.num_freqs))  # g*g d
        pos = pos.expand(len(coverage), -1, -1) if cells is None else pos[cells]
        return coverage @ self.content + pos
