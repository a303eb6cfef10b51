"""GAE rules and attention baselines against hand computations (deco.relevance.gae)."""

from __future__ import annotations

import pytest
import torch

from deco.relevance.gae import (
    attn_gradcam,
    avg_heads,
    cross_attention_rule,
    normalize_self_relevance,
    raw_attention,
    self_attention_relevance,
)

# Two layers, two heads, two tokens (batch of one): b h t t.
A1 = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.2, 0.8]]]])
G1 = torch.tensor([[[[1.0, 1.0], [2.0, -1.0]], [[0.0, 0.0], [-1.0, 1.0]]]])
A2 = torch.tensor([[[[1.0, 0.0], [0.3, 0.7]], [[1.0, 0.0], [0.6, 0.4]]]])
G2 = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]], [[-1.0, 0.0], [1.0, 2.0]]]])


def test_avg_heads_clamps_before_the_head_mean():
    # grad*attn: head 0 [[1, 0], [1, -0.5]] -> [[1, 0], [1, 0]]; head 1 [[0, 0], [-0.2, 0.8]] -> [[0, 0], [0, 0.8]]
    expected = torch.tensor([[[0.5, 0.0], [0.5, 0.4]]])
    torch.testing.assert_close(avg_heads(A1, G1), expected)


def test_two_layer_self_attention_relevance_matches_hand_computation():
    # R1 = I + Ā1 = [[1.5, 0], [0.5, 1.4]]
    # Ā2 = mean([[2, 0], [0.3, 0.7]], [[0, 0], [0.6, 0.8]]) = [[1, 0], [0.45, 0.75]]
    # R2 = R1 + Ā2 R1 = [[1.5, 0], [0.5, 1.4]] + [[1.5, 0], [1.05, 1.05]]
    expected = torch.tensor([[[3.0, 0.0], [1.55, 2.45]]])
    torch.testing.assert_close(self_attention_relevance([A1, A2], [G1, G2]), expected)


def test_self_attention_relevance_needs_one_gradient_per_layer():
    with pytest.raises(ValueError, match="one gradient per attention layer"):
        self_attention_relevance([A1, A2], [G1])


def test_normalize_self_relevance_and_cross_rule_by_hand():
    r_ss = torch.tensor([[[1.5, 0.0], [0.5, 1.4]]])
    # R - I = [[0.5, 0], [0.5, 0.4]] -> rows / [0.5, 0.9] -> [[1, 0], [5/9, 4/9]] -> + I
    r_bar = torch.tensor([[[2.0, 0.0], [5 / 9, 13 / 9]]])
    torch.testing.assert_close(normalize_self_relevance(r_ss), r_bar)
    cam_sq = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])  # 2 text x 3 image
    expected = torch.tensor([[[2.0, 5 / 9, 5 / 9], [0.0, 13 / 9, 13 / 9]]])  # R̄ᵀ Ā
    torch.testing.assert_close(cross_attention_rule(torch.zeros(1, 2, 3), r_ss, cam_sq), expected)


def test_raw_attention_and_attn_gradcam_by_hand():
    torch.testing.assert_close(raw_attention(A2), torch.tensor([[[1.0, 0.0], [0.45, 0.55]]]))
    # α = mean gradient per head: head 0 -> 1.0, head 1 -> 0.5; cam = mean(A_h0, 0.5 A_h1)
    torch.testing.assert_close(attn_gradcam(A2, G2), torch.tensor([[[0.75, 0.0], [0.3, 0.45]]]))
    # clamp after the head mean: α = (1, -2) gives mean(A_h0 - 2 A_h1) < 0 everywhere -> 0
    g = torch.stack([torch.ones(2, 2), -2 * torch.ones(2, 2)])[None]
    assert torch.equal(attn_gradcam(A2, g), torch.zeros(1, 2, 2))


def test_rows_with_nothing_beyond_the_identity_stay_the_identity():
    # row 0: R = I (residual 0); row 1: a residual that sums to 0 carries nothing either; row 2: normalised
    rel = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 3.0, 2.0]]])
    expected = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.75, 1.25]]])
    torch.testing.assert_close(normalize_self_relevance(rel), expected)


def test_cross_rule_drops_undefined_terms_and_uses_the_q_side():
    r_ss = torch.eye(2)[None]
    cam = torch.tensor([[[float("nan"), 1.0], [0.0, 2.0]]])
    torch.testing.assert_close(cross_attention_rule(torch.ones(1, 2, 2), r_ss, cam),
                               torch.tensor([[[1.0, 2.0], [1.0, 3.0]]]))  # nan -> 0 added
    r_qq = torch.tensor([[[1.0, 0.0], [2.0, 1.0]]])  # R̄_qq = [[1, 0], [1, 1]]
    torch.testing.assert_close(cross_attention_rule(torch.zeros(1, 2, 2), r_ss, torch.eye(2)[None], r_qq),
                               torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))


def test_one_layer_self_relevance_is_identity_plus_its_cam():
    torch.testing.assert_close(self_attention_relevance([A1], [G1]), torch.eye(2)[None] + avg_heads(A1, G1))
    with pytest.raises(ValueError, match="one gradient per attention layer"):
        self_attention_relevance([], [])
