"""Next-token loss with a choice of reduction.

`token` (transformers' default) averages over every answer token of the batch, so a 26-token box answer
weighs 6x a one-word answer; `sample` averages within each sample first, then over the batch, so each
question counts once whatever its answer length (LLaVA-style data mixes one-word and long answers).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

REDUCTIONS = ("token", "sample")


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token",
                    ignore_index: int = -100) -> torch.Tensor:
    """logits (b t v), labels (b t) aligned with the inputs (shifted here) -> scalar loss."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction '{reduction}' is unknown; choose one of: {', '.join(REDUCTIONS)}")
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")
    valid = (labels != ignore_index).float()  # b t
    if reduction == "token":
        return (per_token * valid).sum() / valid.sum().clamp(min=1)
    counts = valid.sum(1)
    per_sample = (per_token * valid).sum(1) / counts.clamp(min=1)
    has = counts > 0
    return per_sample[has].mean() if bool(has.any()) else per_token.sum() * 0.0
