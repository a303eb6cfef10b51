"""Pooling projectors: DeCo's `avgpool` (and the `maxpool` variant).

DeCo (Yao et al., 2024, arXiv 2405.20985) compresses at the patch level with a parameter-free 2D adaptive
pooling of the sqrt(n) x sqrt(n) patch grid down to sqrt(q) x sqrt(q), then projects with an MLP of
`mlp_depth` Linear layers (GELU between). Module names mirror the paper's `AvgPoolProjector`
(`sampler`, `mlp_projector.0`, `mlp_projector.2`, ...) so its weights load unchanged. The query-to-patch
relevance is the pooling matrix itself (average pooling) or the argmax patches (max pooling).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from deco.models.projectors.base import MLP_DEPTH_RENAMED, Projector, register_projector

POOLINGS = ("avg", "max")


def _square_side(value: int) -> int | None:
    side = math.isqrt(value)
    return side if side * side == value else None


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """1D adaptive average pooling as a matrix (out_size x in_size).

    Row i averages inputs floor(i*in/out) .. ceil((i+1)*in/out) - 1, the cells `nn.AdaptiveAvgPool*` uses.
    """
    mat = torch.zeros(out_size, in_size)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil division
        mat[i, start:end] = 1.0 / (end - start)
    return mat


class PoolingProjector(Projector):
    """2D adaptive pooling (n -> q tokens) followed by an MLP (d_in -> d_out).

    Args:
        query_num: output tokens q; a perfect square no larger than the patch count.
        mlp_depth: Linear layers in the MLP (first d_in -> d_out, the rest d_out -> d_out, GELU between).
        pooling: "avg" (DeCo) or "max".
    """

    default_pooling = "avg"
    renamed_keys = MLP_DEPTH_RENAMED  # layer_num: this projector's old name of mlp_depth

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_patches: int,
        query_num: int = 64,
        mlp_depth: int = 2,
        pooling: str | None = None,
    ):
        super().__init__(in_dim, out_dim, num_patches)
        pooling = self.default_pooling if pooling is None else pooling
        if pooling not in POOLINGS:
            raise ValueError(f"pooling='{pooling}' is unknown; choose one of: {', '.join(POOLINGS)}")
        grid = _square_side(num_patches)
        if grid is None:
            raise ValueError(
                f"pooling projectors need a square patch grid, but the vision tower gives {num_patches} tokens "
                "(select_feature='cls_patch' adds the CLS token; use 'patch')"
            )
        allowed = (
            f"one of 1, 4, 9, ..., {num_patches}" if grid > 3 else ", ".join(str(k * k) for k in range(1, grid + 1))
        )
        if not isinstance(query_num, int) or isinstance(query_num, bool) or query_num < 1:
            raise ValueError(f"query_num={query_num!r} must be a positive int; pooling projectors need {allowed}")
        side = _square_side(query_num)
        if side is None:
            raise ValueError(f"query_num={query_num} is not a perfect square; pooling projectors need {allowed}")
        if query_num > num_patches:
            raise ValueError(
                f"query_num={query_num} exceeds the {num_patches} patches of the vision tower; "
                f"pooling projectors need {allowed}"
            )
        if not isinstance(mlp_depth, int) or mlp_depth < 1:
            raise ValueError(f"mlp_depth must be a positive int, got {mlp_depth!r}")

        self.query_num = query_num
        self.mlp_depth = mlp_depth
        self.pooling = pooling
        self.grid = grid  # sqrt(n)
        self.side = side  # sqrt(q)
        self.sampler = nn.AdaptiveAvgPool2d((side, side)) if pooling == "avg" else nn.AdaptiveMaxPool2d((side, side))
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(1, mlp_depth):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.mlp_projector = nn.Sequential(*layers)

    def num_tokens(self) -> int:
        return self.query_num

    def pool(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d -> b q d
        """The pooling step alone (no MLP)."""
        self._check_input(patch_feats)
        x = rearrange(patch_feats, "b (h w) d -> b d h w", h=self.grid, w=self.grid)
        x = self.sampler(x)  # b d s s
        return rearrange(x, "b d h w -> b (h w) d")

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        return self.mlp_projector(self.pool(patch_feats))

    def query_to_patch_relevance(self, patch_feats: torch.Tensor | None = None) -> torch.Tensor:
        """R_q2i of the pooling step.

        avg: the fixed pooling matrix (q x n); row m holds 1/|cell| over the patches of pooled cell m.
        max: needs `patch_feats` (b n d); row m is the share of channels whose maximum in cell m sits at
            each patch (one-hot argmax averaged over channels) -> b q n.
        """
        if self.pooling == "avg":
            rows = adaptive_pool_matrix(self.grid, self.side)  # s x sqrt(n)
            # query (i, j) x patch (h, w) = rows[i, h] * rows[j, w], flattened row-major like the features
            return torch.kron(rows, rows)
        if patch_feats is None:
            raise ValueError("max-pooling relevance depends on the features: pass patch_feats (b n d)")
        self._check_input(patch_feats)
        x = rearrange(patch_feats.detach(), "b (h w) d -> b d h w", h=self.grid, w=self.grid)
        _, idx = F.adaptive_max_pool2d(x, (self.side, self.side), return_indices=True)  # b d s s, flat h*w index
        idx = rearrange(idx, "b d h w -> b (h w) d")
        rel = patch_feats.new_zeros(idx.shape[0], self.query_num, self.num_patches, dtype=torch.float32)
        share = torch.full(idx.shape, 1.0 / idx.shape[-1], dtype=rel.dtype, device=rel.device)
        return rel.scatter_add_(2, idx, share)


@register_projector("avgpool")
class AvgPoolProjector(PoolingProjector):
    """DeCo: 2D adaptive average pooling + MLP."""

    default_pooling = "avg"


@register_projector("maxpool")
class MaxPoolProjector(PoolingProjector):
    """2D adaptive max pooling + MLP (an ablation of DeCo's pooling operator)."""

    default_pooling = "max"
