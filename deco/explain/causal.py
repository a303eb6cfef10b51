"""Causal test of R_t2q: does knocking out the visual tokens it ranks highest hurt the answer more than chance?

Mean ablation (Neo, Ong, Torr, Geva, Krueger & Barez, "Towards interpreting visual information processing
in vision-language models", ICLR 2025): a visual token is replaced by its mean over a reference set of
images (same position, `visual_token_means`), which removes what this image put there while keeping the
token in the distribution the LLM expects. Per probe, the k = round(fraction * q) tokens with the largest
R_t2q are mean-ablated, and separately k tokens drawn at random (seeded by the probe); the teacher-forced
answer is re-scored:

* `causal_drop_top` / `causal_drop_random`: the drop of the target's mean per-token log-probability;
* `causal_flip_top` / `causal_flip_random`: 1 if the greedy (argmax) token changes at any target position.

An R_t2q that says where the answer comes from makes the top drop clearly larger than the random one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deco.data.tokenizer import IGNORE_INDEX
from deco.explain.inputs import ExplainInput
from deco.explain.llm_relevance import eval_mode
from deco.models.mllm import position_ids_from_mask


@torch.no_grad()
def image_tokens(model: nn.Module, inp: ExplainInput) -> torch.Tensor:
    """The projector's visual tokens for inp's image (1 q d)."""
    device = next(model.parameters()).device
    return model.encode_images(inp.pixel_values.to(device)[None])


def visual_token_means(model: nn.Module, inputs: Sequence[ExplainInput]) -> torch.Tensor:
    """Mean visual token per position over `inputs`' images (q d): the mean-ablation reference."""
    if not inputs:
        raise ValueError("visual_token_means needs at least one input")
    with eval_mode(model):
        return torch.cat([image_tokens(model, inp) for inp in inputs]).mean(0)


@torch.no_grad()
def answer_scores(model: nn.Module, inp: ExplainInput, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-token target log-prob (b), greedy tokens at the target positions (b k)) for visual tokens b q d."""
    device = tokens.device
    b = tokens.shape[0]
    input_ids = inp.input_ids.to(device)[None].expand(b, -1)
    labels = torch.where(inp.target_mask.to(device), inp.input_ids.to(device), IGNORE_INDEX)[None].expand(b, -1)
    embeds, mask, merged, _ = model.prepare_inputs_embeds(input_ids, None, None, labels, image_tokens=tokens)
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    positions = (merged[0] != IGNORE_INDEX).nonzero().flatten()
    logp = torch.log_softmax(logits[:, positions - 1].float(), dim=-1)  # b k V
    return logp.gather(2, merged[:, positions, None])[..., 0].mean(1), logp.argmax(-1)


def ablation_sets(r_t2q: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the k largest R_t2q (ties: lower index), k indices drawn uniformly without replacement)."""
    q = r_t2q.numel()
    if not 1 <= k <= q:
        raise ValueError(f"k={k} visual tokens to ablate, but there are {q}")
    top = torch.argsort(-r_t2q.detach().float().cpu(), stable=True)[:k]
    rand = torch.randperm(q, generator=torch.Generator().manual_seed(seed))[:k]
    return top, rand


def causal_test(model: nn.Module, inp: ExplainInput, r_t2q: torch.Tensor, means: torch.Tensor, fraction: float,
                seed: int = 0) -> dict:
    """Mean-ablate the top-k R_t2q tokens and k random ones (k = round(fraction * q), at least 1); see module doc."""
    if not 0 < fraction <= 1:
        raise ValueError(f"causal fraction must be in (0, 1], got {fraction}")
    q = r_t2q.numel()
    top, rand = ablation_sets(r_t2q, max(1, round(fraction * q)), seed)
    with eval_mode(model):
        tokens = image_tokens(model, inp)  # 1 q d
        if tokens.shape[1] != q:
            raise ValueError(f"R_t2q has {q} entries but the projector gives {tokens.shape[1]} visual tokens")
        batch = tokens.repeat(3, 1, 1)
        batch[1, top] = means[top].to(batch.dtype)
        batch[2, rand] = means[rand].to(batch.dtype)
        log_prob, greedy = answer_scores(model, inp, batch)
    flips = (greedy[1:] != greedy[:1]).any(-1).float()
    return {"causal_drop_top": float(log_prob[0] - log_prob[1]), "causal_drop_random": float(log_prob[0] - log_prob[2]),
            "causal_flip_top": float(flips[0]), "causal_flip_random": float(flips[1])}
