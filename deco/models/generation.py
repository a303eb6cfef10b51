"""Greedy decoding for the MLLM: a preallocated KV cache and a prefill strategy chosen per device.

The prompt (left-padded, visual tokens merged in) is prefilled, then every row decodes one token per step
into the same cache. Two choices change the cost, not the tokens:

* **cache** — "static" (default) preallocates prompt + new tokens once (transformers' `StaticCache`) and
  writes each step in place; "dynamic" is transformers' default cache, which concatenates every layer's keys
  and values on every step (~40 % of a decode step on CPU at 600+ prompt tokens).
* **prefill** — "batched" runs the padded batch in one call (best on a GPU, where batching is free);
  "rows" runs each distinct prompt length once without padding (rows of equal length share a call) and
  copies the keys and values into the batch's cache, right-aligned as the padded call would have put them.
  On a CPU a padded call pays for its padding and, with padding present, loses SDPA's causal fast path:
  at 576 visual tokens it cost 1.24-1.76x as much as prefilling the rows one by one.
  "auto" (default) picks "batched" on CUDA and "rows" elsewhere.

Both paths compute every real token's keys and values from the same inputs and positions, and padding is
masked out of every softmax, so the decoded tokens are those of the padded dynamic-cache loop
(tests/models/test_generation.py checks it on ragged batches, eager and SDPA). The per-row prefill also skips the
last decoder layer's work on every position but the last, whose outputs nothing reads (`tail`,
deco/models/prefill_tail.py: ~1 / depth of the LLM's prefill).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from deco.models.prefill_tail import last_tail

CACHES = ("static", "dynamic")
PREFILLS = ("auto", "batched", "rows")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only attended tokens (b t), so left-padded rows start at 0."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def choose_prefill(prefill: str, device: torch.device) -> str:
    """ "auto" -> "batched" on CUDA (padding costs little next to the parallelism), "rows" on CPU."""
    if prefill not in PREFILLS:
        raise ValueError(f"prefill='{prefill}' is unknown; choose one of: {', '.join(PREFILLS)}")
    if prefill == "auto":
        return "batched" if device.type == "cuda" else "rows"
    return prefill


def _base(llm: nn.Module) -> nn.Module:
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def cache_keyword(llm: nn.Module) -> str:
    """transformers >= 5.2x names the KV cache `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(_base(llm).forward).parameters else "past_key_values"


def last_logits_only(llm: nn.Module) -> dict[str, int]:
    """Ask the LLM for the last position's logits only (saves a b x T x vocab tensor on the prompt)."""
    params = inspect.signature(_base(llm).forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def new_cache(llm: nn.Module, kind: str, max_len: int):
    """An empty KV cache: StaticCache holding `max_len` positions, or a DynamicCache."""
    if kind not in CACHES:
        raise ValueError(f"cache='{kind}' is unknown; choose one of: {', '.join(CACHES)}")
    from transformers import DynamicCache, StaticCache

    if kind == "dynamic":
        return DynamicCache()
    return StaticCache(config=_base(llm).config, max_cache_len=max_len)


class _LLMCalls:
    """The LLM's forward with this transformers version's keyword names."""

    def __init__(self, llm: nn.Module):
        self.llm, self.cache_kw, self.extra = llm, cache_keyword(llm), last_logits_only(llm)

    def __call__(self, embeds, positions, mask=None, cache=None):
        kwargs = {self.cache_kw: cache} if cache is not None else {}
        out = self.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs, **self.extra
        )
        return out.logits[:, -1], cache_of(out)


def prefill_rows(call: _LLMCalls, embeds: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Prefill each distinct prompt length unpadded, then write keys/values into `cache` right-aligned.

    Returns the last position's logits (b vocab). Padding columns of the cache hold zeros (masked anyway).
    """
    b, n, _ = embeds.shape
    lengths = mask.long().sum(1)
    if bool((lengths == 0).any()):
        raise ValueError(f"rows {(lengths == 0).nonzero().flatten().tolist()} of attention_mask are all padding")
    logits, parts = None, []
    for length in sorted(set(lengths.tolist()), reverse=True):
        rows = (lengths == length).nonzero().flatten()
        positions = torch.arange(length, device=embeds.device).expand(len(rows), length)
        row_logits, row_cache = call(embeds[rows, n - length :], positions)  # no padding: no mask needed
        if logits is None:
            logits = row_logits.new_empty(b, row_logits.shape[-1])
        logits[rows] = row_logits
        parts.append((rows, length, row_cache))
    for layer in range(len(parts[0][2].layers)):
        rows_kv = [(rows, length, c.layers[layer].keys, c.layers[layer].values) for rows, length, c in parts]
        if not _write_static_layer(cache, layer, rows_kv, b, n):
            k0, v0 = rows_kv[0][2], rows_kv[0][3]
            keys = k0.new_zeros(b, k0.shape[1], n, k0.shape[-1])
            values = v0.new_zeros(b, v0.shape[1], n, v0.shape[-1])
            for rows, length, k, v in rows_kv:
                keys[rows, :, n - length :] = k
                values[rows, :, n - length :] = v
            cache.update(keys, values, layer)
    return logits


def _write_static_layer(cache, layer: int, rows_kv: list, b: int, n: int) -> bool:
    """Write the rows' keys/values straight into a StaticCache layer's zeroed buffers (one copy instead of
    three: ~7 % of a CPU prefill at 600 tokens); False for other caches, which take `update`."""
    lay = cache.layers[layer] if len(getattr(cache, "layers", ())) > layer else None
    if lay is None or not all(hasattr(lay, a) for a in ("max_cache_len", "cumulative_length", "lazy_initialization")):
        return False
    k0, v0 = rows_kv[0][2], rows_kv[0][3]
    if not lay.is_initialized:  # allocates zeros: b heads max_cache_len head_dim
        lay.lazy_initialization(
            k0.new_empty(b, k0.shape[1], 1, k0.shape[-1]), v0.new_empty(b, v0.shape[1], 1, v0.shape[-1])
        )
    for rows, length, k, v in rows_kv:
        lay.keys[rows, :, n - length : n] = k
        lay.values[rows, :, n - length : n] = v
    lay.cumulative_length.fill_(n)
    return True


@torch.no_grad()
def greedy_decode(
    llm: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: list[int],
    pad: int,
    cache: str = "static",
    prefill: str = "auto",
    tail: bool = True,
) -> torch.Tensor:
    """Greedy decoding from left-padded prompt embeddings (b n d) and mask (b n); returns new tokens (b, <= N).

    Rows that produced an EOS id continue with `pad`; decoding stops once every row has produced one.
    tail: the per-row prefill skips the last layer's work on positions nothing reads (deco.models.prefill_tail).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = embeds.device
    b, n, _ = embeds.shape
    strategy = choose_prefill(prefill, device)
    call = _LLMCalls(llm)
    kv = new_cache(llm, cache, max_len=n + max_new_tokens - 1)  # the last new token is never fed back
    if strategy == "rows":
        with last_tail(llm, tail):
            logits = prefill_rows(call, embeds, mask, kv)
    else:
        logits, kv = call(embeds, position_ids_from_mask(mask), mask, kv)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    full_mask = torch.cat([mask, mask.new_ones(b, max_new_tokens - 1)], dim=1)  # grows by one column a step
    next_positions = mask.long().sum(1, keepdim=True)  # left padding: row i's next position is its length
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    embed = llm.get_input_embeddings()
    new_tokens = []
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad), token)
        new_tokens.append(token)
        if eos.numel():
            finished |= torch.isin(token, eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        logits, kv = call(embed(token)[:, None], next_positions, full_mask[:, : n + step + 1], kv)
        next_positions = next_positions + 1
    return torch.stack(new_tokens, dim=1)
