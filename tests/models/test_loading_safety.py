"""Loading refuses what it must: pickled payloads in any weight file, unknown formats, hub names offline,
LLaVA options deco does not implement. Checkpoints come from tests/models/conftest.py."""

from __future__ import annotations

import json

import pytest
import torch
from test_loading_fixtures import (  # noqa: F401 (the *_fixture names: pytest fixtures, used by name)
    LLM,
    VISION,
    avgpool_fixture,
    base_dir_fixture,
    clip_dir_fixture,
    hf_dir_fixture,
    mlp,
    root_fixture,
    write_llava_lora,
    write_llava_original,
)

from deco.models.loading import detect_format, load_model


# ---------------------------------------------------------------- safety, detection, errors


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def _craft(path, target):
    torch.save({"model.mm_projector.0.weight": torch.zeros(1), "evil": _Payload(target)}, path)


def test_crafted_pickle_payload_is_real(tmp_path):
    """Sanity check of the payload itself: an unsafe load runs it (so the refusals below mean something)."""
    target = tmp_path / "proof.txt"
    _craft(tmp_path / "evil.bin", target)
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert target.read_text() == "pwned"


@pytest.mark.parametrize("where", ["non_lora_trainables.bin", "pytorch_model.bin", "last.ckpt"])
def test_crafted_pickle_is_refused(root, clip_dir, base_dir, avgpool, tmp_path, where):
    target = tmp_path / "pwned.txt"
    if where == "non_lora_trainables.bin":
        ckpt = tmp_path / "lora"
        ckpt.mkdir()
        write_llava_lora(ckpt, base_dir, clip_dir, {}, "avgpool2_4")
        _craft(ckpt / where, target)
    elif where == "pytorch_model.bin":
        ckpt = tmp_path / "orig"
        write_llava_original(ckpt, clip_dir, mlp(VISION["hidden_size"], LLM["hidden_size"]), "mlp2x_gelu")
        _craft(ckpt / where, target)
    else:
        ckpt = tmp_path / where
        _craft(ckpt, target)
    with pytest.raises(ValueError, match="refusing to load .*needs arbitrary code"):
        load_model(ckpt)
    assert not target.exists()


def test_detect_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json and no adapter_config.json"):
        detect_format(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        detect_format(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="single file must be a deco Lightning checkpoint"):
        detect_format(tmp_path / "weights.bin")


def test_hub_name_without_network_says_so(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="could not be fetched from the Hugging Face hub"):
        load_model("liuhaotian/llava-v1.5-7b")


def test_hub_name_is_fetched_then_detected(monkeypatch, hf_dir):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return str(hf_dir)  # what a cached download returns: a local snapshot directory

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    loaded = load_model("llava-hf/llava-1.5-7b-hf")
    assert loaded.format == "llava_hf" and calls[0][0] == "llava-hf/llava-1.5-7b-hf"
    assert "*.safetensors" in calls[0][1] and "*.bin" not in calls[0][1]  # safetensors, no duplicate pickles


def test_unsupported_llava_options_fail_clearly(root, clip_dir, tmp_path):
    projector = mlp(VISION["hidden_size"], LLM["hidden_size"])
    write_llava_original(tmp_path, clip_dir, projector, "mlp2x_gelu")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["mm_patch_merge_type"] = "spatial_unpad"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mm_patch_merge_type='spatial_unpad'"):
        load_model(tmp_path)
