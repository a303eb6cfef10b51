"""The prefill that skips the last layer's work on positions nothing reads (deco.models.prefill_tail): the same
cache and last logits as the full prefill, and the same decoded tokens, for Llama (deco's tiny MLLM, ragged
batch, eager and SDPA) and for Qwen2 (biases, grouped-query attention) and Qwen3 (query/key norms) LLMs."""

import pytest
import torch
from test_generation import RAGGED
from test_mllm import pad_rows
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from deco.models.attention import set_attention
from deco.models.generation import _LLMCalls, greedy_decode, new_cache, prefill_rows
from deco.models.prefill_tail import TailLayer, last_tail, supported


@pytest.fixture(scope="module")
def gen_model():
    from test_mllm import make_model

    return make_model("avgpool", seed=3)


def _prefill(llm, embeds, mask, tail: bool):
    with torch.no_grad(), last_tail(llm, tail) as used:
        assert used is tail
        cache = new_cache(llm, "static", embeds.shape[1] + 2)
        logits = prefill_rows(_LLMCalls(llm), embeds, mask, cache)
    return logits, cache


def _same_prefill(llm, embeds, mask):
    full_logits, full_cache = _prefill(llm, embeds, mask, tail=False)
    tail_logits, tail_cache = _prefill(llm, embeds, mask, tail=True)
    torch.testing.assert_close(tail_logits, full_logits, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(tail_cache.layers, full_cache.layers):
        torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mine.values, theirs.values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_tail_prefill_equals_the_full_one_on_a_ragged_batch(gen_model, attn):
    set_attention(gen_model, attn)
    pixels = torch.randn(len(RAGGED), 3, 56, 56, generator=torch.Generator().manual_seed(0))
    ids, mask = pad_rows(RAGGED, "left")
    with torch.no_grad():
        embeds, merged, _, _ = gen_model.prepare_inputs_embeds(ids, mask, pixels, padding_side="left")
    assert supported(gen_model.llm)
    _same_prefill(gen_model.llm, embeds, merged)
    with torch.no_grad():
        outs = [greedy_decode(gen_model.llm, embeds, merged, 8, [], 0, tail=t) for t in (True, False)]
    assert torch.equal(outs[0], outs[1])  # the same tokens as the full prefill


def _small(kind):
    common = dict(
        vocab_size=61,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    config, model = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[kind]
    extra = {"head_dim": 8} if kind == "qwen3" else {}
    torch.manual_seed(0)
    llm = model(config(**common, **extra, attn_implementation="sdpa")).eval()
    if kind == "qwen2":
        assert llm.model.layers[-1].self_attn.q_proj.bias is not None
    return llm


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "llama"])
def test_tail_prefill_on_other_llms_with_grouped_query_attention(kind):
    llm = _small(kind)
    assert supported(llm)
    embeds = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9, [0, 0, 0, 0, 1, 1, 1, 1, 1]])
    _same_prefill(llm, embeds, mask)
    with torch.no_grad():
        outs = [greedy_decode(llm, embeds, mask, 6, [], 0, tail=t) for t in (True, False)]
    assert torch.equal(outs[0], outs[1])


def test_the_layer_is_put_back_and_unknown_llms_keep_the_full_prefill():
    llm = _small("llama")
    original = llm.model.layers[-1]
    with pytest.raises(RuntimeError, match="inside"):
        with last_tail(llm) as used:
            assert used and isinstance(llm.model.layers[-1], TailLayer)
            raise RuntimeError("inside")
    assert llm.model.layers[-1] is original
    llm.config.model_type = "gpt_neox"  # a layer layout this module does not know
    assert not supported(llm)
    with last_tail(llm) as used:
        assert not used and llm.model.layers[-1] is original
    sliding = _small("qwen2")
    sliding.model.layers[-1].self_attn.sliding_window = 4
    assert not supported(sliding)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_fastv_prefill_with_the_tail_decodes_the_same_tokens(attn, monkeypatch):
    """The pruned prefill (FastV) takes the tail too; the same tokens as its full last layer."""
    from test_reduction import deep_model

    from deco.models.reduction import build_reducer
    from deco.models.reduction.llm_runner import pruned_greedy_decode

    model = deep_model(seed=1)
    set_attention(model, attn)
    model.set_reduction(build_reducer("fastv", keep=3, layer=2))
    pixels = torch.randn(len(RAGGED), 3, 56, 56, generator=torch.Generator().manual_seed(0))
    ids, mask = pad_rows(RAGGED, "left")
    calls, forward = [], TailLayer.forward
    monkeypatch.setattr(TailLayer, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    with torch.no_grad():
        embeds, merged, _, where = model.prepare_inputs_embeds(ids, mask, pixels, padding_side="left")
        choose = model.reducer.chooser(merged, where, model.projector.num_tokens())
        outs = [pruned_greedy_decode(model.llm, embeds, merged, 2, choose, 6, [], 0, tail=t) for t in (True, False)]
    assert torch.equal(outs[0], outs[1]) and len(calls) == 1  # one tail: the prefill's, not the decode steps'
