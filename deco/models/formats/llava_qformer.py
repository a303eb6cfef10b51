"""The Q-Former variant of LLaVA-fork checkpoints (`mm_projector_type = qformer<L>_<Q>`).

The LLaVA forks that define `qformer2_64`-style projectors (the naming the DeCo paper's checkpoints use) build
a BLIP-2 Q-Former whose width is the vision width, with cross-attention in every layer, 32 heads, no dropout,
and an output MLP `proj` = Linear, GELU, Linear (vision width -> LLM width -> LLM width) instead of one
Linear. `QFormerMLPProjector` is deco's `QFormerProjector` with that output MLP (`out_layer_num` Linear
layers), so its attention maps and R_q2i work unchanged; `build_any_projector` builds it when a projector
config asks for `out_layer_num`, and deco's registry projector otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from deco.models.projectors import build_projector
from deco.models.projectors.qformer import QFormerProjector


class QFormerMLPProjector(QFormerProjector):
    """QFormerProjector whose output head is an MLP of `out_layer_num` Linear layers (GELU between)."""

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, out_layer_num: int = 2, **kwargs):
        super().__init__(in_dim, out_dim, num_patches, **kwargs)
        if not isinstance(out_layer_num, int) or out_layer_num < 1:
            raise ValueError(f"out_layer_num must be a positive int, got {out_layer_num!r}")
        self.out_layer_num = out_layer_num
        layers: list[nn.Module] = [nn.Linear(self.hidden_size, out_dim)]
        for _ in range(1, out_layer_num):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.language_projection = nn.Sequential(*layers)

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b q d_out
        self._check_input(patch_feats)
        queries = self.query_tokens.expand(patch_feats.shape[0], -1, -1)  # b q h
        out = self.qformer(query_embeds=queries, encoder_hidden_states=patch_feats).last_hidden_state
        return self.language_projection(out.to(self.language_projection[0].weight.dtype))


def build_any_projector(projector_cfg: Mapping, in_dim: int, out_dim: int, num_patches: int) -> nn.Module:
    """deco registry projector, or the LLaVA-fork Q-Former when the config has `out_layer_num`."""
    cfg = dict(projector_cfg)
    if "name" not in cfg:
        raise ValueError("projector config needs a 'name' (e.g. linear, mlp2x_gelu, avgpool, maxpool, qformer)")
    name = cfg.pop("name")
    if "out_layer_num" in cfg:
        if name != "qformer":
            raise ValueError(f"out_layer_num applies to the qformer projector only, not '{name}'")
        return QFormerMLPProjector(in_dim, out_dim, num_patches, **cfg)
    return build_projector(name, in_dim=in_dim, out_dim=out_dim, num_patches=num_patches, **cfg)
