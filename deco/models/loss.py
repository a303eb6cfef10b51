"""Next-token loss with a choice of reduction.

`token` (transformers' default) averages over every answer token of the batch, so a 26-token box answer
weighs 6x a one-word answer; `sample` averages within each sample first, then over the batch, so each
question counts once whatever its answer length (LLaVA-style data mixes one-word and long answers).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

REDUCTIONS = ("token", "sample")


def next_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "token", ignore_index: int = -100
) -> torch.Tensor:
    """logits (b t v), labels (b t) aligned with the inputs (shifted here) -> scalar loss."""
    _check_reduction(reduction)
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")
    valid = (labels != ignore_index).float()  # b t
    return _reduce((per_token * valid).sum(1), valid.sum(1), reduction, per_token.sum() * 0.0)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction '{reduction}' is unknown; choose one of: {', '.join(REDUCTIONS)}")


def _reduce(row_sums: torch.Tensor, counts: torch.Tensor, reduction: str, zero: torch.Tensor) -> torch.Tensor:
    """Per-row loss sums and answer-token counts (b,) -> the batch loss; `zero` (graph-connected) when no row
    has an answer token under `sample`."""
    if reduction == "token":
        return row_sums.sum() / counts.sum().clamp(min=1)
    has = counts > 0
    return (row_sums / counts.clamp(min=1))[has].mean() if bool(has.any()) else zero


# Causal LMs whose logits are exactly `get_output_embeddings()(get_decoder()(...).last_hidden_state)` (no logit
# scaling or soft-capping after the head): `answer_loss` may run the head on the answer positions alone.
PLAIN_HEAD_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def answer_loss(
    llm: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    labels: torch.Tensor,
    reduction: str = "token",
    ignore_index: int = -100,
) -> torch.Tensor:
    """`next_token_loss(llm(...).logits, labels, reduction)` with the LM head and the cross-entropy computed
    only where a label is (the answer tokens; ~1/10 of a shapes batch's positions): the same loss and
    gradients without the (b t vocab) logits. Other LLM types (and a head that is not plain) take the full path.
    """
    _check_reduction(reduction)
    config = getattr(llm, "config", None)
    head = llm.get_output_embeddings() if hasattr(llm, "get_output_embeddings") else None
    if getattr(config, "model_type", None) not in PLAIN_HEAD_TYPES or not isinstance(head, torch.nn.Linear):
        out = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids)
        return next_token_loss(out.logits, labels, reduction, ignore_index)
    hidden = llm.get_decoder()(
        inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state  # b t d
    targets = labels[:, 1:]
    keep = targets != ignore_index  # b t-1: positions whose next token is an answer token
    per_token = F.cross_entropy(head(hidden[:, :-1][keep]).float(), targets[keep], reduction="none")  # n
    rows = keep.nonzero()[:, 0]
    row_sums = torch.zeros(keep.shape[0], dtype=per_token.dtype, device=per_token.device).index_add(0, rows, per_token)
    return _reduce(row_sums, keep.sum(1), reduction, per_token.sum() * 0.0)
