"""VisionZip (Yang et al., CVPR 2025; dvlab-research/VisionZip, `visionzip/clip_encoder.py`).

Dominant tokens: [CLS] plus the `dominant - 1` patches with the largest [CLS] attention summed over heads, at
the tower's selected layer (VisionZip reads `attentions[-2]`, the layer whose output LLaVA feeds the projector),
kept in index order. Contextual tokens: the remaining tokens, L2-normalised by their head-mean keys of that
layer, are split into `contextual` targets (every `max(1, r // contextual)`-th remaining token, the first
`contextual` of them) and the rest, each assigned to its most cosine-similar target; a contextual token is its
target plus the *mean* of the tokens assigned to it (VisionZip's `target_hidden + aggregated_hidden`).
Output: [CLS, dominant patches in index order, contextual tokens in target order], `keep = dominant + contextual`.
The authors' budgets are 54 + 10 = 64, 108 + 20 = 128 and 162 + 30 = 192; `contextual: null` keeps that
ratio (round(keep * 10 / 64)).
"""

from __future__ import annotations

import torch

from deco.models.reduction.base import ReductionConfigError, VisionReducer, VisionSignals, register_reducer


@register_reducer("visionzip")
class VisionZip(VisionReducer):
    knobs = ("contextual",)

    def __init__(self, keep: int, contextual: int | None = None):
        super().__init__(keep)
        self.contextual = round(keep * 10 / 64) if contextual is None else contextual

    @property
    def dominant(self) -> int:
        return self.keep - self.contextual

    def check_static(self) -> None:
        super().check_static()
        if not 1 <= self.contextual < self.keep:
            raise ReductionConfigError(
                f"reduction.contextual={self.contextual} must be between 1 and keep - 1 = {self.keep - 1} "
                "(keep = dominant tokens, [CLS] included, + contextual tokens)")

    def matrix(self, signals: VisionSignals, project=None) -> torch.Tensor:
        hidden, keys = signals.hidden, signals.keys
        b, total = hidden.shape[:2]
        scores = signals.cls_attn.sum(1)  # b n: [CLS] attention summed over heads
        top = scores.topk(self.dominant - 1, dim=1).indices + 1  # positions in [CLS, patches]
        rows = []
        for i in range(b):
            kept = torch.zeros(total, dtype=torch.bool, device=hidden.device)
            kept[0] = True
            kept[top[i]] = True
            dominant = kept.nonzero().flatten()  # index order, [CLS] first
            rest = (~kept).nonzero().flatten()  # r
            metric = keys[i, rest].float()
            metric = metric / metric.norm(dim=-1, keepdim=True)
            step = max(1, len(rest) // self.contextual)
            targets = torch.arange(0, len(rest), step, device=hidden.device)[: self.contextual]
            is_target = torch.isin(torch.arange(len(rest), device=hidden.device), targets)
            sim = metric[~is_target] @ metric[targets].T  # m c
            assign = torch.zeros_like(sim).scatter_(1, sim.argmax(1, keepdim=True), 1.0)  # m c one-hot
            counts = assign.sum(0).clamp(min=1)  # c
            mat = torch.zeros(self.keep, total, device=hidden.device)
            mat[torch.arange(len(dominant)), dominant] = 1.0
            ctx = mat[len(dominant):]
            ctx[torch.arange(len(targets)), rest[targets]] = 1.0
            ctx[:, rest[~is_target]] += (assign / counts).T
            rows.append(mat)
        return torch.stack(rows)
