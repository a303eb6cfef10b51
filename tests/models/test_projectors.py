"""Projectors: token counts, DeCo's avgpool against a hand computation and the paper's structure,
query_num validation, the registry, and query-to-patch relevance (pooling matrix, max one-hot, GAE)."""

import pytest
import torch
from einops import rearrange
from torch import nn

from deco.models.projectors import PROJECTORS, Projector, build_projector, register_projector
from deco.models.projectors.pooling import adaptive_pool_matrix
from deco.relevance.gae import normalize_self_relevance

IN, OUT = 16, 24


class PaperAvgPoolProjector(nn.Module):
    """The structure of DeCo's AvgPoolProjector (README of yaolinli/DeCo), rewritten for the comparison."""

    def __init__(self, layer_num, query_num, mm_hidden_size, llm_hidden_size):
        super().__init__()
        hw = int(query_num**0.5)
        self.sampler = nn.AdaptiveAvgPool2d((hw, hw))
        modules = [nn.Linear(mm_hidden_size, llm_hidden_size)]
        for _ in range(1, layer_num):
            modules += [nn.GELU(), nn.Linear(llm_hidden_size, llm_hidden_size)]
        self.mlp_projector = nn.Sequential(*modules)

    def forward(self, x):
        hw = int(x.shape[1] ** 0.5)
        x = rearrange(x, "b (h w) d -> b d h w", h=hw, w=hw)
        x = rearrange(self.sampler(x), "b d h w -> b (h w) d")
        return self.mlp_projector(x)


def make(name, num_patches=16, **kwargs):
    torch.manual_seed(0)
    return build_projector(name, in_dim=IN, out_dim=OUT, num_patches=num_patches, **kwargs)


@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("linear", {}, 16),
        ("mlp2x_gelu", {}, 16),
        ("avgpool", {"query_num": 4}, 4),
        ("maxpool", {"query_num": 9}, 9),
        ("qformer", {"query_num": 5, "layer_num": 2}, 5),
    ],
)
def test_num_tokens_matches_output(name, kwargs, expected):
    proj = make(name, **kwargs)
    out = proj(torch.randn(3, 16, IN))
    assert proj.num_tokens() == out.shape[1] == expected
    assert out.shape == (3, expected, OUT)


def test_unknown_projector_lists_choices():
    with pytest.raises(ValueError, match=r"Unknown projector 'x'; choose one of: avgpool, cabstractor, dabstractor, ldp, ldpv2, linear, maxpool, mlp2x_gelu, pixelshuffle, qformer, resampler, tokenpacker"):
        build_projector("x", 1, 1, 1)


def test_register_projector_adds_a_name():
    @register_projector("_test_identity")
    class Identity(Projector):
        def num_tokens(self):
            return self.num_patches

        def forward(self, patch_feats):
            return patch_feats

    try:
        assert isinstance(build_projector("_test_identity", 4, 4, 9), Identity)
    finally:
        del PROJECTORS["_test_identity"]


def test_avgpool_equals_hand_computation():
    proj = make("avgpool", query_num=4, mlp_depth=2)
    x = torch.randn(2, 16, IN)
    grid = x.reshape(2, 4, 4, IN)
    # mean of each 2x2 block, queries in row-major order
    blocks = [grid[:, i : i + 2, j : j + 2].mean(dim=(1, 2)) for i in (0, 2) for j in (0, 2)]
    pooled = torch.stack(blocks, dim=1)
    torch.testing.assert_close(proj.pool(x), pooled)
    lin1, lin2 = proj.mlp_projector[0], proj.mlp_projector[2]
    expected = lin2(torch.nn.functional.gelu(lin1(pooled)))
    torch.testing.assert_close(proj(x), expected)
    assert [n for n, _ in proj.named_parameters()] == [
        "mlp_projector.0.weight", "mlp_projector.0.bias", "mlp_projector.2.weight", "mlp_projector.2.bias"]


@pytest.mark.parametrize("num_patches,query_num,layer_num", [(576, 144, 2), (25, 9, 2), (16, 4, 3), (576, 64, 1)])
def test_avgpool_matches_paper_structure(num_patches, query_num, layer_num):
    proj = make("avgpool", num_patches=num_patches, query_num=query_num, mlp_depth=layer_num)
    paper = PaperAvgPoolProjector(layer_num, query_num, IN, OUT)
    paper.load_state_dict(proj.state_dict(), strict=True)  # same parameter names
    x = torch.randn(2, num_patches, IN)
    torch.testing.assert_close(proj(x), paper(x), rtol=0, atol=0)


