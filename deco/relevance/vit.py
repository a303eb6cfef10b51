"""Relevance through a ViT (the MLLM's vision tower): patch features -> input patches.

GAE's self-attention rule (Chefer, Gur & Wolf, ICCV 2021, eqs. 5-6; the rule of their ViT explanations)
over the tower's layers up to `select_layer`: R = I, then per layer R <- R + Ā R with Ā = E_h[(∇A ⊙ A)^+].
Row i of R (1+n x 1+n, CLS first) says how much every input token contributes to the tower's output
token i. The projector reads the n patch features (rows 1..n; rows 0..n with `select_feature=cls_patch`),
and the input side that an image map can show is the n patches (columns 1..n, CLS column dropped).

`feature_to_patch_relevance` returns R_f2i (b, features, patches): GAE's normalisation of a
self-relevance before it is composed with another stage (eqs. 8-9, R̄ = row-normalised (R - I) + I, as
eq. 10 does for the image side of a cross-modal model), over the patch columns, then halved so that every
row sums to 1: half of a feature's relevance stays on its own patch, half is spread over the patches its
GAE residual names (all of it stays when the residual is empty). Normalising matters: the raw rows are
I plus terms scaled by the score's gradients, which are tiny for a weakly trained model. A map carried
through the tower, R_t2i_input = R_t2i_feature @ R_f2i, therefore has the same total as the per-feature
map: relevance is redistributed over the input patches, not created or lost. A CLS feature
(`select_feature=cls_patch`) is no patch: its row is its residual, row-normalised (zero when empty).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deco.relevance.gae import self_attention_relevance

VISION_RELEVANCE = ("none", "gae")


def feature_to_patch_relevance(attns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                               cls_feature: bool = False) -> torch.Tensor:
    """R_f2i (b, n or 1+n, n) from the tower's attention maps (b h 1+n 1+n) and d score / d map.

    `cls_feature`: the features include the CLS token first (`select_feature=cls_patch`). No layers
    (a tower whose selected layer is its input) gives the identity on the patches.
    """
    if len(attns) == 0:
        raise ValueError("no vision attention maps: the selected layer is the embeddings, nothing to propagate")
    rel = self_attention_relevance(attns, grads)  # b T T
    n = rel.shape[-1] - 1
    eye = torch.eye(n, dtype=rel.dtype, device=rel.device)
    residual = rel[:, 1:, 1:] - eye  # b n n, >= 0: R = I + non-negative terms
    patches = (_row_normalise(residual) + eye) / torch.where(residual.sum(-1, keepdim=True) > 0, 2.0, 1.0)
    if not cls_feature:
        return patches
    return torch.cat([_row_normalise(rel[:, :1, 1:]), patches], dim=1)


def _row_normalise(rows: torch.Tensor) -> torch.Tensor:
    total = rows.sum(-1, keepdim=True)
    return torch.where(total > 0, rows / total.clamp(min=torch.finfo(rows.dtype).tiny), 0.0)
