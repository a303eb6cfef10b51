"""Perceiver Resampler (Flamingo, Alayrac et al., NeurIPS 2022; as in lucidrains/flamingo-pytorch and IDEFICS).

`query_num` learned latents pass through `layer_num` layers; in each, the latents attend to the
concatenation [patches; latents] (one softmax over both; LayerNorm on each, bias-free q/kv/out projections)
with a residual, then a feed-forward block (LayerNorm, Linear x4, GELU, Linear) with a residual; a final
LayerNorm, then the readout MLP to the LLM width (`mlp_depth`, Honeybee's resampler: one Linear). The
patches get a learned positional embedding first (Flamingo's `media_pos_emb`; `pos_emb`). Any
`query_num` from 1 to n works.

R_q2i: the joint softmax is split into its patch columns (cross-attention, b h q n) and latent columns
(self-attention, b h q q), which the forward uses as two tensors (out = A_cross V_x + A_self V_q), and GAE
runs over them layer by layer (`attentive.gae_query_to_patch`). Applying the self rule before the cross
rule within a layer is GAE's order for stacked layers; here both happen in one softmax, so R_qi of a layer
uses the self-relevance that includes that layer's self part: an approximation, like all GAE maps.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from deco.models.projectors.attentive import AttentiveProjector
from deco.models.projectors.base import register_projector
from deco.models.projectors.compressor import CompressorProjector, check_positive
from deco.models.projectors.qformer import _default_heads


class PerceiverAttention(nn.Module):
    """Latents attend to [patches; latents]; returns (out b q d, cross b h q n, self b h q q)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor):
        n = x.shape[1]
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = rearrange(self.to_q(latents), "b q (h e) -> b h q e", h=self.heads) * self.scale
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        k, v = (rearrange(t, "b m (h e) -> b h m e", h=self.heads) for t in (k, v))
        attn = (q @ k.transpose(-1, -2)).softmax(dim=-1)  # b h q (n + q)
        a_cross, a_self = attn[..., :n], attn[..., n:]
        out = a_cross @ v[:, :, :n] + a_self @ v[:, :, n:]
        return self.to_out(rearrange(out, "b h q e -> b q (h e)")), a_cross, a_self


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


@register_projector("resampler")
class ResamplerProjector(AttentiveProjector, CompressorProjector):
    """Learned latents, `layer_num` x (attention to [patches; latents] + FF), LayerNorm, readout MLP.

    Args:
        num_attention_heads: default: the largest count <= d_in // 64 that divides d_in (head width ~64).
        ff_mult: feed-forward expansion (Flamingo: 4).
    """

    config_name = "resampler"
    query_rule = "any"
    spatial_tokens = False  # learned latents: no layout on the image

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, layer_num: int = 2,
                 mlp_depth: int = 1, num_attention_heads: int | None = None, ff_mult: int = 4,
                 prenorm: bool = False, pos_emb: bool = True, mlp_act: str = "gelu"):
        check_positive("layer_num", layer_num)
        heads = num_attention_heads
        heads = _default_heads(in_dim) if heads is None else check_positive("num_attention_heads", heads)
        if in_dim % heads:
            raise ValueError(f"resampler width {in_dim} is not divisible by num_attention_heads={heads}")
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb)
        self.layer_num = layer_num
        self.latents = nn.Parameter(torch.randn(query_num, in_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(in_dim, heads), feed_forward(in_dim, ff_mult)]) for _ in range(layer_num)
        )
        self.norm = nn.LayerNorm(in_dim)
        self.build_readout(in_dim, mlp_depth, mlp_act)

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d -> b q d
        latents = self.latents.to(x.dtype).expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            out, a_cross, a_self = attn(x, latents)
            self.keep("self", a_self)
            self.keep("cross", a_cross)
            latents = latents + out
            latents = latents + ff(latents)
        return self.norm(latents)
