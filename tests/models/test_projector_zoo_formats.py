"""Checkpoint import for the projector zoo, on tiny checkpoints written in the public layouts.

MobileVLM (`ldpnet` / `ldpnetv2` in a LLaVA-layout directory, `model.mm_projector.*`): reference
transcriptions of MobileVLM's `LDPBlock` / `LDPNetV2Projector` (torchvision / timm module names) are saved
and loaded through `load_model`, and the logits match. Honeybee (`abstractor.*` + config.json): the
C-Abstractor against a functional transcription of timm's RegStage, the D-Abstractor layer against
transformers' own `DeformableDetrDecoderLayer`.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from einops import rearrange
from test_loading_fixtures import (
    LLM,
    NUM_PATCHES,
    VISION,
    pixels,
    prompt_ids,
    reference_logits,
    write_clip,
    write_llava_original,
)
from torch import nn
from torch.nn import functional as F

from deco.models.formats.honeybee import honeybee_projector_config, load_honeybee_projector
from deco.models.formats.projector_type import parse_projector_type
from deco.models.loading import load_model
from deco.models.projectors import build_projector

IMAGE_ID = 4


class RefLayerNorm2d(nn.LayerNorm):  # timm LayerNormAct2d(act_layer=None)
    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RefSE(nn.Module):  # torchvision SqueezeExcitation(scale_activation=Hardsigmoid)
    def __init__(self, c, s):
        super().__init__()
        self.avgpool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(self.avgpool(x)))))


class RefInvertedResidual(nn.Module):  # torchvision InvertedResidual(cfg(c, 3, c, c, True, "HS", stride, 1, 1))
    def __init__(self, c, stride):
        super().__init__()
        squeeze = max(8, int(c // 4 + 4) // 8 * 8)
        self.block = nn.Sequential(
            nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), RefLayerNorm2d(c), nn.Hardswish()),
            RefSE(c, squeeze), nn.Sequential(nn.Conv2d(c, c, 1, bias=False), RefLayerNorm2d(c)))
        self.stride = stride

    def forward(self, x):
        return self.block(x) + x if self.stride == 1 else self.block(x)


class RefLDPBlock(nn.Module):  # MobileVLM v1 mobilevlm/model/vision_projector.py
    def __init__(self, inc, ouc):
        super().__init__()
        self.mlp = nn.Sequential(nn.Identity(), nn.Linear(inc, ouc), nn.GELU(), nn.Linear(ouc, ouc))
        self.mb_block = nn.Sequential(nn.Identity(), RefInvertedResidual(ouc, 1), RefInvertedResidual(ouc, 2))

    def forward(self, x):
        b, n, _ = x.shape
        h = int(math.sqrt(n))
        x = self.mlp(x).permute(0, 2, 1).reshape(b, -1, h, h)
        return self.mb_block(x).flatten(2).permute(0, 2, 1)


class RefLDPNet(nn.Module):
    def __init__(self, inc, ouc):
        super().__init__()
        self.model = RefLDPBlock(inc, ouc)

    def forward(self, x):
        return self.model(x)


class RefLDPv2(nn.Module):  # MobileVLM V2 LDPNetV2Projector (FeatureIRLayer, TokenDownLayer, PosInjectLayer)
    def __init__(self, inc, ouc, side):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.mlp = nn.Sequential(nn.Linear(inc, ouc), nn.GELU(), nn.Linear(ouc, ouc))
        self.side = side
        self.peg = nn.Module()
        self.peg.peg = nn.Sequential(nn.Conv2d(ouc, ouc, 3, 1, 1, bias=True, groups=ouc))

    def forward(self, x):
        b, n, _ = x.shape
        h = int(math.sqrt(n))
        x = self.mlp.mlp(x).permute(0, 2, 1).reshape(b, -1, h, h)
        x = F.adaptive_avg_pool2d(x, (self.side, self.side))
        x = self.peg.peg(x) + x
        return x.flatten(2).transpose(1, 2)


def perturbed(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module.eval()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("zoo-clip") / "clip")


@pytest.mark.parametrize(("kind", "name"), [("ldpnet", "ldp"), ("ldpnetv2", "ldpv2")])
def test_mobilevlm_checkpoint_loads_with_matching_logits(tmp_path, clip_dir, kind, name):
    torch.manual_seed(3)
    ref = RefLDPNet(VISION["hidden_size"], LLM["hidden_size"]) if kind == "ldpnet" else RefLDPv2(
        VISION["hidden_size"], LLM["hidden_size"], 2)
    ref = perturbed(ref, 4)
    llm, tok = write_llava_original(tmp_path, clip_dir, ref, kind)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(model_type="mobilevlm", architectures=["MobileLlamaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(tmp_path)
    assert loaded.config["projector"] == {"name": name, "mlp_depth": 2}
    assert loaded.model.num_visual_tokens == NUM_PATCHES // 4  # MobileVLM halves each side
    ids, pv = prompt_ids(tok), pixels(1)
    expected = reference_logits(clip_dir, ref, llm, ids, pv, IMAGE_ID)
    with torch.no_grad():
        got = loaded.model(input_ids=ids, pixel_values=pv).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_mobilevlm_types_parse_and_are_listed():
    assert parse_projector_type("ldpnetv2") == {"name": "ldpv2", "mlp_depth": 2}
    with pytest.raises(ValueError, match="ldpnet, ldpnetv2"):
        parse_projector_type("ldpnetv3")


# ---------------------------------------------------------------- Honeybee

CABS = {"projector_type": "c-abs", "depth": 1, "mlp_depth": 2, "hidden_size": 16, "num_eos_tokens": 0,
        "pos_emb": True, "prenorm": True}


def ref_cabstractor(sd, x, depth, grid, side):
    """Honeybee CAbstractor forward written from timm's RegStage / Bottleneck / ConvNormAct, on `abstractor.*`."""
    def cna(t, p, groups=1, act=True):
        w = sd[f"{p}.conv.weight"]
        t = F.conv2d(t, w, padding=w.shape[-1] // 2, groups=groups)
        t = F.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],), sd[f"{p}.bn.weight"], sd[f"{p}.bn.bias"], 1e-5)
        t = t.permute(0, 3, 1, 2)
        return F.silu(t) if act else t

    def stage(t, p):
        for i in range(1, depth + 1):
            b = f"{p}.b{i}"
            y = cna(t, f"{b}.conv1")
            y = cna(y, f"{b}.conv2", groups=y.shape[1])
            s = F.silu(F.conv2d(y.mean((2, 3), keepdim=True), sd[f"{b}.se.fc1.weight"], sd[f"{b}.se.fc1.bias"]))
            y = y * torch.sigmoid(F.conv2d(s, sd[f"{b}.se.fc2.weight"], sd[f"{b}.se.fc2.bias"]))
            y = cna(y, f"{b}.conv3", act=False)
            short = cna(t, f"{b}.downsample", act=False) if f"{b}.downsample.conv.weight" in sd else t
            t = F.silu(y + short)
        return t

    a = "abstractor"
    x = F.layer_norm(x, (x.shape[-1],), sd[f"{a}.prenorm.weight"], sd[f"{a}.prenorm.bias"]) + sd[f"{a}.pos_emb"][:, 1:]
    t = stage(rearrange(x, "b (h w) d -> b d h w", h=grid), f"{a}.net.0")
    t = stage(F.adaptive_avg_pool2d(t, side), f"{a}.net.2")
    t = rearrange(t, "b d h w -> b (h w) d")
    t = F.linear(F.silu(F.linear(t, sd[f"{a}.readout.0.weight"], sd[f"{a}.readout.0.bias"])),
                 sd[f"{a}.readout.2.weight"], sd[f"{a}.readout.2.bias"])
    return t


