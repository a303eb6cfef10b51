"""Relevance methods on tiny MLLMs: R_q2i structure, R_t2i = R_t2q x R_q2i, gradient flow, token bookkeeping."""

from __future__ import annotations

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import render_scene
from deco.explain.inputs import build_input
from deco.explain.methods import explain, explain_all
from deco.models.attention import attention
from deco.models.projectors import build_projector

TEXT = "A pot of green plants"


def _input(tokenizer, processor, text=TEXT, template="vicuna_v1"):
    return build_input(tokenizer, processor, render_scene(1000, 3).image, text, template=template)


def test_avgpool_r_q2i_is_its_block_structure():
    # 24x24 patches -> 12x12 queries: query (i, j) averages patches (2i..2i+1, 2j..2j+1)
    projector = build_projector("avgpool", 64, 128, 576, query_num=144)
    r_q2i = projector.query_to_patch_relevance()
    assert r_q2i.shape == (144, 576)
    expected = torch.zeros(144, 576)
    for h in range(24):
        for w in range(24):
            expected[(h // 2) * 12 + w // 2, h * 24 + w] = 0.25
    assert torch.equal(r_q2i, expected)
    torch.testing.assert_close(r_q2i.sum(1), torch.ones(144))


@pytest.fixture(scope="module")
def results():
    """rgae/rawattn/gradcam for the three projector families (one forward each)."""
    out = {}
    for projector in ("avgpool", "qformer", "linear"):
        model, tokenizer, processor = tiny_model(projector)
        out[projector] = explain_all(model, _input(tokenizer, processor), ["rgae", "rawattn", "gradcam"], tokenizer)
    return out


def test_explained_avgpool_r_q2i_is_block_uniform(results):
    r_q2i = results["avgpool"]["rgae"].r_q2i  # 16 queries, 6x6 blocks of 36 patches
    assert r_q2i.shape == (16, 576)
    torch.testing.assert_close(r_q2i.sum(1), torch.ones(16))
    grid = r_q2i.reshape(4, 4, 24, 24)
    for i in range(4):
        for j in range(4):
            block = torch.zeros(24, 24)
            block[6 * i : 6 * i + 6, 6 * j : 6 * j + 6] = 1 / 36
            torch.testing.assert_close(grid[i, j], block)


def test_only_pooled_and_linear_tokens_are_spatial(results):
    assert results["avgpool"]["rgae"].spatial_queries and results["linear"]["rawattn"].spatial_queries
    assert not any(rel.spatial_queries for rel in results["qformer"].values())  # learned queries: no layout


def test_linear_r_q2i_is_identity(results):
    for method in ("rgae", "rawattn", "gradcam"):
        assert torch.equal(results["linear"][method].r_q2i, torch.eye(576))


@pytest.mark.parametrize("projector", ["avgpool", "qformer", "linear"])
def test_r_t2i_is_r_t2q_times_r_q2i(results, projector):
    for method, rel in results[projector].items():
        q = 576 if projector == "linear" else 16
        assert rel.r_t2q.shape == (q,) and rel.r_q2i.shape == (q, 576) and rel.r_t2i.shape == (24, 24)
        assert torch.equal(rel.r_t2i.flatten(), rel.r_t2q @ rel.r_q2i), method
        torch.testing.assert_close(rel.r_t2q, rel.r_t2q_tokens.sum(0))
        assert rel.r_t2q_tokens.shape[0] == len(rel.target_tokens) == 11  # 'A', ' p', 'o', 't', ' of', ...


@pytest.mark.parametrize("projector", ["avgpool", "qformer", "linear"])
def test_gradients_reach_the_relevance(results, projector):
    rel = results[projector]["rgae"]
    assert rel.r_t2q.min() >= 0 and rel.r_t2q.sum() > 0
    assert rel.r_t2i.min() >= 0 and rel.r_t2i.max() > 0
    if projector == "qformer":
        # GAE over the Q-Former: non-negative, non-zero, and not just the raw last cross-attention
        raw = results["qformer"]["rawattn"].r_q2i
        assert rel.r_q2i.min() >= 0 and rel.r_q2i.sum() > 0
        assert not torch.allclose(rel.r_q2i, raw)
        torch.testing.assert_close(raw.sum(1), torch.ones(16))  # head-mean softmax rows


def test_rawattn_rows_match_an_independent_forward():
    """rawattn's rows are the last layer's head-mean attention from the predicting positions to the visual tokens."""
    model, tokenizer, processor = tiny_model("avgpool")
    inp = _input(tokenizer, processor)
    rel = explain(model, inp, "rawattn", tokenizer)
    with torch.no_grad(), attention(model, "eager"):
        out = model(inp.input_ids[None], pixel_values=inp.pixel_values[None], output_attentions=True)
    ids = inp.input_ids.tolist()
    image_at = ids.index(model.image_token_id)
    q = model.num_visual_tokens
    # a text token at position p > image_at lands at p + q - 1; its logit is predicted one position earlier
    targets = [p + q - 1 for p in inp.target_mask.nonzero().flatten().tolist()]
    attn = out.attentions[-1][0].mean(0)  # T T
    expected = attn[[t - 1 for t in targets]][:, image_at : image_at + q]
    torch.testing.assert_close(rel.r_t2q_tokens, expected)


def test_explain_leaves_training_state_and_parameter_grads_alone():
    model, tokenizer, processor = tiny_model("qformer")
    model.train()
    try:
        explain(model, _input(tokenizer, processor), "rgae", tokenizer)
        assert all(m.training for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_per_token_rows_and_integrated_gradients():
    model, tokenizer, processor = tiny_model("avgpool")
    inp = _input(tokenizer, processor, text="Green.")
    per_token = explain(model, inp, "rgae", tokenizer, per_token=True)
    summed = explain(model, inp, "rgae", tokenizer)
    assert per_token.target_tokens == summed.target_tokens == ["Green", "."]
    assert per_token.r_t2q_tokens.shape == (2, 16) and per_token.r_t2q_tokens.min() >= 0
    # the last token's row sees gradients of its own logit only: differs from the summed target's row
    assert not torch.allclose(per_token.r_t2q_tokens[0], summed.r_t2q_tokens[0])
    ig = explain(model, inp, "ig", tokenizer, ig_steps=4)
    assert ig.r_t2q.shape == (16,) and ig.r_t2q.sum() > 0
    assert torch.equal(ig.r_t2i.flatten(), ig.r_t2q @ ig.r_q2i)


def test_unknown_method_and_empty_target_fail_clearly():
    model, tokenizer, processor = tiny_model("avgpool")
    with pytest.raises(ValueError, match="method='nope' is unknown"):
        explain(model, _input(tokenizer, processor), "nope", tokenizer)
    with pytest.raises(ValueError, match="non-empty string"):
        build_input(tokenizer, processor, render_scene(1000, 3).image, "  ")


def test_maxpool_r_q2i_rows_are_argmax_shares_inside_their_block():
    model, tokenizer, processor = tiny_model("maxpool")
    rel = explain(model, _input(tokenizer, processor), "rawattn", tokenizer)
    torch.testing.assert_close(rel.r_q2i.sum(1), torch.ones(16))
    grid = rel.r_q2i.reshape(4, 4, 24, 24)
    for i in range(4):
        for j in range(4):
            outside = grid[i, j].clone()
            outside[6 * i : 6 * i + 6, 6 * j : 6 * j + 6] = 0
            assert float(outside.abs().sum()) == 0.0
    assert torch.equal(rel.r_t2i.flatten(), rel.r_t2q @ rel.r_q2i)
