"""The memory planner: fake-tensor profile = the real forward's saved tensors, the strategy rules by hand,
the checkpointing rule, the CLI and deco.train's warning; LLaVA-1.5-7B against the published facts (slow)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
import yaml
from conftest import CONFIG_DIR, compose_config
from torch._subclasses.fake_tensor import FakeTensorMode

from deco.data.tokenizer import load_tokenizer
from deco.models.build import build_mllm
from deco.models.stages import apply_stage
from deco.planning.activations import ActivationProfile, profile_training_forward
from deco.planning.arch import meta_mllm, to_fake
from deco.planning.memory import GIB, parse_bytes, plan_memory
from deco.planning.run import plan_config, warn_if_unfit

MODEL = yaml.safe_load(open(f"{CONFIG_DIR}/model/tiny_scratch.yaml"))
PROJECTOR = {"name": "avgpool", "query_num": 16, "mlp_depth": 2}
FINETUNE = {"name": "finetune", "train_llm": True, "train_vision": False, "lora": {"enabled": False}, "lr": 1e-4}


def test_parse_bytes():
    assert parse_bytes("80GB") == parse_bytes("80 GiB") == 80 * GIB
    assert parse_bytes("24000MiB") == 24000 * 2**20 and parse_bytes(123) == 123
    with pytest.raises(ValueError, match="plan.gpu_memory='eighty'"):
        parse_bytes("eighty")


@pytest.mark.parametrize("stage", [FINETUNE, {**FINETUNE, "train_llm": False},
                                   {**FINETUNE, "train_vision": True}])
def test_fake_profile_equals_the_real_forwards_saved_tensors(stage):
    """The fake-tensor forward books exactly the bytes a real CPU forward saves for backward."""
    tok = load_tokenizer(**MODEL["tokenizer"])
    torch.manual_seed(0)
    real = build_mllm({k: MODEL[k] for k in ("vision", "llm")}, dict(PROJECTOR), tok)
    apply_stage(real, stage)
    measured = profile_training_forward(real, 2, 80, autocast_dtype=None, fake_mode=contextlib.nullcontext())
    mode = FakeTensorMode()
    fake = meta_mllm(MODEL, PROJECTOR)
    apply_stage(fake, stage)
    to_fake(fake, mode)
    planned = profile_training_forward(fake, 2, 80, autocast_dtype=None, fake_mode=mode)
    assert sum(p.numel() for p in fake.parameters()) == sum(p.numel() for p in real.parameters())
    assert planned == measured
    assert sum(planned.layer_saved) > 0 and planned.transient > 0
    if not stage["train_vision"]:  # a frozen tower runs without autograd: its 3 layers save nothing
        assert planned.layer_saved[:3] == [0, 0, 0]


def test_checkpointing_rule_by_hand():
    profile = ActivationProfile(outside=10, layer_inputs=[3, 3, 3, 5], layer_saved=[0, 40, 50, 30],
                                cached_casts=7, transient=6)
    assert profile.total(False) == 10 + 120 + 6
    # layers that save nothing keep no input: kept = 10 + 3 + 3 + 5 = 21; backward peak 21 + 50 + 6
    assert profile.total(True) == max(21 + 7, 21 + 50 + 6) == 77


def test_strategy_rules_by_hand():
    fake = meta_mllm(MODEL, PROJECTOR)
    apply_stage(fake, FINETUNE)
    total = sum(p.numel() for p in fake.parameters())
    trained = sum(p.numel() for p in fake.parameters() if p.requires_grad)
    acts = ActivationProfile(outside=100, layer_inputs=[1] * 5, layer_saved=[0, 0, 0, 20, 20], transient=4)
    single = plan_memory(fake, "single", 1, "32-true", acts, checkpointing=False)
    assert (single.parameters, single.gradients, single.optimizer, single.communication) == (
        4 * total, 4 * trained, 8 * trained, 0)
    assert single.activations == 144 and single.total == 4 * total + 12 * trained + 144
    ddp = plan_memory(fake, "ddp", 4, "bf16-mixed", acts, checkpointing=True)
    assert ddp.communication == 4 * trained and ddp.activations == 100 + 2 + 20 + 4
    fsdp = plan_memory(fake, "fsdp", 4, "bf16-mixed", acts, checkpointing=False)
    layers = [m for m in fake.modules() if type(m).__name__ in ("CLIPEncoderLayer", "LlamaDecoderLayer")]
    layer_sizes = [sum(p.numel() for p in m.parameters()) for m in layers]
    root = total - sum(layer_sizes)
    llm_layers = [s for m, s in zip(layers, layer_sizes) if type(m).__name__ == "LlamaDecoderLayer"]
    assert fsdp.parameters == 4 * total // 4 and fsdp.optimizer == 8 * trained // 4
    # gradients: every trained unit (LLM layers, and the root, which holds the projector) in full, sharded
    assert fsdp.gradients == 4 * (sum(llm_layers) + root) // 4
    assert fsdp.communication == 2 * root + 2 * 2 * max(layer_sizes) + 2 * max(llm_layers)


def tiny_cfg(tmp_path, *overrides):
    from omegaconf import OmegaConf

    cfg = compose_config("train", ["model=tiny_scratch", "query_num=16", "data.batch_size=4", *overrides], tmp_path)
    return OmegaConf.to_container(cfg, resolve=True)


def test_warning_when_the_plan_does_not_fit(tmp_path, caplog):
    cfg = tiny_cfg(tmp_path)
    with caplog.at_level(logging.WARNING, logger="deco.planning.run"):
        report = warn_if_unfit(cfg, world_size=1, gpu_memory=80 * GIB)
    assert report.fits("single") and not caplog.records
    with caplog.at_level(logging.WARNING, logger="deco.planning.run"):
        report = warn_if_unfit(cfg, world_size=1, gpu_memory=10 * 2**20)
    assert not report.fits("single")
    assert "memory plan: this run needs about" in caplog.text and "more than 90% of the GPU's 0.0 GiB" in caplog.text
    assert warn_if_unfit({**cfg, "plan": {**cfg["plan"], "check": False}}, world_size=1, gpu_memory=1) is None


def test_plan_cli_prints_every_strategy(tmp_path, capsys):
    from conftest import compose_config as compose

    from deco.plan import run

    report = run(compose("train", ["model=tiny_scratch", "query_num=16", "trainer=ddp_cpu", "plan.gpu_memory=1GB",
                                   "data.max_length=128"], tmp_path))
    out = capsys.readouterr().out
    assert set(report.plans) == {"ddp", "fsdp", "lora+ddp"} and report.composed == "ddp"
    for row in ("* DDP", "FSDP full shard (ZeRO-3)", "LoRA r128 (LLaVA's) + DDP", "0.9 GiB"):
        assert row in out
    assert report.setting["devices"] == 2 and report.setting["seq_len"] == 128 + 15  # data.max_length + q - 1


@pytest.mark.slow
def test_llava15_7b_finetune_plans_like_the_published_runs(tmp_path):
    """LLaVA-1.5-7B stage 2 trains with ZeRO-3 at batch 16 per 80 GB GPU (8 GPUs): FSDP full shard must fit,
    DDP (fp32 weights + grads + buckets + AdamW = 20 bytes per parameter) must not."""
    from omegaconf import OmegaConf

    preset = compose_config("train", ["experiment=llava15_finetune", "data.json_path=x", "init_from=x",
                                      "plan.devices=8"], tmp_path)
    cfg = OmegaConf.to_container(preset, resolve=True)
    report = plan_config(cfg)
    assert report.setting["seq_len"] == 2048 and report.setting["batch_size"] == 16
    assert report.fits("fsdp") and not report.fits("ddp") and report.fits("lora+ddp")
    ddp = report.plans["ddp"]
    params = 7.06e9
    assert ddp.parameters == pytest.approx(4 * params, rel=0.01)  # fp32 weights of tower + LLM + projector
    assert ddp.states / params == pytest.approx(4 + 16 * 6.76 / 7.06, rel=0.02)