def write_honeybee(path, projector_cfg, abstractor_state, num_query_tokens):
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "mllm", "num_query_tokens": num_query_tokens, "visual_projector_config": projector_cfg}
    (path / "config.json").write_text(json.dumps(config))
    state = {f"abstractor.{k}": v for k, v in abstractor_state.items()}
    state["language_model.model.embed_tokens.weight"] = torch.zeros(3, 4)  # other parts are ignored
    torch.save(state, path / "pytorch_model.bin")


def test_honeybee_cabstractor_matches_a_timm_transcription(tmp_path):
    source = perturbed(build_projector("cabstractor", 8, 12, 36, query_num=9, layer_num=1, hidden_size=16,
                                       prenorm=True), 5)
    state = dict(source.state_dict())
    state["pos_emb"] = torch.cat([torch.randn(1, 1, 8), state["pos_emb"]], dim=1)  # an old CLS row
    write_honeybee(tmp_path, CABS, state, 9)
    projector, cfg, report = load_honeybee_projector(tmp_path, 8, 12, 36)
    assert cfg == {"name": "cabstractor", "query_num": 9, "pos_emb": True, "layer_num": 1, "mlp_depth": 2,
                   "hidden_size": 16, "prenorm": True, "mlp_act": "silu"} and report["unused"] == []
    x = torch.randn(2, 36, 8)
    sd = {f"abstractor.{k}": v for k, v in state.items()}
    torch.testing.assert_close(projector.eval()(x), ref_cabstractor(sd, x, 1, 6, 3))
    timm_block = ["conv1.conv.weight", "conv1.bn.weight", "conv1.bn.bias", "conv2.conv.weight", "conv2.bn.weight",
                  "conv2.bn.bias", "se.fc1.weight", "se.fc1.bias", "se.fc2.weight", "se.fc2.bias",
                  "conv3.conv.weight", "conv3.bn.weight", "conv3.bn.bias"]
    names = [k for k in projector.state_dict() if k.startswith("net.0.b1.")]
    shortcut = ["downsample.conv.weight", "downsample.bn.weight", "downsample.bn.bias"]
    assert names == [f"net.0.b1.{k}" for k in timm_block + shortcut]


