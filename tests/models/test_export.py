"""`deco.export`: deco -> llava-hf (read back by transformers) and deco's own save_pretrained round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_loading_fixtures import (
    IMAGE_SIZE,
    LLM,
    NUM_PATCHES,
    PROMPT,
    VISION,
    build_image_processor,
    pixels,
    prompt_ids,
    tokenizer,
)
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from deco.export import export, run
from deco.models.build import build_mllm
from deco.models.formats.common import LoadedModel
from deco.models.formats.deco_pretrained import save_deco_pretrained
from deco.models.formats.llava_hf import save_llava_hf
from deco.models.loading import load_model

SMALL = {"vision": {"config": VISION, "select_layer": -2, "select_feature": "patch"}, "llm": {"config": LLM}}


def small_loaded(projector: dict, seed: int = 0) -> LoadedModel:
    tok = tokenizer()
    torch.manual_seed(seed)
    model = build_mllm(SMALL, projector, tok).eval()
    config = {"model": SMALL, "projector": projector, "stage": {"template": "vicuna_v1"}, "image_aspect": "pad"}
    return LoadedModel(model, tok, build_image_processor(IMAGE_SIZE), config)


def logits(model, ids, pv):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pv).logits


def test_export_llava_hf_loads_in_transformers(tmp_path):
    loaded = small_loaded({"name": "mlp2x_gelu"})
    out = save_llava_hf(loaded.model, loaded.tokenizer, loaded.image_processor, tmp_path / "hf")
    ref = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation="eager").eval()
    processor = LlavaProcessor.from_pretrained(out)
    img = Image.fromarray((np.random.RandomState(0).rand(IMAGE_SIZE, IMAGE_SIZE, 3) * 255).astype("uint8"))
    enc = processor(text=PROMPT, images=img, return_tensors="pt")
    image_id = loaded.model.image_token_id
    assert int((enc.input_ids == image_id).sum()) == NUM_PATCHES  # the processor expands <image> as llava-hf does
    ids = prompt_ids(loaded.tokenizer)
    ours = logits(loaded.model, ids, enc.pixel_values)
    with torch.no_grad():
        theirs = ref(**enc).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # and back into deco: same model again
    again = load_model(out)
    torch.testing.assert_close(logits(again.model, ids, enc.pixel_values), ours, atol=0, rtol=0)


def test_export_llava_hf_refuses_compressive_projector(tmp_path):
    loaded = small_loaded({"name": "avgpool", "query_num": 4, "mlp_depth": 2, "pooling": "avg"})
    with pytest.raises(ValueError, match="only hold a 2-layer mlp2x_gelu projector.*format=deco"):
        save_llava_hf(loaded.model, loaded.tokenizer, loaded.image_processor, tmp_path / "hf")


@pytest.mark.parametrize("projector", [
    {"name": "avgpool", "query_num": 4, "mlp_depth": 2, "pooling": "avg"},
    {"name": "qformer", "query_num": 9, "layer_num": 2, "dropout": 0.0},
    {"name": "qformer", "query_num": 9, "layer_num": 1, "num_attention_heads": 32, "dropout": 0.0, "out_layer_num": 2},
])
def test_deco_pretrained_round_trip(tmp_path, projector):
    if "out_layer_num" in projector:  # the LLaVA-fork Q-Former variant that DeCo LoRA checkpoints load into
        from deco.models.formats.llava_qformer import QFormerMLPProjector

        loaded = small_loaded({"name": "mlp2x_gelu"})
        torch.manual_seed(1)
        cfg = {k: v for k, v in projector.items() if k != "name"}
        loaded.model.projector = QFormerMLPProjector(VISION["hidden_size"], LLM["hidden_size"], NUM_PATCHES, **cfg).eval()
        loaded.config["projector"] = projector
    else:
        loaded = small_loaded(projector)
    out = save_deco_pretrained(loaded, tmp_path / "deco")
    again = load_model(out)
    assert again.format == "deco" and again.projector_tag == loaded.projector_tag
    assert again.config["projector"] == projector and again.config["stage"]["template"] == "vicuna_v1"
    ids, pv = prompt_ids(loaded.tokenizer), pixels(5)
    torch.testing.assert_close(logits(again.model, ids, pv), logits(loaded.model, ids, pv), atol=0, rtol=0)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, atol=0, rtol=0, msg=key)


@pytest.fixture(scope="module")
def trained_lora_ckpt(tmp_path_factory):
    """A 3-step deco run with the LoRA finetune stage (LLM wrapped by peft), trained once for this file."""
    from conftest import TINY_RUN, compose_config

    from deco.train import train

    run = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", [*TINY_RUN, "stage=finetune_lora", "projector=avgpool", "query_num=16",
                                   "data.train.num_samples=8", "data.val.num_samples=4", "trainer.max_steps=2"], run)
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_export_cli_lightning_ckpt_to_deco(trained_lora_ckpt, tmp_path):
    original = load_model(trained_lora_ckpt)
    assert hasattr(original.model.llm, "merge_and_unload")  # still a peft adapter in the .ckpt
    out = run(export_config(tmp_path, f"ckpt={trained_lora_ckpt}", f"out_dir={tmp_path / 'exported'}", "format=deco"))
    again = load_model(out)
    assert again.projector_tag == original.projector_tag == "avgpool2_16"
    assert not hasattr(again.model.llm, "merge_and_unload")  # merged on export
    assert again.config["stage"]["lora"]["merged"] is True
    size = original.model.vision.image_size
    ids = prompt_ids(original.tokenizer)
    pv = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    # merged W + BA vs x W + (x A) B: equal up to float32 rounding (measured 1.4e-5 abs, 3e-6 rel on logits ~5)
    torch.testing.assert_close(logits(again.model, ids, pv), logits(original.model, ids, pv), atol=1e-5, rtol=1e-5)
    with pytest.raises(FileExistsError, match="not empty"):
        export(str(trained_lora_ckpt), str(out))


def test_export_cli_llava_hf_dir_to_deco(tmp_path):
    from test_loading_fixtures import write_llava_hf

    source = write_llava_hf(tmp_path / "hf")
    out = run(export_config(tmp_path, f"ckpt={source}", f"out_dir={tmp_path / 'exported'}"))
    original, again = load_model(source), load_model(out)
    assert again.format == "deco" and again.config["source"]["exported_from"]["format"] == "llava_hf"
    ids, pv = prompt_ids(original.tokenizer), pixels(6)
    torch.testing.assert_close(logits(again.model, ids, pv), logits(original.model, ids, pv), atol=0, rtol=0)


def export_config(tmp_path, *overrides):
    from conftest import compose_config

    return compose_config("export", list(overrides), tmp_path)


def test_export_args(tmp_path):
    from hydra.errors import ConfigCompositionException

    cfg = export_config(tmp_path, "ckpt=a", "out_dir=b", "load.base=c", "format=llava_hf")
    assert (cfg.ckpt, cfg.out_dir, cfg.load.base, cfg.format) == ("a", "b", "c", "llava_hf")
    with pytest.raises(SystemExit, match="out_dir=... is required"):
        run(export_config(tmp_path, "ckpt=a"))
    with pytest.raises(SystemExit, match="format=onnx is unknown"):
        run(export_config(tmp_path, "ckpt=a", "out_dir=b", "format=onnx"))
    with pytest.raises(ConfigCompositionException, match="foo"):
        export_config(tmp_path, "ckpt=a", "out_dir=b", "foo=1")
