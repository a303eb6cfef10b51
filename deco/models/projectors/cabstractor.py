"""Honeybee's C-Abstractor (Cha et al., CVPR 2024, kakaobrain/honeybee `CAbstractor`).

Patches (as a sqrt(n) x sqrt(n) map) -> RegStage of `layer_num` ResNet (RegNet bottleneck) blocks ->
adaptive average pool to sqrt(q) x sqrt(q) -> a second RegStage -> readout MLP (`mlp_depth` Linear
layers, SiLU between). Honeybee's defaults: depth 3, mlp_depth 2, hidden = vision width, a learned
positional embedding on the patches, no prenorm. `layer_num=0` keeps only the pool (then it is DeCo's
avgpool with Honeybee's readout). Module names follow Honeybee (`net.0` / `net.1` / `net.2`, `readout`,
`pos_emb`), so its checkpoints load by dropping the `abstractor.` prefix (`deco.models.formats.honeybee`).

R_q2i (`relevance`):
* `receptive_field` (default): the spatial operators composed — each block is shortcut + 3x3 footprint
  (the 1x1 convs, norms and activations do not mix positions), the pool is its pooling matrix — rows
  normalised to 1. It equals the Jacobian of the network with every nonlinearity and the SE gate removed
  (tested); the SE gate's global mean, which touches every patch weakly, is left out.
* `jacobian`: the gradient-based map of the actual network (`CompressorProjector.jacobian_relevance`).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from deco.models.projectors.base import register_projector
from deco.models.projectors.compressor import (
    ACTIVATIONS,
    ReceptiveFieldProjector,
    check_positive,
    conv3x3_matrix,
    normalize_rows,
)
from deco.models.projectors.conv_layers import RegStage
from deco.models.projectors.pooling import adaptive_pool_matrix


@register_projector("cabstractor")
class CAbstractorProjector(ReceptiveFieldProjector):
    """ResNet blocks, adaptive average pool to sqrt(q) x sqrt(q), ResNet blocks, MLP."""

    config_name = "cabstractor"
    query_rule = "square"

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int = 64, layer_num: int = 3,
                 mlp_depth: int = 2, hidden_size: int | None = None, prenorm: bool = False, pos_emb: bool = True,
                 mlp_act: str = "silu", relevance: str = "receptive_field"):
        check_positive("layer_num", layer_num, minimum=0)
        super().__init__(in_dim, out_dim, num_patches, query_num, prenorm=prenorm, pos_emb=pos_emb,
                         relevance=relevance)
        self.layer_num = self.depth = layer_num
        hidden = in_dim if hidden_size is None else check_positive("hidden_size", hidden_size)
        sampler = nn.AdaptiveAvgPool2d((self.side, self.side))
        if layer_num == 0:
            self.net = nn.Sequential(sampler)
            hidden = in_dim
        else:
            if mlp_act not in ACTIVATIONS:
                raise ValueError(f"mlp_act='{mlp_act}' is unknown; choose one of: {', '.join(ACTIVATIONS)}")
            act = ACTIVATIONS[mlp_act]
            self.net = nn.Sequential(RegStage(layer_num, in_dim, hidden, act), sampler,
                                     RegStage(layer_num, hidden, hidden, act))
        self.hidden_size = hidden
        self.build_readout(hidden, mlp_depth, mlp_act)

    def mix(self, x: torch.Tensor) -> torch.Tensor:  # b n d -> b q hidden
        x = rearrange(x, "b (h w) d -> b d h w", h=self.grid, w=self.grid)
        return rearrange(self.net(x), "b d h w -> b (h w) d")

    def receptive_field(self) -> torch.Tensor:
        """q x n: shortcut + 3x3 footprint per block, the pooling matrix between the stages; rows sum to 1."""
        pool = adaptive_pool_matrix(self.grid, self.side)
        mat = torch.kron(pool, pool)  # q n
        if self.depth:
            before = torch.eye(self.num_patches) + conv3x3_matrix(self.grid)
            after = torch.eye(self.query_num) + conv3x3_matrix(self.side)
            mat = torch.linalg.matrix_power(after, self.depth) @ mat @ torch.linalg.matrix_power(before, self.depth)
        return normalize_rows(mat)
