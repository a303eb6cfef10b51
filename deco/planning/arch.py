"""The composed MLLM built from its config with fake tensors: shapes and dtypes, no memory, no download.

A part's architecture comes from, in order: its `config` section (the tiny models), the `config.json` of
a local directory (zoo or a downloaded checkpoint), the architectures below (LLaVA-1.5's published
parts, so `model=llava15_7b` plans offline), or the Hugging Face cache. Nothing is read from the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import AutoConfig, AutoModelForCausalLM

from deco.models.build import LLM_KEYS, VISION_KEYS, to_plain
from deco.models.llm import DTYPES
from deco.models.mllm import MLLM
from deco.models.projectors import build_projector
from deco.models.vision import VisionTower
from deco.zoo import resolve

# config.json of LLaVA-1.5's parts (CLIP ViT-L/14-336 vision_config; Vicuna-v1.5 = Llama-2 7B / 13B).
KNOWN = {
    "openai/clip-vit-large-patch14-336": {
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "projection_dim": 768, "hidden_act": "quick_gelu"},
    "lmsys/vicuna-7b-v1.5": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "lmsys/vicuna-13b-v1.5": {
        "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
        "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
}
# Tokens deco's tokenizer adds to a hub tokenizer that lacks them (deco.data.tokenizer.load_tokenizer): <image>.
ADDED_TOKENS = 1


def part_config(key: str, section: Mapping) -> dict[str, Any]:
    """The architecture (config.json-style dict) of model.vision or model.llm, from local information only."""
    if section.get("config"):
        return dict(section["config"])
    name = section.get("name_or_path")
    if name is None:
        raise ValueError(f"{key}: needs name_or_path or config to be planned")
    path = os.path.expanduser(str(resolve(name)))
    if os.path.isfile(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        return dict(config.get("vision_config", config)) if key == "model.vision" else config
    if str(name) in KNOWN:
        return dict(KNOWN[str(name)])
    try:
        config = AutoConfig.from_pretrained(str(name), local_files_only=True).to_dict()
    except OSError:
        raise ValueError(f"{key}.name_or_path={name}: no config.json there, not a known architecture "
                         f"({', '.join(KNOWN)}) and not in the Hugging Face cache; give {key}.config "
                         "(the config.json fields) to plan it") from None
    return dict(config.get("vision_config", config)) if key == "model.vision" else config


def _vocab(model_cfg: Mapping, llm_config: Mapping) -> int:
    """len(tokenizer) deco would build: the local tokenizer when there is one, else the LLM's + <image>."""
    tok = model_cfg.get("tokenizer") or {}
    name = tok.get("name_or_path")
    path = os.path.expanduser(str(resolve(name))) if name else None
    if name is None or (path and os.path.isdir(path)):
        from deco.data.tokenizer import load_tokenizer

        return len(load_tokenizer(**tok))
    return int(llm_config.get("vocab_size", 32000)) + ADDED_TOKENS


def meta_mllm(model_cfg: Mapping, projector_cfg: Mapping) -> MLLM:
    """The MLLM of `model_cfg` / `projector_cfg` on the meta device (shapes and dtypes, no memory)."""
    model_cfg, projector_cfg = to_plain(model_cfg), to_plain(projector_cfg)
    vision_section = {k: v for k, v in (model_cfg.get("vision") or {}).items() if k in VISION_KEYS}
    llm_section = {k: v for k, v in (model_cfg.get("llm") or {}).items() if k in LLM_KEYS}
    vision_config = {k: v for k, v in part_config("model.vision", vision_section).items()
                     if k not in ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype")}
    llm_config = {"model_type": "llama", **part_config("model.llm", llm_section)}  # a config section: Llama (build_llm)
    vocab = _vocab(model_cfg, llm_config)
    attn = llm_section.get("attn_implementation") or "sdpa"
    with torch.device("meta"):
        vision = VisionTower(config=vision_config, select_layer=vision_section.get("select_layer", -2),
                             select_feature=vision_section.get("select_feature", "patch"),
                             attn_implementation=vision_section.get("attn_implementation") or "sdpa")
        config = AutoConfig.for_model(**{**llm_config, "vocab_size": max(vocab, int(llm_config.get("vocab_size", 0)))})
        llm = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
        dtype = llm_section.get("torch_dtype")
        if dtype not in (None, "auto"):
            llm = llm.to(DTYPES[dtype])
        name = projector_cfg.pop("name")
        projector = build_projector(name, in_dim=vision.hidden_size, out_dim=config.hidden_size,
                                    num_patches=vision.num_patches, **projector_cfg)
        return MLLM(vision, projector, llm, image_token_id=vocab - 1)  # <image>: an added token, any id will do


def to_fake(model: nn.Module, mode: FakeTensorMode, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace `model`'s meta parameters and buffers, in place, by fake CPU tensors (so CPU autocast applies
    to its forward) of the same shape, in `dtype` when given (floating ones only); tied weights stay tied."""
    done: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in done:
            target = dtype if dtype is not None and t.is_floating_point() else t.dtype
            with mode:
                new = torch.empty(t.shape, dtype=target, device="cpu")
            done[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        return done[id(t)]

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = fake(param)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = fake(buffer)
    return model


def checkpoint_layer_classes() -> tuple[type, ...]:
    """The layers that gradient checkpointing (transformers' or FSDP's policy) recomputes one at a time."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return (GradientCheckpointingLayer,)

