"""Attention implementation switching: SDPA by default in the configs, eager only where maps are read."""

from __future__ import annotations

import copy

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import render_scene
from deco.explain.inputs import build_input
from deco.explain.methods import explain
from deco.models.attention import attention, get_attention, set_attention


def _impls(model) -> list[str]:
    return sorted(get_attention(model).values())


def test_configs_build_sdpa_and_the_context_restores_it():
    model, _, _ = tiny_model("avgpool")
    assert _impls(model) == ["sdpa", "sdpa"]  # vision tower's CLIP and the LLM
    with pytest.raises(RuntimeError, match="boom"):
        with attention(model, "eager"):
            assert _impls(model) == ["eager", "eager"]
            raise RuntimeError("boom")
    assert _impls(model) == ["sdpa", "sdpa"]


def test_unknown_implementation_is_named():
    model, _, _ = tiny_model("avgpool")
    with pytest.raises(ValueError, match="flash_attention_9.*allowed: eager, sdpa"):
        set_attention(model, "flash_attention_9")


@pytest.mark.parametrize("projector", ["avgpool", "qformer"])
def test_relevance_of_an_sdpa_model_equals_the_eager_model(projector):
    sdpa_model, tokenizer, processor = tiny_model(projector)
    eager_model = copy.deepcopy(sdpa_model)
    set_attention(eager_model, "eager")
    inp = build_input(tokenizer, processor, render_scene(1000, 3).image, "A red circle", template="vicuna_v1")
    for method in ("rgae", "rawattn"):
        got, want = explain(sdpa_model, inp, method, tokenizer), explain(eager_model, inp, method, tokenizer)
        torch.testing.assert_close(got.r_t2i, want.r_t2i, rtol=1e-4, atol=1e-6)
    assert _impls(sdpa_model) == ["sdpa", "sdpa"]  # switched back after the forward that read the maps


def test_sdpa_and_eager_training_forward_agree():
    model, tokenizer, processor = tiny_model("avgpool")
    eager_model = copy.deepcopy(model)
    set_attention(eager_model, "eager")
    inp = build_input(tokenizer, processor, render_scene(1000, 4).image, "A blue square", template="vicuna_v1")
    ids, pixels = inp.input_ids[None], inp.pixel_values[None]
    labels = torch.where(inp.target_mask, inp.input_ids, -100)[None]
    with torch.no_grad():
        got, want = model(ids, None, pixels, labels), eager_model(ids, None, pixels, labels)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.loss, want.loss)
