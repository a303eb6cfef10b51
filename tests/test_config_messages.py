"""Small messages that name the problem: an unreachable hub name, a missing JSON file, a truncated safetensors."""

from __future__ import annotations

import pytest
import torch

from deco.train import train


def test_hub_name_that_cannot_be_reached_names_the_key_at_once(train_config, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # nothing cached
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    with pytest.raises(SystemExit, match=r"Config error: model.llm.name_or_path=nobody/no-such-llm: not a local "
                                         r"directory, not in the Hugging Face cache, and the hub cannot be reached"):
        train(train_config("model.llm.name_or_path=nobody/no-such-llm"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="model.tokenizer.name_or_path=nobody/tok: not a local directory"):
        train(train_config("model.tokenizer.name_or_path=nobody/tok"))


def test_missing_json_is_named_not_the_image_root(tok, proc):
    from deco.data.llava_json import LlavaJsonDataset

    with pytest.raises(FileNotFoundError, match="data.json_path: LLaVA JSON file not found: '/nonexistent/x.json'"):
        LlavaJsonDataset("/nonexistent/x.json", tokenizer=tok, image_processor=proc)


def test_truncated_safetensors_is_named(tmp_path):
    from safetensors.torch import save_file

    from deco.models.formats.common import load_state_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(256)}, str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{path}: not a readable safetensors file, truncated or corrupt"):
        load_state_file(path)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(256)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(ValueError, match=f"{ckpt}: not a readable checkpoint, truncated or corrupt"):
        load_state_file(ckpt)
