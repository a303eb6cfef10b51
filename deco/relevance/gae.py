"""Generic Attention-model Explainability (GAE) rules and the attention baselines, as plain tensor functions.

GAE (Chefer, Gur & Wolf, ICCV 2021, arXiv 2103.15679) propagates relevance through attention layers:
per layer, Ā = E_h[(∇A ⊙ A)^+] (eq. 5: gradient times attention, clamped *before* the head mean); a
self-attention layer updates R_ss <- R_ss + Ā R_ss (eq. 6) starting from R = I; a cross-attention layer
(s attends to q) updates R_sq <- R_sq + R̄_ssᵀ Ā_sq R̄_qq (eq. 10) with R̄ the row-normalised
self-relevance of eqs. 8-9. The baselines follow the same paper's code: `raw_attention` (last layer,
head mean, no gradients) and `attn_gradcam` (one scalar weight per head = mean gradient over the map,
clamp *after* the head mean). Shapes: attention maps are (b, heads, x, y), relevance matrices (b, x, y).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def avg_heads(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """GAE eq. 5: Ā = mean over heads of (∇A ⊙ A)^+ ; (b h x y) -> (b x y)."""
    if attn.shape != grad.shape:
        raise ValueError(f"attention {tuple(attn.shape)} and its gradient {tuple(grad.shape)} differ in shape")
    return (grad.float() * attn.float()).clamp(min=0).mean(dim=1)


def self_attention_rule(rel: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """GAE eqs. 6-7: R <- R + Ā R (rows of Ā receive, columns give); (b x x) and (b x y) -> (b x y)."""
    return rel + cam @ rel


def normalize_self_relevance(rel: torch.Tensor) -> torch.Tensor:
    """GAE eqs. 8-9: R̄ = row-normalised (R - I) + I; rows with nothing beyond the identity stay I."""
    eye = torch.eye(rel.shape[-1], dtype=rel.dtype, device=rel.device)
    residual = rel - eye
    row_sum = residual.sum(dim=-1, keepdim=True)
    residual = torch.where(row_sum > 0, residual / row_sum.clamp(min=torch.finfo(rel.dtype).tiny), 0.0)
    return residual + eye


def cross_attention_rule(
    r_sq: torch.Tensor, r_ss: torch.Tensor, cam_sq: torch.Tensor, r_qq: torch.Tensor | None = None
) -> torch.Tensor:
    """GAE eq. 10: R_sq <- R_sq + R̄_ssᵀ Ā_sq R̄_qq (R_qq = None: the q side is not propagated, R̄_qq = I)."""
    add = normalize_self_relevance(r_ss).transpose(-1, -2) @ cam_sq
    if r_qq is not None:
        add = add @ normalize_self_relevance(r_qq)
    return r_sq + torch.nan_to_num(add, nan=0.0)


def self_attention_relevance(attns: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """R (b t t) of a stack of self-attention layers, input to output, from R = I.

    `attns[l]` and `grads[l]` are (b h t t) post-softmax probabilities of layer l and dy/dA for the target y.
    For a causal LM, row i of R is how much every earlier token contributes to the output at position i.
    """
    if len(attns) == 0 or len(attns) != len(grads):
        raise ValueError(f"need one gradient per attention layer, got {len(attns)} maps and {len(grads)} gradients")
    b, _, t, _ = attns[0].shape
    rel = torch.eye(t, dtype=torch.float32, device=attns[0].device).expand(b, t, t).clone()
    for attn, grad in zip(attns, grads):
        if grad is None:
            raise ValueError("an attention gradient is None: the target does not depend on that layer's attention")
        rel = self_attention_rule(rel, avg_heads(attn.detach(), grad.detach()))
    return rel


def raw_attention(attn: torch.Tensor) -> torch.Tensor:
    """Raw-attention baseline: head-mean attention probabilities (b h x y) -> (b x y), no gradients."""
    return attn.detach().float().mean(dim=1)


def attn_gradcam(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on an attention map (Chefer's `generate_attn_gradcam`): (b h x y) -> (b x y).

    α_h = mean over the whole map of ∂y/∂A_h; cam = (mean_h α_h A_h)^+ (clamp after the head mean).
    """
    if attn.shape != grad.shape:
        raise ValueError(f"attention {tuple(attn.shape)} and its gradient {tuple(grad.shape)} differ in shape")
    alpha = grad.float().mean(dim=(2, 3), keepdim=True)  # b h 1 1
    return (alpha * attn.float()).mean(dim=1).clamp(min=0)
