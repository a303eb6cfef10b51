"""The LLM run layer by layer, for reducers that drop tokens inside it (FastV), with a consistent KV cache.

Prefill runs layers 0..K-1 on the whole prompt; the attention of layer K-1 from the prompt's last token is
recomputed from that layer's input (`input_layernorm`, `q_proj` / `k_proj`, RoPE: one query row, so the model
keeps its SDPA kernel); the reducer picks the image tokens to keep; layers K..L-1 run on the kept tokens only.
Positions: the kept tokens keep their **original** position ids (FastV's code sets `position_ids =
keep_indexs`), and decoding continues from the unpruned length. KV cache: a DynamicCache whose layers < K hold
every prompt token and layers >= K only the kept ones (as FastV's KV-cache variant), each layer group with its
own attention mask; decode steps append one token to every layer. Llama-family decoders (the tiny zoo LLM,
Vicuna) are supported: `model.layers`, `model.rotary_emb`, `model.norm`, `lm_head`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from deco.models.generation import _base, position_ids_from_mask
from deco.models.prefill_tail import last_tail


def _parts(llm: nn.Module):
    base = _base(llm)
    model = getattr(base, "model", None)
    if model is None or not all(hasattr(model, a) for a in ("layers", "rotary_emb", "norm")):
        raise ValueError(
            f"in-LLM reduction needs a Llama-family decoder (model.layers, rotary_emb, norm); got {type(base).__name__}"
        )
    return model, base.lm_head


def _cache_kw(layer: nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(layer.forward).parameters else "past_key_values"


def attention_mask_4d(key_mask: torch.Tensor, q_len: int, dtype: torch.dtype, impl: str | None) -> torch.Tensor | None:
    """Additive b 1 q kv mask: query i (the last q of kv positions) sees keys <= its own that key_mask keeps.

    None where the kernel's own causal path is exact (no padding and SDPA prefill, or a single query).
    """
    b, kv = key_mask.shape
    if bool(key_mask.all()) and (q_len == 1 or (q_len == kv and impl == "sdpa")):
        return None
    query_at = torch.arange(kv - q_len, kv, device=key_mask.device)[:, None]  # q 1
    allowed = (torch.arange(kv, device=key_mask.device)[None, :] <= query_at)[None] & key_mask[:, None, :].bool()
    mask = torch.zeros(b, 1, q_len, kv, dtype=dtype, device=key_mask.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


def run_layers(
    llm: nn.Module, layers: range, hidden: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor, cache
) -> torch.Tensor:
    model, _ = _parts(llm)
    impl = getattr(_base(llm).config, "_attn_implementation", None)
    mask = attention_mask_4d(key_mask, hidden.shape[1], hidden.dtype, impl)
    pe = model.rotary_emb(hidden, positions)
    for i in layers:
        layer = model.layers[i]
        kwargs = {_cache_kw(layer): cache} if cache is not None else {}
        out = layer(
            hidden,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=pe,
            use_cache=cache is not None,
            **kwargs,
        )
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def last_token_attention(
    llm: nn.Module, layer_idx: int, hidden: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor
) -> torch.Tensor:
    """b T: layer `layer_idx`'s attention probabilities from the last position, mean over heads, recomputed
    from the layer's input `hidden` (b T d) as eager attention would return them."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    model, _ = _parts(llm)
    layer = model.layers[layer_idx]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    b, t, _ = x.shape
    q = attn.q_proj(x[:, -1:]).view(b, 1, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)
    cos, sin = model.rotary_emb(hidden, positions)
    q, _ = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    scores = (q @ k.transpose(-1, -2)).float() * attn.scaling  # b h 1 T
    scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)[:, :, 0].mean(1)  # b T


def ranking_attention(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, layer: int, cache=None):
    """(hidden after layers 0..K-2, b T: layer K-1's attention from the last position): what FastV ranks by.
    Shared by the pruned forwards and deco.explain's FastV relevance, so both keep the same tokens."""
    positions = position_ids_from_mask(mask)
    hidden = run_layers(llm, range(layer - 1), embeds, positions, mask, cache)
    return hidden, last_token_attention(llm, layer - 1, hidden, positions, mask)