def test_honeybee_dabstractor_layer_is_transformers_deformable_detr(tmp_path):
    from transformers import DeformableDetrConfig
    from transformers.models.deformable_detr.modeling_deformable_detr import DeformableDetrDecoderLayer

    source = perturbed(build_projector("dabstractor", 8, 12, 36, query_num=9, layer_num=1, num_attention_heads=2,
                                       num_points=2, ffn_dim=8), 6)
    layer = source.layers[0]
    cfg = DeformableDetrConfig(d_model=8, decoder_attention_heads=2, decoder_n_points=2, decoder_ffn_dim=8,
                               num_feature_levels=1, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    cfg._attn_implementation = "eager"
    hf = DeformableDetrDecoderLayer(cfg).eval()
    # transformers 5 renamed two modules of the 4.x layout Honeybee saved (out_proj -> o_proj, fc* -> mlp.fc*)
    renamed = {("mlp." + k if k.startswith("fc") else k.replace("self_attn.out_proj", "self_attn.o_proj")): v
               for k, v in layer.state_dict().items()}
    hf.load_state_dict(renamed)
    hidden, pos, feats, ref = torch.randn(2, 9, 8), torch.randn(2, 9, 8), torch.randn(2, 36, 8), torch.rand(2, 9, 2)
    expected = hf(hidden, object_queries_position_embeddings=pos, reference_points=ref[:, :, None],
                  spatial_shapes=torch.tensor([[6, 6]]), spatial_shapes_list=[(6, 6)],
                  level_start_index=torch.tensor([0]), encoder_hidden_states=feats)
    expected = expected[0] if isinstance(expected, tuple) else expected
    torch.testing.assert_close(layer(hidden, pos, feats, ref, 6)[0], expected)
    torch.testing.assert_close(layer(hidden, pos, feats, ref, 6, dense=False)[0], expected)
    # Honeybee names: v_pos_emb, output_proj (the D-Abstractor's readout)
    state = {("v_pos_emb" if k == "pos_emb" else k.replace("readout.0.", "output_proj.")): v
             for k, v in source.state_dict().items()}
    write_honeybee(tmp_path, {"projector_type": "d-abs", "decoder_layers": 1, "decoder_attention_heads": 2,
                              "decoder_n_points": 2, "decoder_ffn_dim": 8, "num_feature_levels": 1,
                              "pooled_v_target": "query", "pos_emb": True, "num_eos_tokens": 0, "d_model": 8}, state, 9)
    projector, _, report = load_honeybee_projector(tmp_path, 8, 12, 36)
    x = torch.randn(2, 36, 8)
    assert report["unused"] == []
    torch.testing.assert_close(projector.eval()(x), source(x))


def test_honeybee_unsupported_parts_fail_clearly():
    with pytest.raises(ValueError, match="num_eos_tokens=1"):
        honeybee_projector_config({**CABS, "num_eos_tokens": 1, "num_query_tokens": 9})
    with pytest.raises(ValueError, match="projector_type='resampler' is not supported"):
        honeybee_projector_config({"projector_type": "resampler", "num_query_tokens": 9})
