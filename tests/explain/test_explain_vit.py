"""Relevance through the vision tower (vision_relevance=gae): hand computations on a 2-layer toy ViT, conservation."""

from __future__ import annotations

import pytest
import torch
from explain_helpers import tiny_model

from deco.data.shapes import render_scene
from deco.explain.inputs import build_input
from deco.explain.methods import explain, explain_all
from deco.models.attention import attention
from deco.models.vision import VisionTower
from deco.relevance.vit import feature_to_patch_relevance

# CLS + 2 patches, 2 layers, 2 heads (b h t t).
A1 = torch.tensor([[[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]],
                    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]])
G1 = torch.stack([torch.ones(3, 3), -torch.ones(3, 3)])[None]  # head 1 is clamped away
A2 = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]],
                    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])
G2 = torch.stack([2 * torch.ones(3, 3), torch.zeros(3, 3)])[None]


def test_feature_to_patch_relevance_by_hand():
    # Ā1 = A1_h0 / 2 = [[.25, .25, 0], [0, .5, 0], [0, .25, .25]];  R1 = I + Ā1 = [[1.25, .25, 0], [0, 1.5, 0], [0, .25, 1.25]]
    # Ā2 = (2 A2_h0 + 0) / 2 = A2_h0;  Ā2 R1 = [[1.25, .25, 0], [0, .875, .625], [0, .25, 1.25]]
    # R2 = R1 + Ā2 R1 = [[2.5, .5, 0], [0, 2.375, .625], [0, .5, 2.5]]
    # patch rows / columns minus I: [[1.375, .625], [.5, 1.5]]; rows / 2 -> [[.6875, .3125], [.25, .75]]
    # (+ I) / 2 -> [[27/32, 5/32], [1/8, 7/8]]
    expected = torch.tensor([[[27 / 32, 5 / 32], [1 / 8, 7 / 8]]])
    torch.testing.assert_close(feature_to_patch_relevance([A1, A2], [G1, G2]), expected)
    # select_feature=cls_patch: the CLS row [.5, 0] comes first, normalised to [1, 0]
    with_cls = feature_to_patch_relevance([A1, A2], [G1, G2], cls_feature=True)
    torch.testing.assert_close(with_cls, torch.cat([torch.tensor([[[1.0, 0.0]]]), expected], dim=1))
    with pytest.raises(ValueError, match="no vision attention maps"):
        feature_to_patch_relevance([], [])


def test_a_patch_with_nothing_beyond_itself_keeps_all_its_relevance():
    # one layer, one head; the score's gradient is negative on patch 2's row: Ā = [[1, 0, 0], [0, .5, .5], [0, 0, 0]]
    # R = I + Ā; patch block minus I = [[.5, .5], [0, 0]]: row 1 -> ([.5, .5] + [1, 0]) / 2; row 2 stays [0, 1]
    attn = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]]])
    grad = torch.tensor([[[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]]])
    expected = torch.tensor([[[0.75, 0.25], [0.0, 1.0]]])
    torch.testing.assert_close(feature_to_patch_relevance([attn], [grad]), expected)
    # the CLS feature's row beyond I is empty too: all zeros (a CLS token is no patch)
    with_cls = feature_to_patch_relevance([attn], [grad], cls_feature=True)
    torch.testing.assert_close(with_cls, torch.cat([torch.zeros(1, 1, 2), expected], dim=1))


def _clip_layer_by_hand(layer, h):
    """One CLIP encoder layer written out (pre-LN attention + quick-GELU MLP); returns (output, probabilities)."""
    att = layer.self_attn
    b, t, d = h.shape
    heads = att.num_heads
    x = layer.layer_norm1(h)
    q, k, v = (proj(x).view(b, t, heads, -1).transpose(1, 2) for proj in (att.q_proj, att.k_proj, att.v_proj))
    probs = torch.softmax(q @ k.transpose(-1, -2) * att.scale, dim=-1)  # b h t t
    h = h + att.out_proj((probs @ v).transpose(1, 2).reshape(b, t, d))
    x = layer.layer_norm2(h)
    x = layer.mlp.fc1(x)
    h = h + layer.mlp.fc2(x * torch.sigmoid(1.702 * x))
    return h, probs


