"""MobileVLM's Lightweight Downsample Projectors: `ldp` (v1, Chu et al. 2023) and `ldpv2` (v2, 2024).

Both start with a per-patch MLP to the LLM width (`mlp_depth` Linear layers, GELU between; MobileVLM: 2)
and then work on the sqrt(n) x sqrt(n) map at the LLM width, so they have no readout MLP:

* `ldp`: two MobileNetV3 inverted-residual blocks (depthwise 3x3 conv + SE + pointwise conv, LayerNorm2d,
  Hardswish): stride 1 with a residual, then stride r = sqrt(n / q) (MobileVLM: r = 2, 576 -> 144), so
  `query_num` is a square whose side divides the grid side. Names as MobileVLM's `LDPBlock`
  (`mlp.1`, `mlp.3`, `mb_block.1`, `mb_block.2`; the `nn.Identity` slots 0 kept) so `model.mm_projector.model.*`
  loads by dropping the prefix (`deco.models.formats.mobilevlm`).
* `ldpv2`: MLP, adaptive average pool to sqrt(q) x sqrt(q) (any square), then the PEG positional encoding
  generator (Chu et al., Twins): a depthwise 3x3 conv added to its input. Names as `LDPNetV2Projector`
  (`mlp.mlp.0`, `mlp.mlp.2`, `peg.peg.0`).

`query_num=None` means MobileVLM's count, half the grid side squared (what its checkpoints imply).

R_q2i (`relevance`): `receptive_field` (default) composes the spatial operators (3x3 footprint with its
stride, + identity where a residual is; the pool's matrix), rows normalised to 1: the Jacobian of the
linearised network (no norms, activations or SE gate; tested). `jacobian`: the gradient-based map.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from deco.models.projectors.base import MLP_DEPTH_RENAMED, register_projector
from deco.models.projectors.compressor import (
    ReceptiveFieldProjector,
    build_mlp,
    check_positive,
    conv3x3_matrix,
    normalize_rows,
    square_side,
)
from deco.models.projectors.conv_layers import InvertedResidual
from deco.models.projectors.pooling import adaptive_pool_matrix


def half_grid_query_num(num_patches: int) -> int:
    """MobileVLM's token count: half the grid side, squared (576 -> 144)."""
    side = square_side(num_patches)
    return (side // 2) ** 2 if side and side % 2 == 0 else -1  # -1: let the query rule explain


class _LDPBase(ReceptiveFieldProjector):
    renamed_keys = MLP_DEPTH_RENAMED  # layer_num: this projector's old name of mlp_depth

    def __init__(self, in_dim, out_dim, num_patches, query_num, mlp_depth, prenorm, pos_emb, relevance):
        check_positive("mlp_depth", mlp_depth)
        if query_num is None:
            query_num = half_grid_query_num(num_patches)
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb,
                         relevance=relevance)
        self.mlp_depth = mlp_depth

    def spatial(self, x: torch.Tensor) -> torch.Tensor:  # b d g g -> b d s s
        raise NotImplementedError

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        x = rearrange(self.mlp(x), "b (h w) d -> b d h w", h=self.grid, w=self.grid)
        return rearrange(self.spatial(x), "b d h w -> b (h w) d")


@register_projector("ldp")
class LDPProjector(_LDPBase):
    """MLP to the LLM width, inverted residual (stride 1), inverted residual (stride sqrt(n / q))."""

    config_name = "ldp"
    query_rule = "divisor"

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int | None = None, mlp_depth: int = 2,
                 prenorm: bool = False, pos_emb: bool = False, relevance: str = "receptive_field"):
        super().__init__(in_dim, out_dim, num_patches, query_num, mlp_depth, prenorm, pos_emb, relevance)
        self.stride = self.grid // self.side
        self.mlp = nn.Sequential(nn.Identity(), *build_mlp(mlp_depth, in_dim, out_dim))
        self.mb_block = nn.Sequential(nn.Identity(), InvertedResidual(out_dim, 1),
                                      InvertedResidual(out_dim, self.stride))

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.mb_block(x)

    def receptive_field(self) -> torch.Tensor:
        first = torch.eye(self.num_patches) + conv3x3_matrix(self.grid)
        second = conv3x3_matrix(self.grid, self.stride)
        if self.stride == 1:
            second = second + torch.eye(self.num_patches)
        return normalize_rows(second @ first)


class _PEG(nn.Module):
    """Twins' positional encoding generator: x + depthwise 3x3 conv(x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.peg = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=True, groups=channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.peg(x) + x


class _FeatureIR(nn.Module):
    def __init__(self, mlp_depth: int, in_dim: int, out_dim: int):
        super().__init__()
        self.mlp = build_mlp(mlp_depth, in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@register_projector("ldpv2")
class LDPv2Projector(_LDPBase):
    """MLP to the LLM width, adaptive average pool to sqrt(q) x sqrt(q), PEG."""

    config_name = "ldpv2"
    query_rule = "square"

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int | None = None, mlp_depth: int = 2,
                 prenorm: bool = False, pos_emb: bool = False, relevance: str = "receptive_field"):
        super().__init__(in_dim, out_dim, num_patches, query_num, mlp_depth, prenorm, pos_emb, relevance)
        self.mlp = _FeatureIR(mlp_depth, in_dim, out_dim)
        self.dwn = nn.AdaptiveAvgPool2d((self.side, self.side))
        self.peg = _PEG(out_dim)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return self.peg(self.dwn(x))

    def receptive_field(self) -> torch.Tensor:
        pool = adaptive_pool_matrix(self.grid, self.side)
        peg = torch.eye(self.query_num) + conv3x3_matrix(self.side)
        return normalize_rows(peg @ torch.kron(pool, pool))
