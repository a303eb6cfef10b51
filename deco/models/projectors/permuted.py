"""A projector whose output tokens come in a fixed random order: the token-layout control (issue 24).

`projector.permute_tokens=<seed>` (or `true`, seed 0) wraps any projector: its q output tokens are reordered by
one permutation drawn from the seed, the same for every image; each token's content is unchanged, only the
order the LLM reads them in is gone. If an LLM was pretrained on one layout (the tiny zoo's symbolic grids in
a pooling projector's raster order), avgpool loses exactly what that layout gave it. R_q2i is permuted the
same way (row i of the wrapper's R_q2i is the inner projector's row perm[i]), so relevance stays consistent.
"""

from __future__ import annotations

import torch

from deco.models.projectors.base import Projector


def token_permutation(num_tokens: int, seed: int) -> torch.Tensor:
    """(q,) the fixed permutation of `seed` (torch's CPU generator: the same on every machine)."""
    return torch.randperm(num_tokens, generator=torch.Generator().manual_seed(int(seed)))


def permute_seed(value) -> int | None:
    """The config value of `permute_tokens` -> a seed, or None for no permutation (null / false)."""
    if value is None or value is False:
        return None
    if value is True:
        return 0
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"projector.permute_tokens must be null, true/false or a seed >= 0, got {value!r}")


class PermutedProjector(Projector):
    """`inner` with its output tokens reordered: out[:, i] = inner(x)[:, perm[i]]."""

    spatial_tokens = False  # the grid layout is what the permutation removes: R_t2q is drawn as a strip

    def __init__(self, inner: Projector, seed: int = 0):
        super().__init__(inner.in_dim, inner.out_dim, inner.num_patches)
        self.inner, self.seed = inner, int(seed)
        self.register_buffer("perm", token_permutation(inner.num_tokens(), seed), persistent=False)

    def num_tokens(self) -> int:
        return self.inner.num_tokens()

    def forward(self, patch_feats: torch.Tensor) -> torch.Tensor:
        return self.inner(patch_feats)[:, self.perm]

    def query_to_patch_relevance(self, *args, **kwargs) -> torch.Tensor:
        rel = self.inner.query_to_patch_relevance(*args, **kwargs)  # (b) q n
        return rel[..., self.perm, :]


class PermutedAttentiveProjector(PermutedProjector):
    """The same for projectors with attention maps (Q-Former, resampler): the maps stay in the inner order
    (their R_q2i rows are permuted by query_to_patch_relevance, as the tokens are)."""

    def forward_with_attentions(self, patch_feats: torch.Tensor):
        tokens, self_attns, cross_attns = self.inner.forward_with_attentions(patch_feats)
        return tokens[:, self.perm], self_attns, cross_attns


def permuted(inner: Projector, seed: int) -> PermutedProjector:
    cls = PermutedAttentiveProjector if hasattr(inner, "forward_with_attentions") else PermutedProjector
    return cls(inner, seed)
