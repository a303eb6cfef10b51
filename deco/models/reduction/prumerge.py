"""PruMerge+ (Shang et al., ICCV 2025; 42Shawn/LLaVA-PruMerge, `token_prune_merge_advanced_plus`).

Signal: the [CLS] row of a single full-width attention softmax(q_cls . k / sqrt(C)) of the layer after the
selected one (the authors hook CLIP-L's layer 23 `q_proj` / `k_proj`, whose input is the penultimate output).
Kept: the `top` patches with the largest [CLS] attention (in descending attention order), then spatially
uniform patches that are not among them (the "+": coverage of the image). Merge, per kept token i: the
`neighbors` (32) patches whose keys are most cosine-similar to i's among all other patches are added to it
weighted by their [CLS] attention, un-normalised (`x_i + sum_j a_j x_j`), and one extra token sums every
unkept patch weighted by its attention. `keep` counts all of them: top + spatial + 1.

Budget: the authors pick the count adaptively (IQR outliers of the attention, ~5.5 % of patches, plus a
denser spatial sequence). For a fixed budget we split keep - 1 into top = ceil((keep - 1) / 2) attention
tokens and spatial = floor((keep - 1) / 2) samples at the centres of `spatial` equal strides of the raster
order; a sample that is already a top token is replaced by the next-ranked attention token, so the count is
exact. The selection signal and the merge are the authors'; the split is ours (docs/reduction.md).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from deco.models.reduction.base import ReductionConfigError, VisionReducer, VisionSignals, register_reducer


def prumerge_plus_indices(attn: torch.Tensor, keep: int) -> torch.Tensor:
    """n attention -> keep - 1 patch indices: top attention (descending), then spatial samples (fixed budget)."""
    n = attn.shape[0]
    spatial = (keep - 1) // 2
    top_n = keep - 1 - spatial
    order = attn.argsort(descending=True, stable=True)
    chosen = order[:top_n].tolist()
    taken = set(chosen)
    if spatial:
        centres = [((2 * j + 1) * n) // (2 * spatial) for j in range(spatial)]
        spare = iter(order[top_n:].tolist())
        for c in centres:
            if c in taken:
                c = next(x for x in spare if x not in taken and x not in centres)
            chosen.append(c)
            taken.add(c)
    return torch.tensor(chosen, device=attn.device)


def prumerge_matrix(attn: torch.Tensor, keys: torch.Tensor, idx: torch.Tensor, neighbors: int) -> torch.Tensor:
    """(k+1) x n merge weights: row i = e_idx[i] + sum of attention over its `neighbors` most key-similar other
    patches; last row = attention-weighted sum of the unkept patches."""
    n = attn.shape[0]
    normed = F.normalize(keys.float(), p=2, dim=-1)
    sims = normed[idx] @ normed.T  # k n
    sims[torch.arange(len(idx)), idx] = -float("inf")  # a token is not its own neighbour
    near = sims.topk(min(neighbors, n - 1), dim=1).indices  # k m
    mat = torch.zeros(len(idx) + 1, n, device=attn.device)
    mat[torch.arange(len(idx)), idx] = 1.0
    mat[torch.arange(len(idx))[:, None], near] += attn.float()[near]
    unkept = torch.ones(n, dtype=torch.bool, device=attn.device)
    unkept[idx] = False
    mat[-1, unkept] = attn.float()[unkept]
    return mat


@register_reducer("prumerge_plus")
class PruMergePlus(VisionReducer):
    knobs = ("neighbors",)
    needs_next_layer = True

    def __init__(self, keep: int, neighbors: int = 32):
        super().__init__(keep)
        self.neighbors = neighbors

    def check_static(self) -> None:
        super().check_static()
        if self.keep < 2:
            raise ReductionConfigError(f"reduction.keep={self.keep} must be >= 2 for prumerge_plus "
                                       "(at least one kept token plus the merged extra token)")
        if self.neighbors < 1:
            raise ReductionConfigError(f"reduction.neighbors={self.neighbors} must be >= 1")

    def matrix(self, signals: VisionSignals, project=None) -> torch.Tensor:
        attn, keys = signals.next_cls_attn, signals.next_keys[:, 1:]
        rows = []
        for a, k in zip(attn, keys):
            idx = prumerge_plus_indices(a, self.keep)
            rows.append(F.pad(prumerge_matrix(a, k, idx, self.neighbors), (1, 0)))  # column 0: [CLS], unused
        return torch.stack(rows)
