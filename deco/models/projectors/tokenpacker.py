"""TokenPacker (Li et al., arXiv 2407.02392; CircleRadon/TokenPacker `TokenPacker`): coarse-to-fine point-to-region.

Coarse point queries are the patch map bilinearly downsampled to sqrt(q) x sqrt(q) (`F.interpolate`,
align_corners=False: at r = 2 the mean of each 2x2 block), projected (`q_proj_1`, bias-free) and
LayerNormed; keys and values are the patches through a 2-layer GELU MLP and a LayerNorm (`k_proj_1`,
`v_proj_1`, `ln_*_1`). Each query attends only to the r x r patches of its own region (r = sqrt(n / q), so
`query_num` is a square whose side divides the grid side) with multi-head attention (head width 128 as
TokenPacker's 1024 // 128, fewer heads when the width is small), then the readout MLP (`mlp_depth` Linear
layers, GELU) maps to the LLM width. Deviation: TokenPacker's keys/values come from 4 concatenated CLIP
layers; deco's vision tower hands one layer, so the MLPs read d_in.

The region restriction is a mask on a full q x n attention map (-inf outside the region), so the map the
forward uses is a plain b h q n tensor and R_q2i is GAE over it (`attentive.gae_query_to_patch`, no query
self-attention): zero outside each query's region by construction.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from deco.models.projectors.attentive import AttentiveProjector
from deco.models.projectors.base import MLP_DEPTH_RENAMED, register_projector
from deco.models.projectors.compressor import CompressorProjector, build_mlp, check_positive


def region_mask(grid: int, side: int) -> torch.Tensor:
    """q x n bool: patch (y, x) belongs to the region of query (y // r, x // r), r = grid // side."""
    r = grid // side
    cell = torch.arange(grid) // r
    owner = (cell[:, None] * side + cell[None, :]).reshape(-1)  # n: the query each patch belongs to
    return owner[None, :] == torch.arange(side * side)[:, None]


class RegionAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout; returns (out, attn b h q n)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, mask):  # b q d, b n d, b n d, q n (True = may attend)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = (rearrange(F.linear(t, w, bias), "b m (h e) -> b h m e", h=self.heads)
                   for t, w, bias in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # b h q n
        out = rearrange(attn @ v, "b h q e -> b q (h e)")
        return self.out_proj(out), attn


@register_projector("tokenpacker")
class TokenPackerProjector(AttentiveProjector, CompressorProjector):
    """Downsampled point queries attend to their r x r region; readout MLP of `mlp_depth` Linear layers.

    Args:
        hidden_size: attention width (TokenPacker: 1024 = the vision width; default d_in).
        num_attention_heads: default: hidden // 128, at least 1, a divisor of hidden.
    """

    config_name = "tokenpacker"
    query_rule = "divisor"
    renamed_keys = MLP_DEPTH_RENAMED  # layer_num: this projector's old name of mlp_depth

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, mlp_depth: int = 2,
                 hidden_size: int | None = None, num_attention_heads: int | None = None, prenorm: bool = False,
                 pos_emb: bool = False, mlp_act: str = "gelu"):
        check_positive("mlp_depth", mlp_depth)
        hidden = in_dim if hidden_size is None else check_positive("hidden_size", hidden_size)
        heads = num_attention_heads
        if heads is None:
            heads = next(h for h in range(max(1, hidden // 128), 0, -1) if hidden % h == 0)
        if hidden % check_positive("num_attention_heads", heads):
            raise ValueError(f"tokenpacker hidden_size={hidden} is not divisible by num_attention_heads={heads}")
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb)
        self.mlp_depth = mlp_depth
        self.hidden_size = hidden
        self.q_proj_1 = nn.Linear(in_dim, hidden, bias=False)
        self.k_proj_1 = build_mlp(2, in_dim, hidden)
        self.v_proj_1 = build_mlp(2, in_dim, hidden)
        self.ln_q_1, self.ln_k_1, self.ln_v_1 = (nn.LayerNorm(hidden, eps=1e-6) for _ in range(3))
        self.clip_attn = RegionAttention(hidden, heads)
        self.register_buffer("mask", region_mask(self.grid, self.side), persistent=False)
        self.build_readout(hidden, mlp_depth, mlp_act)

    def point_queries(self, x: torch.Tensor) -> torch.Tensor:  # b n d -> b q d
        grid = rearrange(x, "b (h w) d -> b d h w", h=self.grid, w=self.grid)
        pooled = F.interpolate(grid.float(), size=(self.side, self.side), mode="bilinear", align_corners=False)
        return rearrange(pooled, "b d h w -> b (h w) d").to(x.dtype)

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q hidden
        key = self.ln_k_1(self.k_proj_1(x))
        value = self.ln_v_1(self.v_proj_1(x))
        query = self.ln_q_1(self.q_proj_1(self.point_queries(x)))
        out, attn = self.clip_attn(query, key, value, self.mask)
        self.keep("cross", attn)
        return out