def test_pooling_kwarg_wins_and_registered_defaults():
    assert make("avgpool", query_num=4).pooling == "avg"
    assert make("maxpool", query_num=4).pooling == "max"
    assert make("avgpool", query_num=4, pooling="max").pooling == "max"
    assert isinstance(make("avgpool", query_num=4, pooling="max").sampler, nn.AdaptiveMaxPool2d)
    with pytest.raises(ValueError, match="pooling='median' is unknown; choose one of: avg, max"):
        make("avgpool", query_num=4, pooling="median")


def test_bad_query_num_messages():
    with pytest.raises(ValueError, match=r"query_num=150 is not a perfect square; pooling projectors need one of 1, 4, 9, \.\.\., 576"):
        make("avgpool", num_patches=576, query_num=150)
    with pytest.raises(ValueError, match=r"query_num=625 exceeds the 576 patches .* one of 1, 4, 9, \.\.\., 576"):
        make("maxpool", num_patches=576, query_num=625)
    with pytest.raises(ValueError, match=r"query_num=2 is not a perfect square; pooling projectors need 1, 4, 9"):
        make("avgpool", num_patches=9, query_num=2)
    with pytest.raises(ValueError, match="square patch grid.*577"):
        make("avgpool", num_patches=577, query_num=144)
    with pytest.raises(ValueError, match="query_num=0"):
        make("qformer", query_num=0)
    with pytest.raises(ValueError, match="query_num=4 does not apply"):
        make("linear", query_num=4)


def test_qformer_has_more_parameters_than_avgpool():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(make("qformer", query_num=4, layer_num=2)) > count(make("avgpool", query_num=4, mlp_depth=2))


def test_qformer_cross_attends_in_every_layer():
    proj = make("qformer", query_num=4, layer_num=3)
    assert all(layer.has_cross_attention for layer in proj.qformer.encoder.layer)


def test_adaptive_pool_matrix_matches_torch_for_uneven_cells():
    # 5 -> 3 cells overlap: [0,2), [1,4), [3,5)
    expected = torch.tensor([[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]])
    torch.testing.assert_close(adaptive_pool_matrix(5, 3), expected)


@pytest.mark.parametrize("num_patches,query_num", [(16, 4), (25, 9), (49, 16), (576, 144)])
def test_avgpool_relevance_is_the_pooling_matrix(num_patches, query_num):
    proj = make("avgpool", num_patches=num_patches, query_num=query_num)
    rel = proj.query_to_patch_relevance()
    assert rel.shape == (query_num, num_patches)
    torch.testing.assert_close(rel.sum(-1), torch.ones(query_num))
    x = torch.randn(2, num_patches, IN)
    torch.testing.assert_close(torch.einsum("qn,bnd->bqd", rel, x), proj.pool(x), rtol=1e-5, atol=1e-6)


def test_avgpool_relevance_2x2_blocks():
    rel = make("avgpool", query_num=4).query_to_patch_relevance()
    # query 0 = patches (0,0),(0,1),(1,0),(1,1) of the 4x4 grid
    assert torch.equal(rel[0].nonzero().flatten(), torch.tensor([0, 1, 4, 5]))
    assert torch.equal(rel[3].nonzero().flatten(), torch.tensor([10, 11, 14, 15]))
    assert torch.allclose(rel[rel > 0], torch.tensor(0.25))


def test_maxpool_relevance_is_argmax_share():
    proj = build_projector("maxpool", in_dim=1, out_dim=4, num_patches=25, query_num=9)
    x = torch.randn(2, 25, 1)
    rel = proj.query_to_patch_relevance(x)
    assert rel.shape == (2, 9, 25)
    # one channel: a one-hot row that picks the max of the cell
    assert torch.equal(rel.sum(-1), torch.ones(2, 9))
    torch.testing.assert_close(torch.einsum("bqn,bnd->bqd", rel, x), proj.pool(x))
    # several channels: rows are shares over channels
    proj3 = make("maxpool", num_patches=16, query_num=4)
    x3 = torch.randn(1, 16, IN)
    rel3 = proj3.query_to_patch_relevance(x3)
    torch.testing.assert_close(rel3.sum(-1), torch.ones(1, 4))
    cell0 = x3[0].reshape(4, 4, IN)[:2, :2].reshape(4, IN)  # patches 0, 1, 4, 5
    winners = torch.tensor([0, 1, 4, 5])[cell0.argmax(0)]
    expected = torch.bincount(winners, minlength=16).float() / IN
    torch.testing.assert_close(rel3[0, 0], expected)
    with pytest.raises(ValueError, match="pass patch_feats"):
        proj.query_to_patch_relevance()


