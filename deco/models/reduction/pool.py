"""`pool`: 2D adaptive average pooling of the patch grid at inference only (M3's control, Cai et al., ICLR 2025).

The grid of n patches is average-pooled to sqrt(keep) x sqrt(keep) cells with the cells of
`nn.AdaptiveAvgPool2d` (the operator of DeCo's `avgpool` projector), then the model's own token-wise projector
maps each pooled feature. On a `linear` checkpoint this is exactly an `avgpool` projector carrying the linear
weights, never trained at that budget: the comparison M3 draws between pooling at inference and pooling in
training. [CLS] is not used.
"""

from __future__ import annotations

import math

import torch

from deco.models.projectors.pooling import adaptive_pool_matrix
from deco.models.reduction.base import ReductionConfigError, VisionReducer, VisionSignals, is_square, register_reducer


def pool_matrix(num_patches: int, keep: int) -> torch.Tensor:
    """keep x n weights of 2D adaptive average pooling (row-major grids)."""
    grid, side = math.isqrt(num_patches), math.isqrt(keep)
    rows = adaptive_pool_matrix(grid, side)  # side x grid
    return torch.kron(rows, rows)


@register_reducer("pool")
class Pool(VisionReducer):
    def check_static(self) -> None:
        super().check_static()
        if not is_square(self.keep):
            raise ReductionConfigError(f"reduction.keep={self.keep} must be a perfect square for reduction=pool "
                                       "(a sqrt(keep) x sqrt(keep) grid), e.g. 16, 64, 144")

    def check(self, num_patches: int, llm_layers: int | None = None) -> None:
        super().check(num_patches, llm_layers)
        if not is_square(num_patches):
            raise ReductionConfigError(f"reduction=pool needs a square patch grid; the tower gives {num_patches} tokens")

    def matrix(self, signals: VisionSignals, project=None) -> torch.Tensor:
        b, total = signals.hidden.shape[:2]
        mat = torch.zeros(self.keep, total, device=signals.hidden.device)
        mat[:, 1:] = pool_matrix(total - 1, self.keep).to(mat.device)
        return mat.expand(b, -1, -1)
