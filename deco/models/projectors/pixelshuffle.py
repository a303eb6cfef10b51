"""Pixel-shuffle (space-to-depth) projector, as in nanoVLM, Idefics3 and InternVL-1.5.

Each r x r block of the sqrt(n) x sqrt(n) patch grid is concatenated into one token of width r² d_in
(576 patches -> 144 tokens of 4 d_in at r = 2): a parameter-free compression that keeps every value, then
an MLP of `mlp_depth` Linear layers to the LLM width (nanoVLM / Idefics3: one bias-free Linear; InternVL:
LayerNorm + a 2-layer MLP, i.e. `prenorm=true mlp_depth=2`). The channel order is nanoVLM's
(`modality_projector.pixel_shuffle`: row offset, column offset, feature). `query_num` must be a square
whose side divides the grid side (r = grid / side). R_q2i is exact: token m is its r x r block, each
patch weighted 1/r² (the values are concatenated, not mixed, so no patch outside the block enters).
"""

from __future__ import annotations

import torch
from einops import rearrange

from deco.models.projectors.base import MLP_DEPTH_RENAMED, register_projector
from deco.models.projectors.compressor import CompressorProjector, check_positive
from deco.models.projectors.pooling import adaptive_pool_matrix


@register_projector("pixelshuffle")
class PixelShuffleProjector(CompressorProjector):
    """Space-to-depth by r = sqrt(n / q), then an MLP (r² d_in -> d_out, `mlp_depth` Linear layers)."""

    config_name = "pixelshuffle"
    query_rule = "divisor"
    renamed_keys = MLP_DEPTH_RENAMED  # layer_num: this projector's old name of mlp_depth

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, mlp_depth: int = 2,
                 prenorm: bool = False, pos_emb: bool = False, mlp_act: str = "gelu"):
        check_positive("mlp_depth", mlp_depth)
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb)
        self.mlp_depth = mlp_depth
        self.ratio = self.grid // self.side  # r
        self.build_readout(in_dim * self.ratio**2, mlp_depth, mlp_act)

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d -> b q (r r d)
        return rearrange(x, "b (h r1 w r2) d -> b (h w) (r1 r2 d)", h=self.side, w=self.side, r1=self.ratio,
                         r2=self.ratio)

    def query_to_patch_relevance(self, *args, **kwargs) -> torch.Tensor:
        """Exact (q x n): row m holds 1/r² on the r x r patches of block m, 0 elsewhere."""
        rows = adaptive_pool_matrix(self.grid, self.side)  # integer ratio: 1/r on each block
        return torch.kron(rows, rows)
