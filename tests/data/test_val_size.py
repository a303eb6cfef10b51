"""data.val_size for LLaVA JSON: a count, a fraction or auto, so small datasets split instead of failing."""

from __future__ import annotations

import pytest
from conftest import compose_config, write_llava_corpus

from deco.data.llava_json import LlavaJsonDataset, resolve_val_size


def test_resolve_val_size_by_hand():
    assert resolve_val_size("auto", 8) == 1 and resolve_val_size("auto", 5000) == 50
    assert resolve_val_size("auto", 665_298) == 1000 and resolve_val_size("auto", 1) == 0
    assert resolve_val_size(0.25, 8) == 2 and resolve_val_size(0.1, 8) == 1  # ceil(0.8)
    assert resolve_val_size(3, 8) == 3
    for bad in (1.5, -1, "some", True):
        with pytest.raises(ValueError, match="val_size"):
            resolve_val_size(bad, 8)


def test_default_config_splits_a_tiny_corpus(tmp_path, tok, proc):
    write_llava_corpus(tmp_path)  # 8 records
    cfg = compose_config("train", ["data=llava_json", f"data.json_path={tmp_path / 'data.json'}"], tmp_path)
    assert cfg.data.val_size == "auto"
    kw = dict(tokenizer=tok, image_processor=proc, max_length=256)
    train = LlavaJsonDataset(str(tmp_path / "data.json"), split="train", val_size=cfg.data.val_size, **kw)
    val = LlavaJsonDataset(str(tmp_path / "data.json"), split="val", val_size=cfg.data.val_size, **kw)
    assert (len(train), len(val)) == (7, 1)
