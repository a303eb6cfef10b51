"""The teacher-forced forward every method reads (deco.explain.llm_relevance): defaults, dtypes, frozen weights, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import render_scene
from deco.explain.inputs import ExplainInput, build_input
from deco.explain.llm_relevance import eval_mode, gradients, teacher_forced_forward
from deco.explain.methods import explain


def _input(projector="qformer"):
    model, tokenizer, processor = tiny_model(projector)
    return (
        model,
        tokenizer,
        build_input(
            tokenizer, processor, render_scene(1000, 3).image, "Green.", question="What colour is the triangle?"
        ),
    )


def test_the_forward_keeps_projector_maps_and_skips_the_tower_by_default():
    model, _, inp = _input()
    with eval_mode(model):
        trace = teacher_forced_forward(model, inp)
    assert len(trace.qformer_cross) == len(trace.qformer_self) == 2 and trace.vision_attns is None
    assert trace.patch_feats.is_leaf and trace.patch_feats.requires_grad
    assert trace.logits.shape == (inp.input_ids.numel() + 15, trace.logits.shape[1]) and not trace.logits.requires_grad


@pytest.mark.parametrize("vision_maps", [False, True])
def test_patch_features_take_the_projectors_dtype(vision_maps):
    model, _, inp = _input()
    model = copy.deepcopy(model)
    model.projector.double()
    with eval_mode(model):
        trace = teacher_forced_forward(model, inp, vision_maps=vision_maps)
    assert trace.patch_feats.dtype == torch.float64 and trace.image_tokens.dtype == torch.float64


def test_frozen_weights_give_the_same_relevance():
    model, tokenizer, inp = _input()
    frozen = copy.deepcopy(model).requires_grad_(False)
    expected, got = explain(model, inp, "rgae", tokenizer), explain(frozen, inp, "rgae", tokenizer)
    torch.testing.assert_close(got.r_t2q_tokens, expected.r_t2q_tokens)
    torch.testing.assert_close(got.r_q2i, expected.r_q2i)
    assert float(got.r_q2i.sum()) > 0
    assert not any(p.requires_grad for p in frozen.parameters())  # the flags are restored


def test_inputs_without_an_image_or_a_target_are_refused():
    model, tokenizer, inp = _input("avgpool")
    no_image = ExplainInput(
        inp.input_ids[inp.input_ids != model.image_token_id], inp.target_mask[1:], inp.pixel_values, inp.image, inp.text
    )
    with eval_mode(model), pytest.raises(ValueError, match="no <image> placeholder"):
        teacher_forced_forward(model, no_image)
    no_target = ExplainInput(inp.input_ids, torch.zeros_like(inp.target_mask), inp.pixel_values, inp.image, inp.text)
    with eval_mode(model), pytest.raises(ValueError, match="no target token"):
        teacher_forced_forward(model, no_target)
    first = torch.zeros_like(inp.target_mask)
    first[0] = True  # a target at position 0: nothing predicts it
    with eval_mode(model), pytest.raises(ValueError, match="no target token"):
        teacher_forced_forward(model, ExplainInput(inp.input_ids, first, inp.pixel_values, inp.image, inp.text))


def test_gradients_of_unused_tensors_are_zeros():
    x, unused = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    gx, gu = gradients((2 * x).sum(), [x, unused], retain_graph=False)
    assert torch.equal(gx, torch.full((3,), 2.0)) and torch.equal(gu, torch.zeros(2))


def test_an_image_at_position_zero_is_explained():
    model, tokenizer, processor = tiny_model("avgpool")
    words = tokenizer("Green.", add_special_tokens=False).input_ids
    ids = torch.tensor([model.image_token_id, *words])  # no BOS: the image is the first token
    mask = torch.tensor([False] + [True] * len(words))
    base = build_input(tokenizer, processor, render_scene(1000, 3).image, "Green.")
    inp = ExplainInput(input_ids=ids, target_mask=mask, pixel_values=base.pixel_values, image=base.image, text="Green.")
    with eval_mode(model):
        trace = teacher_forced_forward(model, inp)
    assert trace.vis_start == 0 and trace.rows.tolist() == [15 + k for k in range(len(words))]


def test_an_llm_that_returns_no_attention_maps_is_named(monkeypatch):
    model, _, inp = _input("avgpool")
    forward = model.llm.forward
    monkeypatch.setattr(model.llm, "forward", lambda *a, **k: forward(*a, **{**k, "output_attentions": False}))
    with pytest.raises(RuntimeError, match="returned no attention maps"), eval_mode(model):
        teacher_forced_forward(model, inp)
