"""Token-preserving projectors: `linear` (LLaVA-1.0) and `mlp2x_gelu` (LLaVA-1.5).

They map every patch to one LLM token (q = n), so their query-to-patch relevance is the identity.
Parameter names follow LLaVA's `mm_projector` (`weight`/`bias` for linear, `0.*`/`2.*` for the MLP), so a
LLaVA checkpoint's `model.mm_projector.*` loads here as `projector.*` with only the prefix renamed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from deco.models.projectors.base import MLP_DEPTH_RENAMED, Projector, register_projector


class _TokenPreserving(Projector):
    """Shared parts of the n -> n projectors."""

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int | None = None):
        super().__init__(in_dim, out_dim, num_patches)
        if query_num is not None and query_num != num_patches:
            raise ValueError(
                f"query_num={query_num} does not apply to '{type(self).__name__}': it keeps all "
                f"{num_patches} patches; use a compressive projector (avgpool, maxpool, qformer) or query_num={num_patches}"
            )

    def num_tokens(self) -> int:
        return self.num_patches

    def query_to_patch_relevance(self, *args, **kwargs) -> torch.Tensor:
        """Identity (n x n): token i is patch i."""
        return torch.eye(self.num_patches)

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:  # b n d_in -> b n d_out
        self._check_input(patch_feats)
        return self.forward_tokens(patch_feats)

    def forward_tokens(self, feats: torch.Tensor) -> torch.Tensor:  # b k d_in -> b k d_out, any k
        """The per-token map on any number of tokens (training-free reduction feeds it k < n merged or kept
        features, deco.models.reduction)."""
        raise NotImplementedError


@register_projector("linear")
class LinearProjector(_TokenPreserving):
    """One Linear layer, d_in -> d_out (LLaVA's `mm_projector_type="linear"`)."""

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, query_num: int | None = None):
        super().__init__(in_dim, out_dim, num_patches, query_num)
        # weight/bias directly on the module so the state dict matches LLaVA's bare nn.Linear
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default initialisation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward_tokens(self, feats: torch.Tensor) -> torch.Tensor:
        return F.linear(feats, self.weight, self.bias)


@register_projector("mlp2x_gelu")
class MLPProjector(_TokenPreserving):
    """Linear, GELU, Linear (LLaVA-1.5's `mlp2x_gelu`); `mlp_depth` Linear layers in general."""

    renamed_keys = MLP_DEPTH_RENAMED  # layer_num: this projector's old name of mlp_depth

    def __init__(self, in_dim: int, out_dim: int, num_patches: int, mlp_depth: int = 2, query_num: int | None = None):
        super().__init__(in_dim, out_dim, num_patches, query_num)
        if not isinstance(mlp_depth, int) or mlp_depth < 1:
            raise ValueError(f"mlp_depth must be a positive int, got {mlp_depth!r}")
        self.mlp_depth = mlp_depth
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(1, mlp_depth):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        # children named "0", "1", "2", ... exactly like LLaVA's nn.Sequential mm_projector
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

    def forward_tokens(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats
        for layer in self.children():
            x = layer(x)
        return x
