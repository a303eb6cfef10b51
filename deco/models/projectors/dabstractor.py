"""Honeybee's D-Abstractor (Cha et al., CVPR 2024, kakaobrain/honeybee `DAbstractor`): deformable attention.

`query_num` queries sit on reference points of a sqrt(q) x sqrt(q) grid (learnable, initialised at the
cell centres (i + 0.5) / sqrt(q)); their positional embedding is the patch map adaptively average-pooled to
that grid (Honeybee's `pooled_v_target="query"`) and their content a learned embedding
(`query_position_embeddings`). `layer_num` Deformable-DETR decoder layers (post-norm): query self-attention
(position added to q and k), deformable cross-attention (each head samples `num_points` bilinearly
interpolated points at reference + learned offsets, weighted by a softmax over the points), and a ReLU
feed-forward; then the readout MLP (Honeybee: one Linear, `output_proj`). One feature level. Names follow
transformers' `DeformableDetrDecoderLayer` (`self_attn`, `encoder_attn.sampling_offsets`, ...), so a
Honeybee checkpoint loads through `deco.models.formats.honeybee`.

The deformable sampling is written as a dense attention map A (b h q n): A[q, i] = sum over points of the
point's weight times its bilinear weight on patch i, which `F.grid_sample(align_corners=False,
padding_mode="zeros")` would apply (tested against it), so out = A V and R_q2i is GAE over A and the query
self-attention (`attentive.gae_query_to_patch`). Rows of A sum to 1 minus the mass of points that fall
outside the map. A plain forward (training) samples with `grid_sample` instead, which is the same
attention without building A; `forward_with_attentions` builds it.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from deco.models.projectors.attentive import AttentiveProjector
from deco.models.projectors.base import register_projector
from deco.models.projectors.compressor import CompressorProjector, check_positive


def sampling_matrix(locations: torch.Tensor, weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Dense deformable attention: locations b q h p 2 ((x, y) in [0, 1]), weights b q h p -> A b h q (H W)."""
    px = locations[..., 0] * width - 0.5  # grid_sample, align_corners=False
    py = locations[..., 1] * height - 0.5
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    idx, val = [], []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        idx.append((yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long())
        val.append(weights * w * inside)
    idx = rearrange(torch.stack(idx, -1), "b q h p c -> b h q (p c)")
    val = rearrange(torch.stack(val, -1), "b q h p c -> b h q (p c)")
    b, h, q, _ = idx.shape
    return val.new_zeros(b, h, q, height * width).scatter_add(-1, idx, val)


def grid_sample_attention(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor, grid: int):
    """`sampling_matrix(...) @ value` computed by F.grid_sample (faster, no map): value b h n e -> b q (h e)."""
    b = value.shape[0]
    v = rearrange(value, "b h (y x) e -> (b h) e y x", y=grid)
    g = rearrange(2 * locations - 1, "b q h p c -> (b h) q p c")
    sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (b h) e q p
    out = (sampled * rearrange(weights, "b q h p -> (b h) 1 q p")).sum(-1)
    return rearrange(out, "(b h) e q -> b q (h e)", b=b)


class DeformableCrossAttention(nn.Module):
    """transformers' DeformableDetrMultiscaleDeformableAttention at one level, sampling written densely."""

    def __init__(self, dim: int, heads: int, points: int):
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # Deformable DETR's initialisation: offsets start on a ring per head, growing with the point index
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(heads, 1, 2).repeat(1, points, 1)
        grid = grid * torch.arange(1, points + 1, dtype=torch.float32)[None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        for lin in (self.attention_weights,):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, hidden, pos, feats, reference, grid: int, dense: bool = True):  # b q d, b q d, b n d, b q 2
        """(out b q d, attention b h q n or None): `dense=False` samples with grid_sample and returns no map."""
        query = hidden + pos
        b, q, d = query.shape
        value = rearrange(self.value_proj(feats), "b n (h e) -> b h n e", h=self.heads)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.points).softmax(-1)
        locations = reference[:, :, None, None, :] + offsets / grid  # (x, y); offsets are in patches
        if not dense:
            return self.output_proj(grid_sample_attention(value, locations, weights, grid)), None
        attn = sampling_matrix(locations, weights, grid, grid)  # b h q n
        out = rearrange(attn @ value, "b h q e -> b q (h e)")
        return self.output_proj(out), attn