def logits_last(llm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    model, head = _parts(llm)
    return head(model.norm(hidden[:, -1:]))[:, 0]


@dataclass
class PrunedState:
    """What decoding needs after a pruned prefill (b rows)."""

    full_mask: torch.Tensor  # b T: key mask of layers < K
    pruned_mask: torch.Tensor  # b T': key mask of layers >= K
    next_positions: torch.Tensor  # b 1: original position of the next token
    kept: torch.Tensor  # b T' original column of each pruned column (-1: padding)
    layer: int


def gather_kept(keep_cols: list[torch.Tensor], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row kept columns -> (b T' columns, left-padded with -1; b T' mask)."""
    width = max(len(c) for c in keep_cols)
    cols = torch.full((len(keep_cols), width), -1, dtype=torch.long, device=keep_cols[0].device)
    for i, c in enumerate(keep_cols):
        cols[i, width - len(c) :] = c
    return cols, cols >= 0


def _pruned_hidden(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, layer: int, choose, cache):
    """Every layer over the prompt, pruned before `layer` by `choose(attn of the last token after layer - 1)`;
    kept tokens keep their original position ids. Returns (hidden b T' d, kept columns b T', kept mask b T')."""
    model, _ = _parts(llm)
    b, t, _ = embeds.shape
    positions = position_ids_from_mask(mask)
    hidden, attn = ranking_attention(llm, embeds, mask, layer, cache)
    hidden = run_layers(llm, range(layer - 1, layer), hidden, positions, mask, cache)
    cols, kept_mask = gather_kept(choose(attn), t)
    safe = cols.clamp(min=0)
    rows = torch.arange(b, device=embeds.device)[:, None]
    pruned_positions = positions[rows, safe].masked_fill(~kept_mask, 1)
    hidden = run_layers(
        llm, range(layer, len(model.layers)), hidden[rows, safe], pruned_positions, kept_mask.long(), cache
    )
    return hidden, cols, kept_mask


def pruned_prefill(
    llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, layer: int, choose, cache, tail: bool = True
):
    """Prefill with pruning before `layer`; `choose(attn b T) -> list of kept columns per row` (sorted).
    tail: the last layer (in the pruned group) works on the last position only, keys/values on every kept one,
    as `greedy_decode`'s prefill does (deco.models.prefill_tail), so efficiency comparisons stay like with like.

    Returns (last logits b V, PrunedState)."""
    model, _ = _parts(llm)
    with last_tail(llm, tail and layer < len(model.layers)):  # the ranking layers stay whole
        hidden, cols, kept_mask = _pruned_hidden(llm, embeds, mask, layer, choose, cache)
    state = PrunedState(
        full_mask=mask.long(),
        pruned_mask=kept_mask.long(),
        next_positions=mask.long().sum(1, keepdim=True),
        kept=cols,
        layer=layer,
    )
    return logits_last(llm, hidden), state


def pruned_decode_step(llm: nn.Module, token_embeds: torch.Tensor, state: PrunedState, cache) -> torch.Tensor:
    """One decode step (b 1 d) through both layer groups; returns logits b V and advances `state`."""
    model, _ = _parts(llm)
    ones = state.full_mask.new_ones(state.full_mask.shape[0], 1)
    state.full_mask = torch.cat([state.full_mask, ones], 1)
    state.pruned_mask = torch.cat([state.pruned_mask, ones], 1)
    pos = state.next_positions
    hidden = run_layers(llm, range(state.layer), token_embeds, pos, state.full_mask, cache)
    hidden = run_layers(llm, range(state.layer, len(model.layers)), hidden, pos, state.pruned_mask, cache)
    state.next_positions = pos + 1
    return logits_last(llm, hidden)


@torch.no_grad()
def pruned_greedy_decode(
    llm: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    layer: int,
    choose,
    max_new_tokens: int,
    eos_ids: list[int],
    pad: int,
    tail: bool = True,
) -> torch.Tensor:
    """Greedy decoding (as deco.models.generation.greedy_decode) with a pruned prefill; b <= max_new_tokens."""
    from transformers import DynamicCache

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    cache = DynamicCache()
    logits, state = pruned_prefill(llm, embeds, mask, layer, choose, cache, tail)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=embeds.device)
    finished = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    embed = llm.get_input_embeddings()
    new_tokens = []
    for step in range(max_new_tokens):
        token = torch.where(finished, torch.full_like(logits[:, 0], pad, dtype=torch.long), logits.argmax(-1))
        new_tokens.append(token)
        if eos.numel():
            finished |= torch.isin(token, eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        logits = pruned_decode_step(llm, embed(token)[:, None], state, cache)
    return torch.stack(new_tokens, dim=1)


@dataclass
class PrunedOutput:
    """Teacher-forced logits of a pruned forward, at the original columns (b T V); dropped columns hold zeros."""

    logits: torch.Tensor
    kept: torch.Tensor  # b T': original column of each kept position (-1: padding)


def pruned_forward(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, layer: int, choose) -> PrunedOutput:
    """Whole-sequence forward without cache, pruned before `layer` by the attention of the sequence's last token
    (FastV without KV cache); logits of every kept position, scattered back to its original column."""
    model, head = _parts(llm)
    b, t, _ = embeds.shape
    hidden, cols, kept_mask = _pruned_hidden(llm, embeds, mask, layer, choose, None)
    rows = torch.arange(b, device=embeds.device)[:, None]
    logits = head(model.norm(hidden))  # b T' V
    full = logits.new_zeros(b, t, logits.shape[-1])
    full[rows.expand_as(cols)[kept_mask], cols[kept_mask]] = logits[kept_mask]
    return PrunedOutput(logits=full, kept=cols)