def test_linear_relevance_identity_and_llava_names():
    lin, mlp = make("linear"), make("mlp2x_gelu")
    assert torch.equal(lin.query_to_patch_relevance(), torch.eye(16))
    assert sorted(n for n, _ in lin.named_parameters()) == ["bias", "weight"]
    assert [n for n, _ in mlp.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = torch.randn(2, 16, IN)
    torch.testing.assert_close(lin(x), x @ lin.weight.T + lin.bias)
    torch.testing.assert_close(mlp(x), getattr(mlp, "2")(torch.nn.functional.gelu(getattr(mlp, "0")(x))))


def test_qformer_forward_with_attentions_shapes_and_equality():
    proj = make("qformer", query_num=5, layer_num=2).eval()
    x = torch.randn(2, 16, IN)
    tokens, self_attns, cross_attns = proj.forward_with_attentions(x)
    torch.testing.assert_close(tokens, proj(x))
    assert len(self_attns) == len(cross_attns) == 2
    heads = proj.qformer.config.num_attention_heads
    assert all(a.shape == (2, heads, 5, 5) for a in self_attns)
    assert all(a.shape == (2, heads, 5, 16) for a in cross_attns)
    torch.testing.assert_close(cross_attns[0].sum(-1), torch.ones(2, heads, 5))
    # without gradients: raw last-layer cross-attention, head mean
    torch.testing.assert_close(proj.query_to_patch_relevance(self_attns, cross_attns), cross_attns[-1].mean(1))


def test_gae_one_layer_hand_computation():
    proj = make("qformer", query_num=2, layer_num=1)
    a_s = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    g_s = torch.tensor([[1.0, -1.0], [2.0, 1.0]])
    a_c = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    g_c = torch.tensor([[1.0, 1.0, -1.0], [0.5, 2.0, 1.0]])
    as4 = lambda t: t[None, None]  # noqa: E731  (b=1, heads=1)
    rel = proj.query_to_patch_relevance([as4(a_s)], [as4(a_c)], [as4(g_s)], [as4(g_c)])
    # by hand: Ā_s = [[.6, 0], [.6, .7]]; R_qq = I + Ā_s; R_qi stays 0 after the self rule;
    # R̄_qq = rownorm(R_qq - I) + I = [[2, 0], [6/13, 20/13]]; Ā_c = [[.2, .3, 0], [.05, .2, .8]];
    # R_qi = R̄_qqᵀ Ā_c
    c0, c1 = torch.tensor([0.2, 0.3, 0.0]), torch.tensor([0.05, 0.2, 0.8])
    expected = torch.stack([2 * c0 + 6 / 13 * c1, 20 / 13 * c1])[None]
    torch.testing.assert_close(rel, expected)
    # two identical heads give the same head mean
    as4h = lambda t: t[None, None].expand(1, 2, *t.shape)  # noqa: E731
    rel2 = proj.query_to_patch_relevance([as4h(a_s)], [as4h(a_c)], [as4h(g_s)], [as4h(g_c)])
    torch.testing.assert_close(rel2, expected)


def test_gae_second_layer_propagates_through_self_relevance():
    proj = make("qformer", query_num=2, layer_num=2)
    eye = torch.eye(2)[None, None]
    ones = torch.ones(1, 1, 2, 2)
    a_c = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]])
    g_c = torch.ones_like(a_c)
    # layer 1: self-attention is the identity (Ā = I): R_qq = 2I, R̄_qq = rownorm(I) + I = 2I, R_qi = 2 Ā_c
    # layer 2: self rule R_qi = 2 Ā_c + I (2 Ā_c) = 4 Ā_c, R_qq = 4I, R̄_qq = 2I; cross rule adds 2 Ā_c
    rel = proj.query_to_patch_relevance([eye, eye], [a_c, a_c], [ones, ones], [g_c, g_c])
    torch.testing.assert_close(rel, 6 * a_c[:, 0])


def test_normalize_self_relevance_keeps_identity_rows():
    rel = torch.tensor([[1.0, 0.0], [0.5, 1.5]])
    torch.testing.assert_close(normalize_self_relevance(rel), torch.tensor([[1.0, 0.0], [0.5, 1.5]]))
    torch.testing.assert_close(normalize_self_relevance(torch.eye(3)), torch.eye(3))


def test_gae_with_real_gradients_is_nonnegative():
    proj = make("qformer", query_num=3, layer_num=2).eval()
    tokens, self_attns, cross_attns = proj.forward_with_attentions(torch.randn(1, 16, IN))
    for attn in self_attns + cross_attns:
        attn.retain_grad()
    tokens[0, 0].sum().backward()
    rel = proj.query_to_patch_relevance(self_attns, cross_attns, [a.grad for a in self_attns], [a.grad for a in cross_attns])
    assert rel.shape == (1, 3, 16)
    assert bool((rel >= 0).all()) and float(rel.sum()) > 0