class SelfAttention(nn.Module):
    """DETR's attention: position added to queries and keys (not values), scaled dot product."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, hidden, pos):
        qk = hidden + pos
        q, k, v = (rearrange(proj(t), "b m (h e) -> b h m e", h=self.heads)
                   for proj, t in ((self.q_proj, qk), (self.k_proj, qk), (self.v_proj, hidden)))
        attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)  # b h q q
        return self.out_proj(rearrange(attn @ v, "b h q e -> b q (h e)")), attn


class DecoderLayer(nn.Module):
    """DeformableDetrDecoderLayer: self-attn, add & norm; deformable cross-attn, add & norm; ReLU FFN, add & norm."""

    def __init__(self, dim: int, heads: int, points: int, ffn_dim: int):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = DeformableCrossAttention(dim, heads, points)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, hidden, pos, feats, reference, grid, dense: bool = True):
        out, a_self = self.self_attn(hidden, pos)
        hidden = self.self_attn_layer_norm(hidden + out)
        out, a_cross = self.encoder_attn(hidden, pos, feats, reference, grid, dense)
        hidden = self.encoder_attn_layer_norm(hidden + out)
        hidden = self.final_layer_norm(hidden + self.fc2(F.relu(self.fc1(hidden))))
        return hidden, a_self, a_cross


@register_projector("dabstractor")
class DAbstractorProjector(AttentiveProjector, CompressorProjector):
    """Queries on a sqrt(q) x sqrt(q) reference grid, `layer_num` deformable decoder layers, readout MLP.

    Args:
        num_attention_heads / num_points / ffn_dim: Deformable-DETR decoder settings (Honeybee: 8, 4, 1024).
    """

    config_name = "dabstractor"
    query_rule = "square"

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, layer_num: int = 2,
                 mlp_depth: int = 1, num_attention_heads: int = 8, num_points: int = 4, ffn_dim: int | None = None,
                 prenorm: bool = False, pos_emb: bool = True, mlp_act: str = "gelu"):
        check_positive("layer_num", layer_num)
        check_positive("num_points", num_points)
        if in_dim % check_positive("num_attention_heads", num_attention_heads):
            raise ValueError(f"dabstractor width {in_dim} is not divisible by "
                             f"num_attention_heads={num_attention_heads}")
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb)
        self.layer_num = layer_num
        ffn = in_dim if ffn_dim is None else check_positive("ffn_dim", ffn_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(in_dim, num_attention_heads, num_points, ffn) for _ in range(layer_num)
        )
        self.query_position_embeddings = nn.Embedding(query_num, in_dim)
        centres = (torch.arange(self.side, dtype=torch.float32) + 0.5) / self.side
        ref_y, ref_x = torch.meshgrid(centres, centres, indexing="ij")
        self.reference_points = nn.Parameter(torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], -1)[None])  # 1 q 2
        self.downsampler = nn.AdaptiveAvgPool2d((self.side, self.side))
        self.build_readout(in_dim, mlp_depth, mlp_act)

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d -> b q d
        b = x.shape[0]
        pos = self.downsampler(rearrange(x, "b (h w) d -> b d h w", h=self.grid, w=self.grid))
        pos = rearrange(pos, "b d h w -> b (h w) d")
        hidden = self.query_position_embeddings.weight.to(x.dtype).expand(b, -1, -1)
        reference = self.reference_points.to(x.dtype).expand(b, -1, -1)
        dense = self._recording is not None  # the dense map only when relevance needs it
        for layer in self.layers:
            hidden, a_self, a_cross = layer(hidden, pos, x, reference, self.grid, dense)
            self.keep("self", a_self)
            self.keep("cross", a_cross)
        return hidden
