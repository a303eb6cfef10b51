"""Inputs that must never be read or decoded: paths outside image_root, decompression bombs, 60000x4 strips.

Each is a counted skip in the LLaVA JSON loader and in `to_wds` (which shares the loader's helpers),
and an over-long sample (counting the q - 1 extra visual tokens) is a `too_long` skip in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import deco.data.image as image_module
from deco.data.llava_json import LlavaJsonDataset
from deco.data.shapes import make_sample
from deco.data.to_wds import convert


def _qa():
    return [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A circle."}]


def write_unsafe_corpus(root: Path, secret: Path) -> Path:
    """data.json with 2 good records and one of each unsafe kind; `secret` lies outside root."""
    (root / "img").mkdir(parents=True)
    make_sample(0, 0, image_size=48)[0].image.save(root / "img" / "ok.jpg")
    make_sample(0, 1, image_size=48)[0].image.save(secret)
    Image.new("L", (60000, 4)).save(root / "img" / "strip.png")  # ~800 bytes
    Image.new("1", (12000, 12000)).save(root / "img" / "bomb.png")  # 144 M pixels in a few KB
    records = [
        {"id": "good-0", "image": "img/ok.jpg", "conversations": _qa()},
        {"id": "up", "image": f"../{secret.name}", "conversations": _qa()},
        {"id": "deep", "image": "img/../../../etc/passwd", "conversations": _qa()},
        {"id": "abs", "image": str(secret), "conversations": _qa()},
        {"id": "strip", "image": "img/strip.png", "conversations": _qa()},
        {"id": "bomb", "image": "img/bomb.png", "conversations": _qa()},
        {"id": "good-1", "image": "img/./ok.jpg", "conversations": _qa()},
    ]
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, Path]:
    secret = tmp_path / "secret.jpg"
    return write_unsafe_corpus(tmp_path / "data", secret), secret


def nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


def test_loader_refuses_paths_outside_root_and_skips_bombs(corpus, tok, proc):
    path, _ = corpus
    ds = LlavaJsonDataset(str(path), tokenizer=tok, image_processor=proc, template="vicuna_v1", max_length=128)
    assert nonzero(ds.skips.counts()) == {"unsafe_path": 3}  # refused before any file is touched
    ids = [ds[i]["id"] for i in range(len(ds))]
    assert set(ids) == {"good-0", "good-1"}
    assert nonzero(ds.skips.counts()) == {"unsafe_path": 3, "extreme_aspect": 1, "oversized_image": 1}


def test_absolute_paths_only_with_the_option(corpus, tok, proc):
    path, _ = corpus
    ds = LlavaJsonDataset(str(path), tokenizer=tok, image_processor=proc, template="vicuna_v1", max_length=128,
                          allow_absolute_paths=True)
    assert nonzero(ds.skips.counts()) == {"unsafe_path": 2}  # `..` paths stay refused
    assert "abs" in {ds.record(i)["id"] for i in range(len(ds))}


def test_to_wds_copies_nothing_from_outside_and_skips_bombs(corpus, tmp_path):
    path, secret = corpus
    index = convert(input=str(path), out_dir=str(tmp_path / "wds"), shard_size=10, progress=False)
    assert index["skipped"] == {"unsafe_path": 3, "extreme_aspect": 1, "oversized_image": 1}
    assert index["num_samples"] == 2
    shard = (tmp_path / "wds" / index["shards"][0]["name"]).read_bytes()
    assert secret.read_bytes()[-300:-2] not in shard  # its scan data (the JPEG headers are alike)
    assert (tmp_path / "data" / "img" / "ok.jpg").read_bytes()[-300:-2] in shard


def test_pad_resizes_before_padding(proc, monkeypatch):
    """A 10000 x 50 image: the canvas LLaVA's expand2square builds stays at most 2 S per side."""
    sides = []
    real = image_module.expand_to_square
    monkeypatch.setattr(image_module, "expand_to_square", lambda img, fill: sides.append(img.size) or real(img, fill))
    out = image_module.process_image(Image.new("RGB", (10000, 50), (255, 0, 0)), proc, "pad")
    assert out.shape == (3, 28, 28)
    assert sides == [(56, 1)]  # 2 x 28 = 56 before the square canvas (it was 10000 x 10000)
    small = Image.new("RGB", (40, 20), (0, 255, 0))  # within 2 S: LLaVA's exact path, canvas 40 x 40
    image_module.process_image(small, proc, "pad")
    assert sides[-1] == (40, 20)


def test_too_long_counts_the_visual_tokens(train_config, tmp_path):
    """model_max_length 80, q = 16: a text of ~87 tokens fits data.max_length=128 but not the model (65 + 15)."""
    from deco.train import train

    root = tmp_path / "d"
    (root / "img").mkdir(parents=True)
    make_sample(0, 0, image_size=48)[0].image.save(root / "img" / "0.jpg")
    short = {"conversations": _qa(), "image": "img/0.jpg"}
    long_answer = [_qa()[0], {"from": "gpt", "value": " ".join(["circle"] * 40)}]
    records = [{"id": "long", "image": "img/0.jpg", "conversations": long_answer}]
    records += [{"id": f"s{i}", **short} for i in range(6)]  # the last 2: validation
    (root / "data.json").write_text(json.dumps(records))
    cfg = train_config("data=llava_json", f"data.json_path={root / 'data.json'}", "data.val_size=2",
                       "data.train.num_samples=null", "data.max_length=128", "query_num=16",
                       "model=tiny_scratch", "model.tokenizer.model_max_length=80", "model.vision.config.image_size=56",
                       "model.image_processor.image_size=56", "trainer.max_steps=1")
    train(cfg)
    report = json.loads((tmp_path / "data_skips.json").read_text())
    assert nonzero(report["train"]) == {"too_long": 1}
