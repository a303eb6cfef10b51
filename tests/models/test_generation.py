"""Generation paths (static / dynamic KV cache x batched / per-row prefill) decode the same tokens as the
padded dynamic-cache loop MLLM.generate used before, and as greedy decoding by full recomputation, on a
ragged batch (three prompt lengths, one text-only row, two rows of equal length) with eager and SDPA."""

import pytest
import torch
from test_mllm import IMG, pad_rows

from deco.models.attention import set_attention
from deco.models.generation import choose_prefill, greedy_decode, new_cache, prefill_rows

# ragged: lengths 5, 3, 4, 5 (rows 0 and 3 share a prefill call); row 2 is text-only
RAGGED = [[5, 6, IMG, 7, 8], [9, IMG, 10], [11, 12, 13, 14], [15, IMG, 16, 17, 18]]
PATHS = [("static", "rows"), ("static", "batched"), ("dynamic", "rows"), ("dynamic", "batched")]


@pytest.fixture(scope="module")
def gen_model():
    from test_mllm import make_model

    return make_model("avgpool", seed=3)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(len(RAGGED), 3, 56, 56, generator=torch.Generator().manual_seed(0))


def recomputed(model, rows, pixels, n):
    """Greedy decoding by full recomputation, one row at a time (no cache, no padding)."""
    out = []
    with torch.no_grad():
        for i, r in enumerate(rows):
            seq = list(r)
            for _ in range(n):
                seq.append(int(model(torch.tensor([seq]), None, pixels[i : i + 1]).logits[0, -1].argmax()))
            out.append(seq[len(r) :])
    return torch.tensor(out)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_every_path_decodes_the_same_tokens(gen_model, pixels, attn):
    set_attention(gen_model, attn)
    ids, mask = pad_rows(RAGGED, "left")
    reference = recomputed(gen_model, RAGGED, pixels, 7)
    for cache, prefill in PATHS:
        out = gen_model.generate(ids, mask, pixels, max_new_tokens=7, cache=cache, prefill=prefill)
        assert torch.equal(out, reference), (attn, cache, prefill, out, reference)


def test_rows_prefill_writes_the_padded_calls_cache(gen_model, pixels):
    """Per-row prefill leaves the batched call's keys/values on real columns, zeros on padding, and the
    same last logits."""
    set_attention(gen_model, "sdpa")
    ids, mask = pad_rows(RAGGED, "left")
    embeds, merged, _, _ = gen_model.prepare_inputs_embeds(ids, mask, pixels, padding_side="left")
    n = embeds.shape[1]
    with torch.no_grad():
        from deco.models.generation import _LLMCalls, position_ids_from_mask

        call = _LLMCalls(gen_model.llm)
        rows_cache = new_cache(gen_model.llm, "static", n + 3)
        rows_logits = prefill_rows(call, embeds, merged, rows_cache)
        batched_logits, batched_cache = call(embeds, position_ids_from_mask(merged), merged,
                                             new_cache(gen_model.llm, "static", n + 3))
    torch.testing.assert_close(rows_logits, batched_logits, rtol=1e-4, atol=1e-5)
    real = merged.bool()[:, None, :, None]  # b 1 n 1
    for mine, theirs in zip(rows_cache.layers, batched_cache.layers):
        assert int(mine.get_seq_length()) == n == int(theirs.get_seq_length())
        for a, b in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
            assert a.shape == (len(RAGGED), b.shape[1], n + 3, b.shape[-1])
            torch.testing.assert_close(a[..., :n, :] * real, b[..., :n, :] * real, rtol=1e-4, atol=1e-5)
            assert bool((a[..., :n, :][~real.expand_as(a[..., :n, :])] == 0).all())


def test_eos_and_padding_on_the_static_rows_path(gen_model, pixels):
    ids, mask = pad_rows(RAGGED, "left")
    free = gen_model.generate(ids, mask, pixels, max_new_tokens=5, cache="dynamic", prefill="batched")
    eos = int(free[1, 1])
    out = gen_model.generate(ids, mask, pixels, max_new_tokens=5, eos_token_id=eos, pad_token_id=0)
    for i in range(len(RAGGED)):
        hits = (free[i] == eos).nonzero().flatten()
        stop = int(hits[0]) + 1 if len(hits) else 5
        assert torch.equal(out[i, :stop], free[i, :stop]) and bool((out[i, stop:] == 0).all())
    assert gen_model.generate(ids, mask, pixels, max_new_tokens=1).shape == (len(RAGGED), 1)


def test_strategy_choice_and_bad_names(gen_model):
    assert choose_prefill("auto", torch.device("cpu")) == "rows"
    assert choose_prefill("auto", torch.device("cuda")) == "batched"
    assert choose_prefill("batched", torch.device("cpu")) == "batched"
    with pytest.raises(ValueError, match="prefill='padded' is unknown"):
        choose_prefill("padded", torch.device("cpu"))
    embeds, mask = torch.zeros(1, 2, 64), torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="cache='paged' is unknown"):
        greedy_decode(gen_model.llm, embeds, mask, 2, [], 0, cache="paged")
    with pytest.raises(ValueError, match=r"rows \[0\] of attention_mask are all padding"):
        greedy_decode(gen_model.llm, embeds, torch.zeros_like(mask), 2, [], 0)


def test_generate_refuses_zero_new_tokens(gen_model, pixels):
    ids, mask = pad_rows(RAGGED[:1], "left")
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        gen_model.generate(ids, mask, pixels[:1], max_new_tokens=0)
