"""Prefill FLOPs and KV-cache bytes of a Llama-family LLM, per layer token count (the formula of docs/reduction.md).

Papers quote the same LLaVA-1.5-7B 576-token prefill as 10.1, 8.0 or 4.62 TFLOPs because they count
differently (multiply-accumulates or FLOPs, a two- or three-matrix MLP, the text tokens or not, causal halving).
Here, written once and used everywhere: FLOPs = 2 x multiply-accumulates, every prompt token counted, per layer
with n tokens, width d, query width d_q = heads x head_dim, key/value width d_kv = kv_heads x head_dim, MLP width m:

    projections  2 n d (d_q + 2 d_kv) + 2 n d_q d         (q, k, v, o)
    attention    4 n^2 d_q                               (q k^T and A v, the full n x n square: no causal halving)
    MLP          6 n d m                                 (SwiGLU: gate, up, down)

plus the LM head on the last position only, 2 d V. A reducer that drops tokens inside the LLM (FastV) gives
layers < K the full count and layers >= K the kept count. Vision tower, projector and the reducer's own work
are not in this number (they are in the measured time to first token). KV cache: 2 (k and v) x n_l x d_kv x
bytes per element, summed over layers, after the prefill.
"""

from __future__ import annotations

FORMULA = ("sum over layers of [2 n d (d_q + 2 d_kv) + 2 n d_q d + 4 n^2 d_q + 6 n d m] + 2 d V; "
           "n = tokens in that layer, FLOPs = 2 x MACs, full n x n attention")


def _dims(config) -> dict:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return {"d": config.hidden_size, "dq": heads * head_dim, "dkv": kv_heads * head_dim,
            "m": config.intermediate_size, "V": config.vocab_size, "L": config.num_hidden_layers}


def layer_tokens(config, prompt_tokens: int, reducer=None, visual_tokens: int | None = None) -> list[int]:
    """Tokens each LLM layer processes in prefill (FastV: the kept count after layer K)."""
    layers = _dims(config)["L"]
    if reducer is None or reducer.stage != "llm" or visual_tokens is None:
        return [prompt_tokens] * layers
    pruned = prompt_tokens - (visual_tokens - reducer.keep)
    return [prompt_tokens] * reducer.layer + [pruned] * (layers - reducer.layer)


def prefill_flops(config, tokens_per_layer: list[int]) -> int:
    """FLOPs of one prefill (the formula above)."""
    k = _dims(config)
    total = 2 * k["d"] * k["V"]
    for n in tokens_per_layer:
        total += 2 * n * k["d"] * (k["dq"] + 2 * k["dkv"]) + 2 * n * k["dq"] * k["d"]
        total += 4 * n * n * k["dq"] + 6 * n * k["d"] * k["m"]
    return total


def kv_cache_bytes(config, tokens_per_layer: list[int], bytes_per_element: int) -> int:
    """Bytes the KV cache holds after the prefill."""
    return sum(2 * n * _dims(config)["dkv"] * bytes_per_element for n in tokens_per_layer)
