"""Relevance under training-free reduction: over the kept tokens, mapped back to the patches they carry."""

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import render_scene
from deco.explain.inputs import build_input
from deco.explain.methods import explain_all
from deco.models.reduction import build_reducer, reduce_features


@pytest.fixture(scope="module")
def linear():
    model, tok, proc = tiny_model("linear", 576)
    inp = build_input(tok, proc, render_scene(1000, 3).image, "a red circle", template="vicuna_v1")
    yield model, tok, inp
    model.set_reduction(None)


def test_pre_llm_reduction_maps_kept_tokens_to_patches(linear):
    model, tok, inp = linear
    model.set_reduction(build_reducer("visionzip", keep=64))
    try:
        rel = explain_all(model, inp, ["rgae", "rawattn"], tok)
        _, mat = reduce_features(model.vision, model.projector, model.reducer, inp.pixel_values[None])
    finally:
        model.set_reduction(None)
    for r in rel.values():
        assert r.r_t2q.shape == (64,) and r.r_q2i.shape == (64, 576)
        assert torch.allclose(r.r_q2i, mat[0, :, 1:], atol=1e-6)
        assert torch.allclose(r.r_t2i.flatten(), r.r_t2q @ mat[0, :, 1:], atol=1e-5)
    assert float(rel["rgae"].r_q2i[0].sum()) == 0.0  # token 0 is [CLS]: no patch behind it
    assert not rel["rgae"].spatial_queries  # kept tokens no longer tile the grid: drawn as a ranked strip


def test_pool_relevance_spreads_over_each_cell(linear):
    model, tok, inp = linear
    model.set_reduction(build_reducer("pool", keep=16))
    try:
        rel = explain_all(model, inp, ["rawattn"], tok)["rawattn"]
    finally:
        model.set_reduction(None)
    cell = rel.r_q2i[5].reshape(24, 24)  # token 5 = cell (1, 1): rows 6..11, columns 6..11, weight 1/36 each
    assert torch.allclose(cell[6:12, 6:12], torch.full((6, 6), 1 / 36))
    assert float(cell.sum()) == pytest.approx(1.0)
    assert rel.spatial_queries  # pooled cells still tile the grid (4 x 4)


def test_fastv_relevance_sees_the_kept_tokens_after_layer_k(linear):
    model, tok, inp = linear
    model.set_reduction(build_reducer("fastv", keep=32, layer=1))
    try:
        rel = explain_all(model, inp, ["rawattn"], tok)["rawattn"]  # rawattn reads the last layer (>= K)
    finally:
        model.set_reduction(None)
    dropped = torch.ones(576, dtype=torch.bool)
    dropped[rel.kept] = False
    assert rel.kept.numel() == 32
    assert float(rel.r_t2q[dropped].abs().max()) == 0.0 and float(rel.r_t2q[rel.kept].sum()) > 0


def test_fastv_relevance_keeps_what_generation_keeps_and_scores_its_logits(linear):
    """The explained forward under FastV = the generation-time pruned prefill of the prompt (llm_runner): the same
    kept visual tokens, and the same next-token logits at the first target position."""
    from deco.data.tokenizer import IGNORE_INDEX
    from deco.explain.llm_relevance import eval_mode, teacher_forced_forward
    from deco.models.reduction.llm_runner import pruned_forward, pruned_prefill

    model, tok, inp = linear
    model.set_reduction(build_reducer("fastv", keep=8, layer=1))
    try:
        with eval_mode(model), torch.no_grad():
            trace = teacher_forced_forward(model, inp)
            labels = torch.where(inp.target_mask, inp.input_ids, IGNORE_INDEX)[None]
            embeds, mask, _, starts = model.prepare_inputs_embeds(
                inp.input_ids[None], None, inp.pixel_values[None], labels
            )
            p = int(trace.rows[0]) + 1  # the prompt: everything before the first target token
            logits, state = pruned_prefill(
                model.llm, embeds[:, :p], mask[:, :p], 1, model.reducer.chooser(mask[:, :p], starts, 576), None
            )
            # every target token: the layers after K see the prompt's kept columns and all the target tokens
            columns = torch.cat([state.kept[0], torch.arange(p, embeds.shape[1])])
            full = pruned_forward(model.llm, embeds, mask, 1, lambda attn: [columns]).logits[0]
    finally:
        model.set_reduction(None)
    start = int(starts[0])
    visual = state.kept[0][(state.kept[0] >= start) & (state.kept[0] < start + 576)] - start
    assert trace.vis_start == start and torch.equal(trace.kept, visual) and trace.kept.numel() == 8
    assert torch.allclose(trace.logits[p - 1], logits[0], atol=1e-4, rtol=1e-4)
    assert len(trace.rows) > 1 and torch.allclose(trace.logits[trace.rows], full[trace.rows], atol=1e-4, rtol=1e-4)


def test_fastv_relevance_goes_through_the_tower_too(linear):
    model, tok, inp = linear
    model.set_reduction(build_reducer("fastv", keep=32, layer=1))
    try:
        rel = explain_all(model, inp, ["rawattn"], tok, vision_relevance="gae")["rawattn"]
    finally:
        model.set_reduction(None)
    assert rel.vision_relevance == "gae" and rel.kept.numel() == 32 and rel.r_q2i.shape == (576, 576)


def test_a_frozen_model_explains_under_a_pre_llm_reducer(linear):
    model, tok, inp = linear
    model.set_reduction(build_reducer("visionzip", keep=64))
    flags = [p.requires_grad for p in model.parameters()]
    try:
        trained = explain_all(model, inp, ["rgae"], tok)["rgae"]
        for p in model.parameters():
            p.requires_grad_(False)
        frozen = explain_all(model, inp, ["rgae"], tok)["rgae"]  # the gathered features are the graph's leaf
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.set_reduction(None)
    assert torch.allclose(frozen.r_t2q, trained.r_t2q, atol=1e-6) and float(frozen.r_t2q.abs().sum()) > 0
