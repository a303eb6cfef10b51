"""`answer_loss`: the LM head and cross-entropy on the answer positions only give the loss (and gradients) of
the full logits, for both reductions, rows without an answer and right padding included."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deco.models import loss as loss_module
from deco.models.loss import answer_loss, next_token_loss
from deco.models.mllm import position_ids_from_mask


def _llm():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=37,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def _batch():
    torch.manual_seed(1)
    embeds = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    labels = torch.full((3, 9), -100)
    labels[0, 5:9] = torch.tensor([3, 4, 5, 2])  # a 4-token answer
    labels[1, 5] = 7  # a one-token answer before the padding
    # row 2: no answer at all (e.g. a truncated sample)
    return embeds, mask, labels


def _full(llm, embeds, mask, labels, reduction):
    logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    return next_token_loss(logits, labels, reduction)


@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_answer_positions_only_give_the_full_logits_loss_and_gradients(reduction):
    llm = _llm()
    embeds, mask, labels = _batch()
    results = []
    for fn in (_full, lambda *a: answer_loss(a[0], a[1], a[2], position_ids_from_mask(a[2]), a[3], a[4])):
        llm.zero_grad()
        x = embeds.clone().requires_grad_(True)
        value = fn(llm, x, mask, labels, reduction)
        value.backward()
        results.append(
            (
                value.detach(),
                x.grad,
                llm.lm_head.weight.grad.clone(),
                llm.model.layers[0].mlp.up_proj.weight.grad.clone(),
            )
        )
    (full, *full_grads), (fast, *fast_grads) = results
    assert fast.item() == pytest.approx(full.item(), rel=1e-6)
    for a, b in zip(full_grads, fast_grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_hand_value_of_the_sample_reduction():
    """Two rows, uniform logits (a zero head): every answer token costs log(vocab); sample mean = log(vocab)."""
    llm = _llm()
    with torch.no_grad():
        llm.lm_head.weight.zero_()
    embeds, mask, labels = _batch()
    value = answer_loss(llm, embeds, mask, position_ids_from_mask(mask), labels, "sample")
    assert value.item() == pytest.approx(torch.log(torch.tensor(37.0)).item(), rel=1e-6)


def test_other_model_types_take_the_full_path(monkeypatch):
    llm = _llm()
    embeds, mask, labels = _batch()
    calls = []
    monkeypatch.setattr(loss_module, "PLAIN_HEAD_TYPES", ())
    monkeypatch.setattr(llm, "get_decoder", lambda: calls.append("decoder"))
    value = answer_loss(llm, embeds, mask, position_ids_from_mask(mask), labels, "token")
    assert calls == []  # never split into decoder + head
    assert value.item() == pytest.approx(_full(llm, embeds, mask, labels, "token").item(), rel=1e-6)


def test_unknown_reduction_is_named():
    llm = _llm()
    embeds, mask, labels = _batch()
    with pytest.raises(ValueError, match="loss reduction 'mean' is unknown"):
        answer_loss(llm, embeds, mask, position_ids_from_mask(mask), labels, "mean")
