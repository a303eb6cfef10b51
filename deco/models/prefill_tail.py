"""Prefill without the last decoder layer's work on positions whose outputs nothing reads.

A prefill needs two things from the prompt: every layer's keys and values (the cache the decode steps attend to)
and the last position's logits. The last decoder layer's keys and values come from its input at every position,
but its query, attention output, output projection and MLP are read only at the last position: for the other
positions they feed nothing (transformers computes them all, then keeps the last row for the logits). `last_tail`
swaps the last layer for `TailLayer` during a prefill call: the same modules (norms, projections, rotary
embedding, the configured attention function, MLP) on the same inputs, keys and values for every position into
the cache, everything else for the last position only.

The saving is that layer's share of the prefill less its key/value projections: about 1 / depth of the LLM's
prefill (~20 % of it at 4 layers, ~3 % at 32). Decoded tokens are those of the full prefill
(tests/models/test_prefill_tail.py compares them on ragged batches, eager and SDPA; the benchmark's figure 7
checks deco == transformers); the last position's values can differ from the full call's in float rounding only
(its matrix products run at another shape). Used by `generation.greedy_decode` for its per-row prefill and by
FastV's pruned prefill (`reduction.llm_runner`; a 4-D mask is cut to the last query's row), for LLMs whose layers
it knows (Llama, Qwen2, Qwen3 without
sliding windows, this transformers' layer API); others keep the full call.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager

import torch
from torch import nn

KNOWN = ("llama", "qwen2", "qwen3")


def _decoder(llm: nn.Module):
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return getattr(base, "model", None), getattr(base, "config", None)


def supported(llm: nn.Module) -> bool:
    """Whether `last_tail` applies to this LLM (else the full prefill is used)."""
    decoder, config = _decoder(llm)
    layers = getattr(decoder, "layers", None)
    if config is None or getattr(config, "model_type", None) not in KNOWN or not layers:
        return False
    layer = layers[-1]
    attn = getattr(layer, "self_attn", None)
    needed = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling", "layer_idx", "config")
    if attn is None or not all(hasattr(attn, a) for a in needed) or getattr(attn, "sliding_window", None):
        return False
    if not all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")):
        return False
    module = sys.modules[type(attn).__module__]
    params = inspect.signature(type(layer).forward).parameters
    returns_tensor = inspect.signature(type(layer).forward).return_annotation in ("torch.Tensor", torch.Tensor)
    return (
        returns_tensor
        and "cache" in params
        and all(
            hasattr(module, f) for f in ("apply_rotary_pos_emb", "eager_attention_forward", "ALL_ATTENTION_FUNCTIONS")
        )
    )


class TailLayer(nn.Module):
    """The last decoder layer computing keys/values for every position and its output for the last one only."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        position_ids=None,
        cache=None,
        use_cache=False,
        position_embeddings=None,
        **kwargs,
    ):
        layer, attn = self.layer, self.layer.self_attn
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        module = sys.modules[type(attn).__module__]
        b, t, _ = hidden_states.shape
        x = layer.input_layernorm(hidden_states)
        shape, last = (b, t, -1, attn.head_dim), (b, 1, -1, attn.head_dim)
        query = attn.q_proj(x[:, -1:]).view(last)
        key = attn.k_proj(x).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3: RMS norm over the head dim before the rotation
            query, key = attn.q_norm(query), attn.k_norm(key)
        query, key = query.transpose(1, 2), key.transpose(1, 2)
        value = attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        query = module.apply_rotary_pos_emb(query, query, cos[:, -1:], sin[:, -1:])[0]
        key = module.apply_rotary_pos_emb(key, key, cos, sin)[1]
        if cache is not None:
            key, value = cache.update(key, value, attn.layer_idx, kwargs=kwargs)
        if attention_mask is not None and attention_mask.dim() >= 3:
            attention_mask = attention_mask[..., -1:, :]  # the last query's row
        interface = module.ALL_ATTENTION_FUNCTIONS.get_interface(
            attn.config._attn_implementation, module.eager_attention_forward
        )
        out, _ = interface(
            attn,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0,
            scaling=attn.scaling,
            position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = hidden_states[:, -1:] + attn.o_proj(out.reshape(b, 1, -1).contiguous())
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


@contextmanager
def last_tail(llm: nn.Module, enabled: bool = True):
    """Inside, the LLM's last decoder layer is a `TailLayer` (when `enabled` and `supported`); yields whether."""
    if not (enabled and supported(llm)):
        yield False
        return
    layers = _decoder(llm)[0].layers
    original = layers[-1]
    layers[-1] = TailLayer(original)
    try:
        yield True
    finally:
        layers[-1] = original
