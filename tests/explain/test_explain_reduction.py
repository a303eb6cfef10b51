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
