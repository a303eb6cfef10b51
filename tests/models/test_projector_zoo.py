"""The projector zoo: token counts, shapes, parameter counts by hand, pixel shuffle = space-to-depth,
C-Abstractor's pool = nn.AdaptiveAvgPool2d, and each R_q2i's documented structure (receptive fields = the
Jacobian of the linearised network; GAE over the cross-attention with its region / sampling structure)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from deco.models.projectors import build_projector
from deco.models.projectors.compressor import allowed_query_nums, conv3x3_matrix, query_num_problem
from deco.models.projectors.conv_layers import LayerNorm2d, SqueezeExcite
from deco.models.projectors.dabstractor import sampling_matrix
from deco.models.projectors.pooling import adaptive_pool_matrix
from deco.models.projectors.tokenpacker import region_mask

IN, OUT, N = 8, 12, 36  # 6 x 6 patch grid
ZOO = ("pixelshuffle", "cabstractor", "dabstractor", "ldp", "ldpv2", "tokenpacker", "resampler")
SMALL = {"dabstractor": {"num_attention_heads": 2, "num_points": 2}}


def make(name, query_num=9, in_dim=IN, out_dim=OUT, num_patches=N, **kwargs):
    torch.manual_seed(0)
    return build_projector(name, in_dim=in_dim, out_dim=out_dim, num_patches=num_patches, query_num=query_num,
                           **{**SMALL.get(name, {}), **kwargs})


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("query_num", [9, 4, 36])
def test_token_count_is_query_num(name, query_num):
    proj = make(name, query_num)
    out = proj(torch.randn(2, N, IN))
    assert proj.num_tokens() == out.shape[1] == query_num
    assert out.shape == (2, query_num, OUT)


def test_query_rules_and_messages():
    assert allowed_query_nums("divisor", 576) == [1, 4, 9, 16, 36, 64, 144, 576]
    assert allowed_query_nums("square", 36) == [1, 4, 9, 16, 25, 36]
    assert query_num_problem("resampler", "any", 50, 576) is None
    msg = query_num_problem("pixelshuffle", "divisor", 100, 576)
    assert msg.startswith("query_num=100 does not fit projector=pixelshuffle") and msg.endswith("144, 576")
    with pytest.raises(ValueError, match="query_num=25 does not fit projector=tokenpacker"):
        make("tokenpacker", 25)
    with pytest.raises(ValueError, match="query_num=10 does not fit projector=cabstractor"):
        make("cabstractor", 10)
    assert make("resampler", 5).num_tokens() == 5  # any count


def test_parameter_counts_by_hand():
    c = IN  # widths 8 -> 12, 36 patches, 9 queries
    mlp2 = (4 * c * OUT + OUT) + (OUT * OUT + OUT)  # pixel shuffle's readout reads 4 c
    assert n_params(make("pixelshuffle")) == mlp2 == 552
    # RegNet bottleneck at width 8: conv1 64 + LN 16 + dw conv 72 + LN 16 + SE (8*2+2, 2*8+8) + conv3 64 + LN 16
    block = 64 + 16 + 72 + 16 + 18 + 24 + 64 + 16
    readout = (c * OUT + OUT) + (OUT * OUT + OUT)
    assert n_params(make("cabstractor", layer_num=1)) == N * c + 2 * block + readout == 1132
    # widening to 16: b1 of stage 1 gains a 1x1 shortcut conv + LN; stage 2 is 16 -> 16 with SE width 4
    s1 = 8 * 16 + 32 + 9 * 16 + 32 + (16 * 2 + 2) + (2 * 16 + 16) + 256 + 32 + (8 * 16 + 32)
    s2 = 256 + 32 + 9 * 16 + 32 + (16 * 4 + 4) + (4 * 16 + 16) + 256 + 32
    wide = make("cabstractor", layer_num=1, hidden_size=16)
    assert n_params(wide) == N * c + s1 + s2 + (16 * OUT + OUT) + 156 == 2414
    mlp_first = (c * OUT + OUT) + (OUT * OUT + OUT)  # 264
    # inverted residual at 12: dw 108 + LN 24 + SE (12*8+8, 8*12+12; 8 = make_divisible(3)) + pw 144 + LN 24
    inv = 108 + 24 + 104 + 108 + 144 + 24
    assert n_params(make("ldp")) == mlp_first + 2 * inv == 1288
    assert n_params(make("ldpv2")) == mlp_first + (9 * OUT + OUT) == 384
    # q_proj 64, k/v MLPs 2 x 144, three LNs 48, in_proj 3*64+24, out_proj 72, readout 264
    assert n_params(make("tokenpacker")) == 64 + 2 * 144 + 48 + (3 * 64 + 24) + 72 + readout == 952
    # latents 72, pos 288; layer: 2 LNs 32, to_q 64, to_kv 128, to_out 64; FF: LN 16 + 256 + 256; norm 16; Linear 108
    assert n_params(make("resampler", layer_num=1)) == 72 + N * c + 32 + 64 + 128 + 64 + 16 + 512 + 16 + 108 == 1300
    # pos 288, query emb 72, reference 18; layer: self-attn 4*72, LN 16, offsets 8*8+8, weights 8*4+4,
    # value/output 2*72, LN 16, fc1/fc2 2*72, LN 16; Linear 108
    layer = 288 + 16 + 72 + 36 + 144 + 16 + 144 + 16
    assert n_params(make("dabstractor", layer_num=1)) == 288 + 72 + 18 + layer + 108 == 1218


def test_pixelshuffle_is_space_to_depth():
    proj = make("pixelshuffle", 9)  # r = 2
    x = torch.randn(2, N, IN)
    expected = torch.zeros(2, 9, 4 * IN)
    for i in range(3):
        for j in range(3):
            parts = [x[:, (2 * i + a) * 6 + (2 * j + b)] for a in range(2) for b in range(2)]
            expected[:, i * 3 + j] = torch.cat(parts, dim=-1)
    assert torch.equal(proj.mix(x), expected)
    torch.testing.assert_close(proj(x), proj.readout(expected))
    rel = proj.query_to_patch_relevance()
    block = torch.zeros(9, N)
    for p in range(N):
        block[(p // 6 // 2) * 3 + (p % 6) // 2, p] = 0.25
    assert torch.equal(rel, block)


def test_pixelshuffle_gradient_map_stays_in_its_block():
    proj = make("pixelshuffle", 9)
    rel = proj.jacobian_relevance(torch.randn(1, N, IN))[0]
    torch.testing.assert_close(rel.sum(1), torch.ones(9))
    assert torch.equal(rel > 0, proj.query_to_patch_relevance() > 0)


def test_cabstractor_pool_stage_is_adaptive_avg_pool():
    proj = make("cabstractor", 16, layer_num=1)  # 6 -> 4: uneven, overlapping cells
    seen = {}
    proj.net[1].register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    proj(torch.randn(2, N, IN))
    torch.testing.assert_close(seen["out"], nn.AdaptiveAvgPool2d((4, 4))(seen["inp"]))
    flat = rearrange(seen["inp"], "b d h w -> b (h w) d")
    pool = torch.kron(adaptive_pool_matrix(6, 4), adaptive_pool_matrix(6, 4))
    torch.testing.assert_close(rearrange(seen["out"], "b d h w -> b (h w) d"), pool @ flat)
    bare = make("cabstractor", 16, layer_num=0, pos_emb=False)  # no blocks: pool then readout
    x = torch.randn(2, N, IN)
    pooled = rearrange(nn.AdaptiveAvgPool2d(4)(rearrange(x, "b (h w) d -> b d h w", h=6)), "b d h w -> b (h w) d")
    torch.testing.assert_close(bare(x), bare.readout(pooled))


def linearise(module: nn.Module) -> nn.Module:
    """Norms, activations and SE gates -> Identity; depthwise 3x3 taps -> 1; 1x1 convs and Linears -> identity."""
    drop = (nn.LayerNorm, LayerNorm2d, SqueezeExcite, nn.SiLU, nn.GELU, nn.Hardswish, nn.ReLU)
    for name, child in list(module.named_children()):
        if isinstance(child, drop):
            setattr(module, name, nn.Identity())
        else:
            linearise(child)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d):
                if sub.groups > 1:
                    sub.weight.fill_(1.0)
                else:
                    sub.weight.copy_(torch.eye(sub.out_channels)[:, :, None, None])
            elif isinstance(sub, nn.Linear):
                sub.weight.copy_(torch.eye(sub.out_features, sub.in_features))
            if isinstance(sub, (nn.Conv2d, nn.Linear)) and sub.bias is not None:
                sub.bias.zero_()
    return module


@pytest.mark.parametrize(("name", "query_num", "kwargs"), [
    ("cabstractor", 4, {"layer_num": 2}), ("cabstractor", 16, {"layer_num": 1}),
    ("ldp", 9, {}), ("ldp", 4, {}), ("ldpv2", 4, {}), ("ldpv2", 16, {}),
])
def test_receptive_field_is_the_jacobian_of_the_linearised_network(name, query_num, kwargs):
    proj = make(name, query_num, in_dim=4, out_dim=4, pos_emb=False, **kwargs)
    field = proj.query_to_patch_relevance()
    torch.testing.assert_close(field.sum(1), torch.ones(query_num))
    linearise(proj)
    x = torch.randn(1, N, 4)
    jac = torch.autograd.functional.jacobian(lambda t: proj.mix(t), x)[0, :, :, 0]  # q c n c
    assert torch.equal(jac[:, 0, :, 1], torch.zeros(query_num, N))  # channels stay apart
    mat = jac[:, 0, :, 0]
    torch.testing.assert_close(field, mat / mat.sum(1, keepdim=True))
    # the gradient-based variant on the same network gives the same map
    proj.relevance = "jacobian"
    torch.testing.assert_close(proj.query_to_patch_relevance(patch_feats=x)[0], field)


def test_conv3x3_matrix_by_hand():
    mat = conv3x3_matrix(4, stride=2)  # 4x4 -> 2x2, taps at -1..1 around (0, 0), (0, 2), (2, 0), (2, 2)
    assert mat.shape == (4, 16)
    assert mat[0].reshape(4, 4).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert mat[3].reshape(4, 4).tolist() == [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]]


def test_ldp_structure_follows_mobilevlm():
    ldp = make("ldp", 9)
    assert [type(m).__name__ for m in ldp.mlp] == ["Identity", "Linear", "GELU", "Linear"]
    assert ldp.mb_block[1].use_res_connect and not ldp.mb_block[2].use_res_connect
    assert ldp.mb_block[2].block[0][0].stride == (2, 2)
    v2 = make("ldpv2", 9)
    x = torch.randn(1, N, IN)
    grid = rearrange(v2.mlp(x), "b (h w) d -> b d h w", h=6)
    pooled = F.adaptive_avg_pool2d(grid, 3)
    expected = pooled + v2.peg.peg[0](pooled)
    torch.testing.assert_close(v2(x), rearrange(expected, "b d h w -> b (h w) d"))


def grads_of(tokens, maps):
    return list(torch.autograd.grad(tokens.square().sum(), maps, retain_graph=True))


def test_tokenpacker_attends_only_inside_its_region():
    proj = make("tokenpacker", 9)
    mask = region_mask(6, 3)
    assert mask.sum(1).tolist() == [4] * 9 and mask.sum(0).tolist() == [1] * N
    x = torch.randn(2, N, IN)
    tokens, self_maps, cross = proj.forward_with_attentions(x)
    assert self_maps == [] and len(cross) == 1 and cross[0].shape == (2, 1, 9, N)
    raw = proj.query_to_patch_relevance(cross_attns=cross)
    torch.testing.assert_close(raw.sum(-1), torch.ones(2, 9))
    assert torch.equal(raw[:, ~mask], torch.zeros(2, int((~mask).sum())))
    # one cross layer, no self-attention: GAE is E_h[(grad * A)^+]
    (grad,) = grads_of(tokens, cross)
    gae = proj.query_to_patch_relevance(self_attns=[], cross_attns=cross, self_grads=[], cross_grads=[grad])
    torch.testing.assert_close(gae, (grad * cross[0]).clamp(min=0).mean(1))
    # queries: at r = 2 bilinear downsampling is the 2x2 block mean
    pooled = F.avg_pool2d(rearrange(x, "b (h w) d -> b d h w", h=6), 2)
    torch.testing.assert_close(proj.point_queries(x), rearrange(pooled, "b d h w -> b (h w) d"))


def reference_perceiver_attention(attn, x, latents):
    """lucidrains' PerceiverAttention (one softmax over [media; latents]) with deco's weights."""
    x, latents = attn.norm_media(x), attn.norm_latents(latents)
    q = attn.to_q(latents)
    k, v = attn.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
    q, k, v = (rearrange(t, "b m (h e) -> b h m e", h=attn.heads) for t in (q, k, v))
    sim = (q * attn.scale) @ k.transpose(-1, -2)
    out = (sim - sim.amax(-1, keepdim=True)).softmax(-1) @ v
    return attn.to_out(rearrange(out, "b h m e -> b m (h e)"))


def test_resampler_split_attention_equals_one_softmax():
    proj = make("resampler", 5, num_attention_heads=2)
    attn = proj.layers[0][0]
    x, lat = torch.randn(2, N, IN), torch.randn(2, 5, IN)
    out, a_cross, a_self = attn(x, lat)
    torch.testing.assert_close(out, reference_perceiver_attention(attn, x, lat))
    torch.testing.assert_close(a_cross.sum(-1) + a_self.sum(-1), torch.ones(2, 2, 5))
    tokens, self_maps, cross = proj.forward_with_attentions(x)
    assert len(self_maps) == len(cross) == 2 and self_maps[0].shape == (2, 2, 5, 5)
    torch.testing.assert_close(tokens, proj(x))
    rel = proj.query_to_patch_relevance(self_maps, cross, *[grads_of(tokens, m) for m in (self_maps, cross)])
    assert rel.shape == (2, 5, N) and bool((rel >= 0).all()) and float(rel.sum()) > 0


def grid_sample_reference(value, locations, weights, grid):
    """transformers' multi_scale_deformable_attention at one level (F.grid_sample, align_corners=False)."""
    b, n, h, e = value.shape
    v = rearrange(value, "b (y x) h e -> (b h) e y x", y=grid)
    g = rearrange(2 * locations - 1, "b q h p c -> (b h) q p c")
    sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (b h) e q p
    w = rearrange(weights, "b q h p -> (b h) 1 q p")
    return rearrange((sampled * w).sum(-1), "(b h) e q -> b q (h e)", b=b)