def test_two_layer_toy_vit_maps_and_relevance_match_a_hand_computation():
    torch.manual_seed(0)
    config = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2, image_size=8,
                  patch_size=4, hidden_act="quick_gelu")
    tower = VisionTower(config=config, select_layer=-2, attn_implementation="sdpa").eval()  # 2 of 3 layers
    pixels = torch.randn(1, 3, 8, 8)
    weight = torch.randn(4, 8)  # the "score": a fixed linear read-out of the 4 patch features
    with attention(tower.model, "eager"):
        feats, maps = tower.forward_with_attentions(pixels)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 5, 5)
    grads = torch.autograd.grad((feats * weight).sum(), maps)

    clip = getattr(tower.model, "vision_model", tower.model)
    h = clip.pre_layrnorm(clip.embeddings(pixels)).detach().requires_grad_(True)
    hand_maps = []
    for layer in clip.encoder.layers[:2]:
        h, probs = _clip_layer_by_hand(layer, h)
        hand_maps.append(probs)
    torch.testing.assert_close(feats, h[:, 1:])
    torch.testing.assert_close(maps, hand_maps)
    hand_grads = torch.autograd.grad((h[:, 1:] * weight).sum(), hand_maps)
    rel = torch.eye(5)
    for probs, grad in zip(hand_maps, hand_grads):
        cam = (grad * probs).clamp(min=0).mean(dim=1)[0]
        rel = rel + cam @ rel
    residual = rel[1:, 1:].detach() - torch.eye(4)
    expected = (residual / residual.sum(-1, keepdim=True) + torch.eye(4)) / 2
    torch.testing.assert_close(feature_to_patch_relevance(maps, grads)[0], expected)
    assert float(residual.min()) >= 0 and float(residual.sum()) > 0


def _input(tokenizer, processor):
    return build_input(tokenizer, processor, render_scene(1000, 3).image, "A green triangle")


@pytest.mark.parametrize("projector", ["avgpool", "qformer"])
def test_propagated_maps_keep_their_totals(projector):
    model, tokenizer, processor = tiny_model(projector)
    inp = _input(tokenizer, processor)
    methods = ["rgae", "rawattn", "gradcam"]
    flat = explain_all(model, inp, methods, tokenizer, per_token=True)
    deep = explain_all(model, inp, methods, tokenizer, per_token=True, vision_relevance="gae")
    for method in methods:
        a, b = flat[method], deep[method]
        assert b.vision_relevance == "gae" and b.r_t2i.shape == (24, 24) and b.r_q2i.shape == (16, 576)
        torch.testing.assert_close(b.r_t2q, a.r_t2q)  # the LLM side is untouched
        torch.testing.assert_close(b.r_q2i.sum(1), a.r_q2i.sum(1))  # each query's relevance is redistributed
        torch.testing.assert_close(b.r_t2i.sum(), a.r_t2i.sum())
        torch.testing.assert_close(b.r_t2i_tokens.sum((1, 2)), a.r_t2i_tokens.sum((1, 2)))
    a, b = flat["rgae"].r_t2i, deep["rgae"].r_t2i
    assert float((b - a).abs().max()) > 1e-3 * float(a.abs().max()) > 0  # the tower's attention spreads it
    assert all(p.grad is None for p in model.parameters())  # autograd.grad only: no .grad touched


def test_unknown_vision_relevance_is_refused():
    model, tokenizer, processor = tiny_model("avgpool")
    with pytest.raises(ValueError, match="vision_relevance='lrp' is unknown"):
        explain(model, _input(tokenizer, processor), "rgae", tokenizer, vision_relevance="lrp")


def test_cli_exports_maps_over_the_input_patches(tmp_path):
    from conftest import compose_config
    from explain_helpers import scene_image, trained_run

    from deco.explain.__main__ import run
    from deco.explain.export import load_relevance

    ckpt = trained_run() / "checkpoints" / "last.ckpt"
    out = tmp_path / "out"
    for setting in ("none", "gae"):
        run(compose_config("explain", [f"ckpt={ckpt}", f"image={scene_image(tmp_path)}", "text=green", "images=false",
                                       f"vision_relevance={setting}", "device=cpu", "progress=false"], out / setting))
    flat, deep = (load_relevance(out / s / "relevance-rgae-green-avgpool2_16.pt") for s in ("none", "gae"))
    assert (flat["vision_relevance"], deep["vision_relevance"]) == ("none", "gae")
    torch.testing.assert_close(deep["r_t2i"].sum(), flat["r_t2i"].sum())
    assert not torch.allclose(deep["r_q2i"], flat["r_q2i"])
    scores = {}
    for setting in ("none", "gae"):
        cfg = compose_config("explain", [f"ckpt={ckpt}", "mode=score", "score.probes=[shapes]", "score.num_samples=2", "score.methods=[rgae]",
                                         "score.perturbation=false", f"vision_relevance={setting}", "device=cpu",
                                         "progress=false"], out / f"score-{setting}")
        scores[setting] = {s["method"]: s for s in run(cfg)["summary"]}
    assert scores["gae"]["random"]["energy"] == scores["none"]["random"]["energy"]  # same probes, same noise
    assert scores["gae"]["rgae"]["energy"] != scores["none"]["rgae"]["energy"]  # scored over the input patches
    with pytest.raises(SystemExit, match="vision_relevance=lrp is unknown"):
        run(compose_config("explain", [f"ckpt={ckpt}", "text=hi", "vision_relevance=lrp"], out / "bad"))
