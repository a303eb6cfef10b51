"""Real-format checkpoints feed `deco.explain` and `deco.evaluate` unchanged (tiny DeCo LoRA and llava-hf dirs)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config
from PIL import Image
from test_loading_fixtures import (
    LLM,
    NUM_PATCHES,
    VISION,
    write_clip,
    write_llama_base,
    write_llava_hf,
    write_llava_lora,
)

from deco.models.projectors.pooling import AvgPoolProjector


@pytest.fixture(scope="module")
def deco_lora_dir(tmp_path_factory):
    """The DeCo paper's release layout in miniature: avgpool2_4 LoRA + non_lora_trainables.bin over a Llama base."""
    root = tmp_path_factory.mktemp("deco_lora")
    clip = write_clip(root / "clip")
    write_llama_base(root / "base")
    torch.manual_seed(5)
    projector = AvgPoolProjector(VISION["hidden_size"], LLM["hidden_size"], NUM_PATCHES, query_num=4, mlp_depth=2)
    lora = root / "llava-v1.5-tiny-avgpool2_4-lora"
    lora.mkdir()
    state = {f"mlp_projector.{k}": v for k, v in projector.mlp_projector.state_dict().items()}
    return write_llava_lora(lora, root / "base", clip, state, "avgpool2_4")


def test_explain_rgae_on_deco_lora_checkpoint(deco_lora_dir, tmp_path):
    from deco.explain.__main__ import run

    image = tmp_path / "red.png"
    Image.new("RGB", (80, 56), (200, 20, 20)).save(image)
    cfg = compose_config("explain", [f"ckpt={deco_lora_dir}", f"image={image}", "text=red", "method=rgae",
                                     "device=cpu", "progress=false"], tmp_path / "out")
    records = run(cfg)["records"]
    assert [(r["method"], r["projector"]) for r in records] == [("rgae", "avgpool2_4")]
    rel = torch.load(tmp_path / "out" / records[0]["files"]["tensors"], weights_only=True)
    # R_q2i of a 4x4 -> 2x2 average pooling: each query averages its 2x2 block of patches
    block = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    torch.testing.assert_close(rel["r_q2i"], torch.kron(block, block))
    # R-GAE: R_t2i = R_t2q x R_q2i on the 4x4 patch grid
    torch.testing.assert_close(rel["r_t2i"].flatten(), rel["r_t2q"] @ rel["r_q2i"], atol=1e-6, rtol=1e-5)


def test_evaluate_on_llava_hf_checkpoint(tmp_path):
    from deco.evaluate import evaluate

    ckpt = write_llava_hf(tmp_path / "llava-hf")
    cfg = compose_config("evaluate", [f"ckpt={ckpt}", "benchmark=shapes_existence", "benchmark.num_samples=4",
                                      "benchmark.image_size=56", "logger=none", "device=cpu", "progress=false",
                                      "batch_size=2"], tmp_path / "out")
    evaluate(cfg)
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["projector"] == "mlp2x_gelu" and summary["metrics"]["n"] == 4
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4
