"""The vision tower's signals for pre-LLM reducers, read without switching the tower to eager attention.

One forward of the tower (any attention kernel) with a hook on the selected layer's `layer_norm1` keeps that
layer's attention input; the [CLS] row of its attention is then recomputed from `q_proj` / `k_proj` (one query
row per head, softmax over the 1 + n keys: the same numbers eager attention returns, checked in
tests/models/test_reduction_signals.py). The [CLS] token is kept here even when the tower's features drop it
(`select_feature=patch`): VisionZip keeps it as a token, PruMerge and VisionZip rank patches by its attention.
PruMerge reads the *next* layer's full-width q.k (LLaVA-PruMerge hooks CLIP-L's layer 23, whose input is the
penultimate layer's output), computed here from the selected hidden states with that layer's weights.
"""

from __future__ import annotations

import torch

from deco.models.reduction.base import VisionSignals


def _clip(tower):
    return getattr(tower.model, "vision_model", tower.model)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # b s (h d) -> b h s d
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def vision_signals(tower, pixel_values: torch.Tensor, next_layer: bool = False) -> VisionSignals:
    """Selected hidden states with [CLS], its per-head [CLS] attention and mean keys; optionally the next
    layer's full-width [CLS] attention and keys (PruMerge)."""
    clip = _clip(tower)
    used = tower.layers_used
    if used < 1:
        raise ValueError("training-free reduction needs the tower's attention: select_layer must pick an encoder "
                         f"layer, not the embeddings (select_layer={tower.select_layer})")
    layer = clip.encoder.layers[used - 1]
    seen: list[torch.Tensor] = []
    hook = layer.layer_norm1.register_forward_hook(lambda _m, _i, out: seen.append(out))
    select = tower.select_feature
    try:
        tower.select_feature = "cls_patch"  # keep [CLS] in the returned hidden states
        hidden = tower(pixel_values)  # b 1+n d
    finally:
        tower.select_feature = select
        hook.remove()
    attn = layer.self_attn
    x = seen[-1]
    heads = attn.num_heads
    q = _heads(attn.q_proj(x[:, :1]), heads) * attn.scale  # b h 1 d
    k = _heads(attn.k_proj(x), heads)  # b h 1+n d
    probs = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1)[:, :, 0]  # b h 1+n
    signals = VisionSignals(hidden=hidden, cls_attn=probs[:, :, 1:], keys=k.mean(1))
    if next_layer:
        if used >= len(clip.encoder.layers):
            raise ValueError("PruMerge+ reads the layer after select_layer, but the tower selects its last layer")
        nxt = clip.encoder.layers[used]
        y = nxt.layer_norm1(hidden)
        nq, nk = nxt.self_attn.q_proj(y[:, :1]), nxt.self_attn.k_proj(y)  # b 1 d, b 1+n d
        scores = (nq @ nk.transpose(-1, -2)).float() * hidden.shape[-1] ** -0.5  # b 1 1+n
        signals.next_cls_attn = torch.softmax(scores, dim=-1)[:, 0, 1:]
        signals.next_keys = nk
    return signals
