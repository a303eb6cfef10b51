"""Training-stack options: gradient checkpointing (same loss and gradients, any stage; skipped where FSDP
checkpoints itself) and flash_attention_2 (a clear error without the flash-attn package)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import CONFIG_DIR

from deco.data.tokenizer import load_tokenizer
from deco.lit.memory import setup_gradient_checkpointing
from deco.models.attention import check_implementation, set_attention
from deco.models.build import build_mllm
from deco.models.recompute import enable_gradient_checkpointing, gradient_checkpointing_enabled
from deco.models.stages import apply_stage
from deco.utils.config import ConfigError, validate_train_config

MODEL = yaml.safe_load(open(f"{CONFIG_DIR}/model/tiny_scratch.yaml"))


def loss_and_grads(model, checkpointing: bool):
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    ids = torch.tensor([[1, 4, 10, 11, 12, 13, 2, 14, 15], [1, 4, 20, 21, 22, 23, 24, 2, 3]])
    out = model(input_ids=ids, attention_mask=(ids != 3).long(), pixel_values=torch.randn(2, 3, 336, 336), labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stage", [{"train_llm": True, "train_vision": True},
                                   {"train_llm": False, "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}},
                                   {"train_llm": False}])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(stage):
    tok = load_tokenizer(**MODEL["tokenizer"])
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_mllm({k: MODEL[k] for k in ("vision", "llm")}, {"name": "avgpool", "query_num": 16}, tok)
        apply_stage(model, stage)
        results.append(loss_and_grads(model, checkpointing))
        assert all(gradient_checkpointing_enabled(model).values()) is checkpointing
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    assert torch.equal(loss, loss_ckpt) and grads.keys() == grads_ckpt.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7)


def test_fsdp_strategy_checkpointing_is_not_doubled():
    tok = load_tokenizer(**MODEL["tokenizer"])
    model = build_mllm({k: MODEL[k] for k in ("vision", "llm")}, {"name": "avgpool", "query_num": 16}, tok)
    fsdp = SimpleNamespace(strategy=SimpleNamespace(_activation_checkpointing_kwargs={"policy": "layers"}))
    assert setup_gradient_checkpointing(model, fsdp, enabled=True) is False
    assert not any(gradient_checkpointing_enabled(model).values())
    ddp = SimpleNamespace(strategy=SimpleNamespace())
    assert setup_gradient_checkpointing(model, ddp, enabled=False) is False
    assert setup_gradient_checkpointing(model, ddp, enabled=True) is True
    assert all(gradient_checkpointing_enabled(model).values())


def test_flash_attention_2_needs_the_package(monkeypatch, train_config):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(ValueError, match="model.llm.attn_implementation=flash_attention_2 needs the flash-attn "
                                         "package.*pip install flash-attn"):
        check_implementation("flash_attention_2", "model.llm.attn_implementation")
    with pytest.raises(ConfigError, match="model.vision.attn_implementation=flash_attention_2 needs"):
        validate_train_config(train_config("model.vision.attn_implementation=flash_attention_2"))
    with pytest.raises(ValueError, match="attn_implementation='flash' is unknown; allowed: eager, sdpa, flash_att"):
        set_attention(torch.nn.Module(), "flash")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    check_implementation("flash_attention_2")  # importable: accepted (transformers loads the kernels)
