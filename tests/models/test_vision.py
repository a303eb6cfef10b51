"""Vision tower: feature selection equals the raw CLIP hidden states, geometry properties, loading."""

import pytest
import torch
from transformers import CLIPVisionModel

from deco.models.vision import VisionTower

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "image_size": 336, "patch_size": 14}


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return VisionTower(config=TINY).eval()


def test_geometry(tower):
    assert (tower.hidden_size, tower.image_size, tower.grid_size, tower.num_patches) == (32, 336, 24, 576)
    assert tower.model.config._attn_implementation == "eager"


def test_select_layer_matches_raw_hidden_states(tower):
    pixels = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        raw = tower.model(pixels, output_hidden_states=True).hidden_states
        feats = tower(pixels)
    assert feats.shape == (2, 576, 32)
    torch.testing.assert_close(feats, raw[-2][:, 1:])
    tower.select_feature = "cls_patch"
    try:
        with torch.no_grad():
            torch.testing.assert_close(tower(pixels), raw[-2])
        assert tower.num_patches == 577
    finally:
        tower.select_feature = "patch"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("select_layer", [-4, -2, -1, 0, 1, 3])
def test_only_the_layers_up_to_the_selected_one_run(select_layer, attn):
    torch.manual_seed(0)
    tower = VisionTower(config=TINY, select_layer=select_layer, attn_implementation=attn).eval()
    pixels = torch.randn(1, 3, 336, 336)
    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, layer in enumerate(tower.model.encoder.layers)]
    with torch.no_grad():
        feats = tower(pixels)
    for hook in hooks:
        hook.remove()
    assert ran == list(range(select_layer % 4))  # layers after the selected one are skipped
    assert len(tower.model.encoder.layers) == 3  # restored: every layer's weights stay in the module
    with torch.no_grad():  # the full HF forward, after the truncated one, still records every hidden state
        raw = tower.model(pixels, output_hidden_states=True).hidden_states
        assert len(raw) == 4
        torch.testing.assert_close(feats, raw[select_layer][:, 1:])
        torch.testing.assert_close(tower(pixels), feats)  # and the other way round


def test_other_layer_and_bad_arguments():
    torch.manual_seed(0)
    small = dict(TINY, image_size=56)
    tower = VisionTower(config=small, select_layer=-1).eval()
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(tower(pixels), tower.model(pixels, output_hidden_states=True).hidden_states[-1][:, 1:])
    with pytest.raises(ValueError, match="select_feature='cls' is unknown; choose one of: patch, cls_patch"):
        VisionTower(config=small, select_feature="cls")
    with pytest.raises(ValueError, match="select_layer=-9 is out of range"):
        VisionTower(config=small, select_layer=-9)
    with pytest.raises(ValueError, match="needs name_or_path"):
        VisionTower()
    with pytest.raises(ValueError, match=r"pixel_values must be \(b, 3, H, W\)"):
        tower(torch.randn(3, 56, 56))


def test_from_pretrained_local_dir(tmp_path):
    torch.manual_seed(0)
    small = dict(TINY, image_size=56)
    CLIPVisionModel(__import__("transformers").CLIPVisionConfig(**small)).save_pretrained(tmp_path / "vit")
    loaded = VisionTower(name_or_path=str(tmp_path / "vit")).eval()
    reference = CLIPVisionModel.from_pretrained(tmp_path / "vit").eval()
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), reference(pixels, output_hidden_states=True).hidden_states[-2][:, 1:])
    assert loaded.model.config._attn_implementation == "eager"
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        VisionTower(name_or_path=missing)