def test_deformable_sampling_matrix_equals_grid_sample():
    torch.manual_seed(1)
    b, q, h, p, e = 2, 5, 2, 3, 4
    value = torch.randn(b, N, h, e)
    locations = torch.rand(b, q, h, p, 2) * 1.4 - 0.2  # some points fall outside the map
    weights = torch.rand(b, q, h, p).softmax(-1)
    attn = sampling_matrix(locations, weights, 6, 6)  # b h q n
    out = rearrange(attn @ rearrange(value, "b n h e -> b h n e"), "b h q e -> b q (h e)")
    torch.testing.assert_close(out, grid_sample_reference(value, locations, weights, 6))
    inside = sampling_matrix(torch.rand(b, q, h, p, 2) * (4 / 6) + 1 / 6, weights, 6, 6)
    torch.testing.assert_close(inside.sum(-1), torch.ones(b, h, q))
    assert bool((attn.sum(-1) <= 1 + 1e-6).all())


def test_dabstractor_reference_grid_and_gae():
    proj = make("dabstractor", 9)
    ref = proj.reference_points[0]
    assert ref[0].tolist() == pytest.approx([1 / 6, 1 / 6]) and ref[5].tolist() == pytest.approx([5 / 6, 1 / 2])
    x = torch.randn(2, N, IN)
    tokens, self_maps, cross = proj.forward_with_attentions(x)
    torch.testing.assert_close(tokens, proj(x))  # the dense map (explain) = grid_sample (training)
    assert len(self_maps) == len(cross) == 2 and cross[0].shape == (2, 2, 9, N)
    torch.testing.assert_close(self_maps[0].sum(-1), torch.ones(2, 2, 9))
    rel = proj.query_to_patch_relevance(self_maps, cross, *[grads_of(tokens, m) for m in (self_maps, cross)])
    assert rel.shape == (2, 9, N) and bool((rel >= 0).all()) and float(rel.sum()) > 0
    assert torch.equal(proj.query_to_patch_relevance(cross_attns=cross), cross[-1].mean(1))
