"""DivPrune (Alvar et al., CVPR 2025; vbdi/divprune): keep the most diverse visual tokens, no attention used.

On the projected visual tokens (LLaVA's `mm_projector` output), with cosine distance D = 1 - cos: the first
token maximises its distance to its nearest other token (the second-smallest entry of its column of D); each
next one maximises its minimum distance to the tokens already chosen (greedy max-min). The chosen indices are
sorted, so the kept tokens stay in raster order.
"""

from __future__ import annotations

import torch

from deco.models.reduction.base import VisionReducer, VisionSignals, one_hot_rows, register_reducer


def divprune_indices(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """n d -> keep indices (sorted) by DivPrune's greedy max-min cosine distance."""
    normed = tokens.float() / tokens.float().norm(dim=-1, keepdim=True)
    dist = 1.0 - normed @ normed.T  # n n
    chosen = [int(dist.topk(2, dim=0, largest=False).values[1].argmax())]
    nearest = dist[chosen[0]].clone()
    for _ in range(1, keep):
        nxt = int(nearest.argmax())
        chosen.append(nxt)
        nearest = torch.minimum(nearest, dist[nxt])
    return torch.tensor(sorted(chosen), device=tokens.device)


@register_reducer("divprune")
class DivPrune(VisionReducer):
    def matrix(self, signals: VisionSignals, project=None) -> torch.Tensor:
        patches = signals.hidden[:, 1:]
        tokens = project(patches) if project is not None else patches
        idx = torch.stack([divprune_indices(t, self.keep) for t in tokens]) + 1
        return one_hot_rows(idx, signals.hidden.shape[1])
